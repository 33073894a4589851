"""The tracker over HTTP (Twisted adapter of :mod:`imsp2pd.bittorrent.tracker`).

* :class:`TrackerResource` answers ``GET /announce`` and ``GET /scrape``
  (bencoded, ``text/plain``, always HTTP 200 as BEP 3 clients expect, a
  ``failure reason`` for every refusal). Serve it with
  :func:`imsp2pd.web.make_site`, whose access log redacts the query (the
  token travels there).
* :class:`SwarmRegistry` keeps swarm registrations durable in the store
  (collection ``tracker_swarms``, one document per info-hash: ``doi``,
  ``state``) *before* the tracker core changes, and loads them at start.
* :func:`add_admin_routes` adds the operator API to the control port router:
  ``GET /admin/swarms[?infohash=HEX]`` (statistics), ``GET
  /admin/swarms/{infohash}``, ``POST /admin/swarms`` ``{"info_hash", "doi",
  "state"?}`` (register; ``muted`` unless told), ``POST
  /admin/swarms/{infohash}/mute|unmute|disable``.
* :class:`RevocationPoller` refreshes a :class:`RevocationSet` from a source
  (:class:`StoreRevocationSource`: the DRM collection of the shared store;
  :class:`HttpRevocationSource`: ``GET /revocations?since=T`` on the DRM
  server) and then drops revoked peers.
* :class:`TrackerService` ties them together: loads the swarms, listens,
  expires peers and polls revocations with the injected reactor's clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from imsp2pd.bittorrent.revocations import RevocationSet
from imsp2pd.bittorrent.tracker import (
    FailureCode,
    SwarmState,
    Tracker,
    TrackerFailure,
    failure_body,
    parse_announce,
    parse_scrape,
)
from imsp2pd.metrics import Registry
from imsp2pd.store import Collection, Migration, Store, StoreError
from imsp2pd.web import HttpError, Router, WebRequest, make_site

__all__ = [
    "MIGRATIONS",
    "SWARMS",
    "HttpRevocationSource",
    "RevocationPoller",
    "StoreRevocationSource",
    "SwarmRegistry",
    "TrackerMetrics",
    "TrackerResource",
    "TrackerService",
    "add_admin_routes",
]

log = Logger()

SWARMS = "tracker_swarms"
MIGRATIONS = (Migration("tracker-0001-swarms", (Collection(SWARMS, ("state",)),)),)
_HEX40 = re.compile(r"[0-9a-fA-F]{40}")


class TrackerMetrics:
    """The tracker's Prometheus metrics in a process registry."""

    def __init__(self, registry: Registry, tracker: Tracker) -> None:
        self.announces = registry.counter("imsp2p_tracker_announces_total", "announce requests")
        self.scrapes = registry.counter("imsp2p_tracker_scrapes_total", "scrape requests")
        self.failures = registry.counter(
            "imsp2p_tracker_failures_total", "announces and scrapes refused", ("reason",)
        )
        registry.gauge("imsp2p_tracker_peers", "peers in all swarms", fn=lambda: tracker.peer_count)
        registry.gauge("imsp2p_tracker_swarms", "registered swarms", fn=lambda: tracker.swarm_count)

        def per_swarm(field: str) -> Callable[[], dict[tuple[str, ...], float]]:
            def sample() -> dict[tuple[str, ...], float]:
                return {
                    (s.info_hash, str(s.state)): float(getattr(s, field)) for s in tracker.stats()
                }

            return sample

        labels = ("info_hash", "state")
        for field, text in (
            ("seeders", "seeders in the swarm"),
            ("leechers", "leechers in the swarm"),
            ("completed", "completed downloads reported"),
            ("uploaded", "bytes uploaded, as reported by the peers"),
            ("downloaded", "bytes downloaded, as reported by the peers"),
        ):
            registry.gauge(f"imsp2p_tracker_swarm_{field}", text, labels, fn=per_swarm(field))

    def failure(self, code: FailureCode) -> None:
        self.failures.inc(reason=code.name.lower())


class TrackerResource(Resource):
    """``/announce`` and ``/scrape`` (a leaf: any other path is 404)."""

    isLeaf = True

    def __init__(
        self, tracker: Tracker, clock: Callable[[], float], metrics: TrackerMetrics | None = None
    ) -> None:
        super().__init__()
        self.tracker = tracker
        self.clock = clock
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"cache-control", b"no-store")
        raw_query = request.uri.partition(b"?")[2]
        try:
            if request.path == b"/announce":
                return self._announce(request, raw_query)
            if request.path == b"/scrape":
                return self._scrape(raw_query)
        except Exception:
            log.failure("tracker: internal error on {path}", path=request.path.decode("latin-1"))
            return failure_body("internal tracker error, retry later", retry_in=60)
        request.setResponseCode(404)
        return failure_body("no such resource")

    def _announce(self, request: Request, raw_query: bytes) -> bytes:
        if self.metrics is not None:
            self.metrics.announces.inc()
        host = getattr(request.getClientAddress(), "host", "")
        try:
            req = parse_announce(raw_query, host)
        except TrackerFailure as exc:
            if self.metrics is not None:
                self.metrics.failure(exc.code)
            return failure_body(exc.message)
        return self.tracker.announce(req, self.clock())

    def _scrape(self, raw_query: bytes) -> bytes:
        if self.metrics is not None:
            self.metrics.scrapes.inc()
        try:
            req = parse_scrape(raw_query)
        except TrackerFailure as exc:
            if self.metrics is not None:
                self.metrics.failure(exc.code)
            return failure_body(exc.message)
        return self.tracker.scrape(req, self.clock())


# -- durable registrations -----------------------------------------------------


class SwarmRegistry:
    """Swarm registrations: the store first, then the tracker core."""

    def __init__(self, tracker: Tracker, store: Store, clock: Callable[[], float]) -> None:
        self.tracker = tracker
        self.store = store
        self.clock = clock

    def load(self) -> int:
        """Load every stored registration into the core (at start, inline)."""

        def read(txn: Any) -> list[tuple[str, dict[str, Any]]]:
            return list(txn.scan(SWARMS))

        count = 0
        for key, doc in self.store.transact_now(read):
            try:
                self.tracker.register(bytes.fromhex(key), doc.get("doi"), SwarmState(doc["state"]))
            except (ValueError, KeyError) as exc:
                log.warn("tracker: skipping stored swarm {key}: {error}", key=key, error=str(exc))
                continue
            count += 1
        return count

    def register(self, info_hash: bytes, doi: str | None, state: SwarmState) -> Deferred[None]:
        key = info_hash.hex()
        now = self.clock()

        def write(txn: Any) -> None:
            old = txn.get(SWARMS, key) or {}
            txn.put(
                SWARMS,
                key,
                {
                    "doi": doi,
                    "state": str(state),
                    "registered_at": old.get("registered_at", now),
                    "changed_at": now,
                },
            )

        d: Deferred[None] = self.store.transact(write)
        d.addCallback(lambda _: self.tracker.register(info_hash, doi, state))
        return d

    def set_state(self, info_hash: bytes, state: SwarmState) -> Deferred[None]:
        key = info_hash.hex()
        now = self.clock()

        def write(txn: Any) -> None:
            doc = txn.get(SWARMS, key)
            if doc is None:
                raise KeyError(key)
            doc["state"] = str(state)
            doc["changed_at"] = now
            txn.put(SWARMS, key, doc)

        d: Deferred[None] = self.store.transact(write)
        d.addCallback(lambda _: self.tracker.set_state(info_hash, state))
        return d


def _info_hash(text: Any) -> bytes:
    if not isinstance(text, str) or not _HEX40.fullmatch(text):
        raise HttpError(400, "bad_infohash", "info_hash must be 40 hex digits")
    return bytes.fromhex(text)


def add_admin_routes(router: Router, registry: SwarmRegistry) -> None:
    """The operator's swarm API under ``/admin/swarms`` (bearer token)."""
    tracker = registry.tracker

    def stats_of(info_hash: bytes) -> dict[str, Any]:
        found = tracker.stats(info_hash)
        if not found:
            raise HttpError(404, "unknown_swarm", f"no swarm {info_hash.hex()}")
        return found[0].as_json()

    def list_swarms(req: WebRequest) -> dict[str, Any]:
        wanted = req.arg("infohash")
        if wanted:
            return {"swarms": [stats_of(_info_hash(wanted))]}
        return {"swarms": [s.as_json() for s in tracker.stats()]}

    def one(req: WebRequest) -> dict[str, Any]:
        return stats_of(_info_hash(req.params["infohash"]))

    def register(req: WebRequest) -> Deferred[dict[str, Any]]:
        body = req.json_object()
        info_hash = _info_hash(body.get("info_hash"))
        doi = body.get("doi")
        if doi is not None and (not isinstance(doi, str) or not doi or len(doi) > 512):
            raise HttpError(400, "bad_doi", "doi must be a non-empty string")
        try:
            state = SwarmState(body.get("state", "muted"))
        except ValueError:
            raise HttpError(400, "bad_state", "state must be active, muted or disabled") from None
        if tracker.state(info_hash) is None and tracker.swarm_count >= tracker.config.max_swarms:
            raise HttpError(409, "too_many_swarms", "the tracker holds its maximum of swarms")
        d: Deferred[Any] = registry.register(info_hash, doi, state)
        d.addCallback(lambda _: stats_of(info_hash))
        return d

    actions = {
        "mute": SwarmState.MUTED,
        "unmute": SwarmState.ACTIVE,
        "disable": SwarmState.DISABLED,
    }

    def act(req: WebRequest) -> Deferred[dict[str, Any]]:
        info_hash = _info_hash(req.params["infohash"])
        action = req.params["action"]
        if action not in actions:
            raise HttpError(404, "not_found", f"no action {action!r} (mute, unmute, disable)")
        if tracker.state(info_hash) is None:
            raise HttpError(404, "unknown_swarm", f"no swarm {info_hash.hex()}")
        d: Deferred[Any] = registry.set_state(info_hash, actions[action])
        d.addCallback(lambda _: stats_of(info_hash))
        return d

    router.route("GET", "/admin/swarms", list_swarms, auth=True)
    router.route("POST", "/admin/swarms", register, auth=True)
    router.route("GET", "/admin/swarms/{infohash}", one, auth=True)
    router.route("POST", "/admin/swarms/{infohash}/{action}", act, auth=True)


# -- revocations ---------------------------------------------------------------


class RevocationSource(Protocol):
    def fetch(self, since: float) -> Deferred[tuple[list[dict[str, Any]], float]]:
        """Entries at or after *since*, and the ``since`` to ask with next time."""


class StoreRevocationSource:
    """The DRM server's collection in the shared store (one process).

    It reads the whole list each time (ignoring *since*): the list is small,
    the set skips what it knows, and an entry stored later with an earlier
    time is never missed.
    """

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    def fetch(self, since: float) -> Deferred[tuple[list[dict[str, Any]], float]]:
        from imsp2pd.drm import revocation

        now = self.clock()

        def read(txn: Any) -> tuple[list[dict[str, Any]], float]:
            return [e.to_json() for e in revocation.since(txn, 0.0)], now

        return self.store.transact(read)


class HttpRevocationSource:
    """``GET {url}/revocations?since=T`` with a bearer credential (across processes).

    *get* is ``treq.get``-like (``get(url, headers=…, timeout=…)`` returning
    a Deferred response with ``code`` and ``json()``); inject treq with a
    TLS-trusting agent, or a StubTreq in tests.
    """

    def __init__(self, url: str, token: str, get: Callable[..., Deferred[Any]]) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.get = get

    @inlineCallbacks
    def fetch(self, since: float) -> Any:
        response = yield self.get(
            f"{self.url}/revocations?since={since!r}",
            headers={b"Authorization": [f"Bearer {self.token}".encode()]},
            timeout=10,
        )
        body = yield response.content()
        if response.code != 200:
            raise RuntimeError(f"DRM server answered {response.code}")
        try:
            data = json.loads(body)
            entries = data["revocations"]
            server_time = float(data["server_time"])
        except (ValueError, KeyError, TypeError):
            raise RuntimeError("DRM server's revocation list is not the expected JSON") from None
        if not isinstance(entries, list):
            raise RuntimeError("DRM server's revocation list is not a list")
        return entries, server_time


class RevocationPoller:
    """Pulls new revocations into the set; drops revoked peers when any arrive."""

    def __init__(self, source: RevocationSource, revoked: RevocationSet, tracker: Tracker) -> None:
        self.source = source
        self.revoked = revoked
        self.tracker = tracker
        self.failures = 0
        self._busy = False

    def poll(self) -> Deferred[int]:
        """One pull; fires with the number of peers dropped (never fails)."""
        if self._busy:
            return succeed(0)
        self._busy = True
        d: Deferred[Any] = maybeDeferred(self.source.fetch, self.revoked.since)
        d.addCallback(self._got)
        d.addErrback(self._failed)
        d.addBoth(self._done)
        return d

    def _got(self, result: tuple[list[dict[str, Any]], float]) -> int:
        entries, next_since = result
        self.failures = 0
        added = self.revoked.apply(entries)
        self.revoked.since = max(self.revoked.since, next_since)
        return self.tracker.drop_revoked() if added else 0

    def _failed(self, failure: Any) -> int:
        self.failures += 1
        if failure.check(StoreError):
            msg = "tracker: no revocation list in the store (is the drm role's store shared?)"
        else:
            msg = "tracker: cannot pull revocations: {error}"
        if self.failures in (1, 10) or self.failures % 100 == 0:
            log.warn(msg, error=failure.getErrorMessage())
        return 0

    def _done(self, result: int) -> int:
        self._busy = False
        return result


# -- the service ---------------------------------------------------------------


class TrackerService(Service):
    """Loads swarms, listens for announces, expires peers, polls revocations."""

    def __init__(
        self,
        reactor: Any,
        registry: SwarmRegistry,
        resource: TrackerResource,
        port: int,
        interface: str,
        poller: RevocationPoller | None,
        poll_every: float,
        expire_every: float = 60.0,
    ) -> None:
        self.reactor = reactor
        self.registry = registry
        self.resource = resource
        self.port_number = port
        self.interface = interface
        self.poller = poller
        self.poll_every = poll_every
        self.expire_every = expire_every
        self.port: Any = None
        self._loops: list[LoopingCall] = []

    def startService(self) -> None:
        loaded = self.registry.load()
        site = make_site(self.resource, reactor=self.reactor)
        self.port = self.reactor.listenTCP(self.port_number, site, interface=self.interface)
        tracker = self.registry.tracker
        expire = LoopingCall(lambda: tracker.expire(self.reactor.seconds()))
        expire.clock = self.reactor
        expire.start(self.expire_every, now=False)
        self._loops.append(expire)
        if self.poller is not None:
            poll = LoopingCall(self.poller.poll)
            poll.clock = self.reactor
            poll.start(self.poll_every, now=True)
            self._loops.append(poll)
        host = self.port.getHost()
        log.info(
            "tracker: http://{host}:{port}/announce, {n} swarms",
            host=host.host,
            port=host.port,
            n=loaded,
        )
        super().startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        port, self.port = self.port, None
        return maybeDeferred(port.stopListening) if port is not None else succeed(None)
