"""The DRM server's web services on twisted.web: a thin adapter over :class:`DrmCore`.

:func:`make_router` wires the routes of :mod:`imsp2pd.drm.server` onto an
:class:`imsp2pd.web.Router`; every body check and token check runs on the
reactor thread, every read and write as one store transaction.
:func:`make_service` serves the router over HTTPS (the lab certificate from
:mod:`imsp2pd.tlslab`). Nothing here logs a body, a query or a header, so no
key or token reaches a log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.failure import Failure

from imsp2pd.drm.server import DrmCore, DrmError
from imsp2pd.metrics import Registry
from imsp2pd.store.interface import Store, Txn
from imsp2pd.web import HttpError, Response, Router, WebRequest, json_response, make_site

__all__ = ["make_router", "make_service"]

MAX_BODY = 64 * 1024


def _http(exc: DrmError) -> HttpError:
    return HttpError(exc.status, exc.code, exc.message)


def _map_failure(failure: Failure) -> Any:
    if failure.check(DrmError):
        raise _http(failure.value)  # type: ignore[arg-type]
    return failure


def make_router(
    core: DrmCore,
    store: Store,
    reactor: Any,
    service_token: str,
    metrics: Registry | None = None,
    admin: Router | None = None,
) -> Router:
    """The DRM routes; ``service_token`` guards the AS/operator routes.

    With ``admin`` (the control port's router, behind the admin token) the
    operator also gets ``GET /admin/drm/content/{doi}``, ``POST`` and ``GET
    /admin/drm/revocations`` there.
    """

    # The site's access log (imsp2pd.web.make_site) already records every request
    # with its query redacted; nothing here logs bodies, which carry tokens.
    router = Router(token=service_token, max_body=MAX_BODY)
    issued = refused = None
    if metrics is not None:
        issued = metrics.counter("drm_licenses_issued_total", "Licenses issued")
        refused = metrics.counter(
            "drm_requests_refused_total", "DRM requests refused", labels=("code",)
        )

    def now() -> float:
        return float(reactor.seconds())

    def run(fn: Callable[[Txn], Any]) -> Deferred[Any]:
        d = store.transact(fn)
        d.addErrback(_map_failure)
        return d

    def guarded(handler: Callable[[WebRequest], Any]) -> Callable[[WebRequest], Any]:
        """Turn a DrmError raised before the transaction into its HTTP answer."""

        def wrapper(req: WebRequest) -> Any:
            try:
                result = handler(req)
            except DrmError as exc:
                if refused is not None:
                    refused.inc(code=exc.code)
                raise _http(exc) from None
            if isinstance(result, Deferred) and refused is not None:

                def count(failure: Failure) -> Failure:
                    if failure.check(HttpError):
                        refused.inc(code=failure.value.code)  # type: ignore[union-attr]
                    return failure

                result.addErrback(count)
            return result

        return wrapper

    def body(req: WebRequest) -> dict[str, Any]:
        try:
            return req.json_object()
        except RecursionError:  # json.loads on "[[[[…": a client's fault, not ours
            raise HttpError(400, "bad_json", "body is nested too deeply") from None

    def register(req: WebRequest) -> Deferred[Response]:
        t = now()
        reg = core.parse_registration(body(req), t)
        d = run(lambda txn: core.register(txn, reg, t))
        return d.addCallback(lambda answer: json_response(answer, 201))

    def content(req: WebRequest) -> Deferred[Any]:
        doi = req.params["doi"]
        return run(lambda txn: core.content_info(txn, doi))

    def infohash(req: WebRequest) -> Deferred[Any]:
        # The router's inner segments take no slash, and DOIs have one: the
        # route is /content/{rest}, and rest must end with /infohash.
        doi, slash, leaf = req.params["rest"].rpartition("/")
        if not slash or leaf != "infohash" or not doi:
            raise HttpError(404, "not_found", f"no such resource: {req.path}")
        value = core.parse_infohash(body(req))
        return run(lambda txn: core.bind_infohash(txn, doi, value))

    def rights(req: WebRequest) -> Deferred[Any]:
        parsed = core.parse_rights(body(req))
        t = now()
        return run(lambda txn: core.authorise(txn, parsed, t))

    def license_(req: WebRequest) -> Deferred[Any]:
        t = now()
        prepared = core.prepare_license(body(req), t)
        d = run(lambda txn: core.issue(txn, prepared, t))
        if issued is not None:
            counter = issued

            def count(answer: Any) -> Any:
                counter.inc()
                return answer

            d.addCallback(count)
        return d

    def revoke(req: WebRequest) -> Deferred[Any]:
        entry = core.parse_revocation(body(req), now())
        return run(lambda txn: core.revoke(txn, entry))

    def revocations(req: WebRequest) -> Deferred[Any]:
        since = core.parse_since(req.arg("since"))
        t = now()
        return run(lambda txn: core.revocations_since(txn, since, t))

    def key(req: WebRequest) -> dict[str, str]:
        return {"ed25519": core.public_key_b64}

    # A last "{name}" segment takes slashes (DOIs have them).
    router.route("PUT", "/content/{rest}", guarded(infohash), auth=True)
    router.route("POST", "/content", guarded(register))
    router.route("GET", "/content/{doi}", guarded(content), auth=True)
    router.route("POST", "/rights", guarded(rights), auth=True)
    router.route("POST", "/license", guarded(license_))
    router.route("POST", "/revocations", guarded(revoke), auth=True)
    router.route("GET", "/revocations", guarded(revocations), auth=True)
    router.route("GET", "/key", guarded(key))
    if admin is not None:
        admin.route("GET", "/admin/drm/content/{doi}", guarded(content), auth=True)
        admin.route("POST", "/admin/drm/revocations", guarded(revoke), auth=True)
        admin.route("GET", "/admin/drm/revocations", guarded(revocations), auth=True)
    return router


class HttpsService(Service):
    """Serves a site over TLS on ``interface:port``; ``port`` is the listening port.

    Listening happens in :meth:`startService`, so a port in use fails the
    start at once (``CannotListenError``).
    """

    def __init__(
        self, reactor: Any, port: int, interface: str, tls_options: Any, site: Any
    ) -> None:
        self._reactor = reactor
        self._portnum = port
        self._interface = interface
        self._tls = tls_options
        self.site = site
        self.port: Any = None

    def startService(self) -> None:
        self.port = self._reactor.listenSSL(
            self._portnum, self.site, self._tls, interface=self._interface
        )
        super().startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self.port = self.port, None
        return maybeDeferred(port.stopListening) if port is not None else succeed(None)


def make_service(
    router: Router, reactor: Any, port: int, interface: str, tls_options: Any
) -> HttpsService:
    """An HTTPS service for ``router`` on ``interface:port``."""
    return HttpsService(reactor, port, interface, tls_options, make_site(router, reactor=reactor))
