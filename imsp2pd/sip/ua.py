"""UAC and UAS helpers on a :class:`SipNode` (Twisted: answers come back
as Deferreds).

:func:`build_request` makes a new out-of-dialog request;
:class:`UserAgent` is a transaction user that answers incoming requests
with per-method handlers and sends requests, retrying once with digest
credentials on 401/407 (:meth:`UserAgent.request`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred

from imsp2pd.sip.digest import answer_challenge
from imsp2pd.sip.errors import SipError
from imsp2pd.sip.headers import parse_auth
from imsp2pd.sip.message import Request, Response, make_response, new_call_id, new_tag
from imsp2pd.sip.proxy import (
    IncomingAck,
    IncomingRequest,
    Output,
    SipCore,
    Source,
    Target,
    UacFailed,
    UacResponse,
)
from imsp2pd.sip.uri import URI, parse_uri


class SipRequestFailed(SipError):
    """A request got no final response: timeout or transport error."""


def build_request(
    method: str,
    uri: URI | str,
    *,
    from_uri: str,
    to_uri: str | None = None,
    call_id: str | None = None,
    cseq: int = 1,
    from_tag: str | None = None,
    contact: str | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
    host: str = "127.0.0.1",
) -> Request:
    """A new request (no Via: the core adds it when sending)."""
    ruri = parse_uri(uri) if isinstance(uri, str) else uri
    headers: list[tuple[str, str]] = [
        ("From", f"<{from_uri}>;tag={from_tag or new_tag()}"),
        ("To", f"<{to_uri or (from_uri if method == 'REGISTER' else ruri)}>"),
        ("Call-ID", call_id or new_call_id(host)),
        ("CSeq", f"{cseq} {method}"),
        ("Max-Forwards", "70"),
    ]
    if contact:
        headers.append(("Contact", contact))
    headers.extend(extra)
    if content_type:
        headers.append(("Content-Type", content_type))
    return Request(tuple(headers), body, method=method, uri=ruri)


Handler = Callable[[Request, Source], Any]


@dataclass
class _Pending:
    deferred: Deferred[Response]
    request: Request
    target: Target | None
    credentials: tuple[str, str | bytes] | None
    retried: bool = False


class UserAgent:
    """A UA transaction user.  Set ``node`` (the :class:`SipNode`) after
    building it; register handlers with :meth:`on`."""

    def __init__(self, core: SipCore) -> None:
        self.core = core
        self.node: Any = None
        self.handlers: dict[str, Handler] = {}
        self._pending: dict[int, _Pending] = {}
        self.acks: list[Request] = []

    def on(self, method: str, handler: Handler) -> None:
        """``handler(request, source)`` returns a Response, an int status,
        or a Deferred of either."""
        self.handlers[method] = handler

    # -- TU ---------------------------------------------------------------
    def on_event(self, event: Output, now: float) -> list[Output]:
        if isinstance(event, IncomingRequest):
            return self._incoming(event, now)
        if isinstance(event, IncomingAck):
            self.acks.append(event.request)
            return []
        if isinstance(event, UacResponse):
            return self._uac_response(event, now)
        if isinstance(event, UacFailed):
            pending = self._pending.pop(event.handle, None)
            if pending is not None:
                pending.deferred.errback(SipRequestFailed(event.reason))
        return []

    def _incoming(self, event: IncomingRequest, now: float) -> list[Output]:
        handler = self.handlers.get(event.request.method)
        if handler is None:
            allow = ", ".join(sorted(self.handlers))
            return self.core.reply(event.ctx, 405, now, extra=(("Allow", allow),))
        d = maybeDeferred(handler, event.request, event.source)

        def answer(result: Any) -> None:
            if isinstance(result, int):
                result = make_response(event.request, result, to_tag=new_tag())
            self.node.submit(self.core.respond(event.ctx, result, self.node.reactor.seconds()))

        def failed(failure: Any) -> None:
            self.node.submit(self.core.reply(event.ctx, 500, self.node.reactor.seconds()))

        d.addCallbacks(answer, failed)
        return []

    def _uac_response(self, event: UacResponse, now: float) -> list[Output]:
        resp = event.response
        if resp.status < 200:
            return []
        pending = self._pending.pop(event.handle, None)
        if pending is None:
            return []
        if resp.status in (401, 407) and pending.credentials and not pending.retried:
            retry = self._authorized(pending, resp)
            if retry is not None:
                handle, outs = self.core.send_request(retry, now, target=pending.target)
                pending.request = retry
                pending.retried = True
                self._pending[handle] = pending
                return outs
        pending.deferred.callback(resp)
        return []

    def _authorized(self, pending: _Pending, resp: Response) -> Request | None:
        assert pending.credentials is not None
        name = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
        value = resp.get(name)
        if value is None:
            return None
        try:
            chal = parse_auth(value)
        except SipError:
            return None
        username, password = pending.credentials
        req = pending.request.remove_header("Via")
        uri = str(req.uri)
        auth = answer_challenge(
            chal, method=req.method, uri=uri, username=username, password=password
        )
        answer = "Authorization" if resp.status == 401 else "Proxy-Authorization"
        cseq = req.cseq
        return req.replace_header(answer, str(auth)).replace_header(
            "CSeq", f"{cseq.seq + 1} {cseq.method}"
        )

    # -- UAC --------------------------------------------------------------
    def request(
        self,
        request: Request,
        *,
        target: Target | None = None,
        credentials: tuple[str, str | bytes] | None = None,
    ) -> Deferred[Response]:
        """Send ``request``; fires with the final response, or fails with
        :class:`SipRequestFailed`."""
        d: Deferred[Response] = Deferred()
        handle, outs = self.core.send_request(request, self.node.reactor.seconds(), target=target)
        self._pending[handle] = _Pending(d, request, target, credentials)
        self.node.submit(outs)
        return d
