"""The tracker over HTTP in memory: announces, scrape, admin API, durability, revocations."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote_from_bytes

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from imsp2pd.bittorrent.bencoding import bdecode
from imsp2pd.bittorrent.revocations import RevocationSet
from imsp2pd.bittorrent.tracker import SwarmState, Tracker, TrackerConfig
from imsp2pd.bittorrent.tracker_http import (
    MIGRATIONS,
    HttpRevocationSource,
    RevocationPoller,
    StoreRevocationSource,
    SwarmRegistry,
    TrackerMetrics,
    TrackerResource,
    add_admin_routes,
)
from imsp2pd.entitlement import Issuer, Verifier
from imsp2pd.metrics import Registry
from imsp2pd.store import SQLiteStore, StoreError
from imsp2pd.web import Router

NOW = 1_800_000_000.0
IH = bytes(range(20))
ADMIN = "admin-secret"
AUTH = {b"Authorization": [b"Bearer " + ADMIN.encode()]}


def announce_url(
    token: str | None, peer: int = 1, port: int = 6881, left: int = 10, event: str = ""
) -> str:
    q = (
        f"info_hash={quote_from_bytes(IH)}&peer_id={quote_from_bytes(b'-IM0001-' + peer.to_bytes(12, 'big'))}"
        f"&port={port}&uploaded=0&downloaded=0&left={left}&compact=1"
    )
    if event:
        q += f"&event={event}"
    if token is not None:
        q += f"&token={token}"
    return "http://tracker.test/announce?" + q


class TrackerHttpTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = SQLiteStore(self.mktemp())
        self.store.migrate(MIGRATIONS)
        self.addCleanup(self.store.close)
        self.issuer = Issuer(Ed25519PrivateKey.generate())
        self.revoked = RevocationSet()
        self.tracker = self._tracker()
        self.metrics = Registry()
        self.tm = TrackerMetrics(self.metrics, self.tracker)
        self.tracker.on_failure = self.tm.failure
        self.registry = SwarmRegistry(self.tracker, self.store, self.clock.seconds)
        self.http: Any = StubTreq(TrackerResource(self.tracker, self.clock.seconds, self.tm))
        self.router = Router(token=ADMIN, auth_prefix="/admin/")
        add_admin_routes(self.router, self.registry)
        self.admin: Any = StubTreq(self.router)

    def _tracker(self) -> Tracker:
        return Tracker(
            Verifier(self.issuer.public_key),
            TrackerConfig(interval=120, min_interval=30, peer_expiry=300),
            revocations=self.revoked,
        )

    def token(
        self, role: str = "consumer", user: str = "alice", token_id: str | None = None
    ) -> str:
        return self.issuer.issue_tracker(
            f"sip:{user}@ims.example.org", IH, role, int(NOW) + 3600, token_id
        )

    @inlineCallbacks
    def get(self, url: str) -> Any:
        response = yield self.http.get(url)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/plain"])
        body = yield response.content()
        return bdecode(body)

    @inlineCallbacks
    def call(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        kwargs: dict[str, Any] = {"headers": AUTH if auth else {}}
        if body is not None:
            kwargs["data"] = json.dumps(body).encode()
        response = yield self.admin.request(method, "http://control.test" + path, **kwargs)
        text = yield response.content()
        return response.code, json.loads(text)

    @inlineCallbacks
    def test_register_mute_unmute_disable_and_stats(self) -> Any:
        code, body = yield self.call(
            "POST", "/admin/swarms", {"info_hash": IH.hex(), "doi": "10.5555/x"}
        )
        self.assertEqual(code, 200)
        self.assertEqual(body["state"], "muted")
        # Muted: consumers refused, the provider admitted.
        refused = yield self.get(announce_url(self.token()))
        self.assertEqual(refused[b"failure reason"], b"torrent not yet available")
        ok = yield self.get(
            announce_url(self.token("provider", "carol"), peer=2, port=7000, left=0)
        )
        self.assertEqual(ok[b"complete"], 1)
        code, body = yield self.call("POST", f"/admin/swarms/{IH.hex()}/unmute")
        self.assertEqual((code, body["state"]), (200, "active"))
        got = yield self.get(announce_url(self.token()))
        self.assertEqual(got[b"peers"], b"\x7f\x00\x00\x01" + (7000).to_bytes(2, "big"))
        code, body = yield self.call("GET", f"/admin/swarms?infohash={IH.hex()}")
        self.assertEqual((body["swarms"][0]["seeders"], body["swarms"][0]["leechers"]), (1, 1))
        code, body = yield self.call("GET", f"/admin/swarms/{IH.hex()}")
        self.assertEqual(body["doi"], "10.5555/x")
        code, body = yield self.call("POST", f"/admin/swarms/{IH.hex()}/disable")
        self.assertEqual((body["seeders"], body["leechers"], body["state"]), (0, 0, "disabled"))
        refused = yield self.get(announce_url(self.token("provider", "carol"), peer=2, port=7000))
        self.assertEqual(refused[b"failure reason"], b"torrent disabled by the operator")
        metrics = self.metrics.render()
        self.assertIn('imsp2p_tracker_failures_total{reason="muted"} 1', metrics)
        self.assertIn('imsp2p_tracker_failures_total{reason="disabled"} 1', metrics)
        self.assertIn(
            f'imsp2p_tracker_swarm_seeders{{info_hash="{IH.hex()}",state="disabled"}} 0', metrics
        )
        self.assertIn("imsp2p_tracker_announces_total 4", metrics)

    @inlineCallbacks
    def test_registrations_are_durable(self) -> Any:
        yield self.call(
            "POST", "/admin/swarms", {"info_hash": IH.hex(), "doi": "10.5555/x", "state": "active"}
        )
        yield self.call("POST", f"/admin/swarms/{IH.hex()}/mute")
        fresh = self._tracker()
        self.assertEqual(SwarmRegistry(fresh, self.store, self.clock.seconds).load(), 1)
        self.assertEqual(fresh.state(IH), SwarmState.MUTED)
        self.assertEqual(fresh.stats(IH)[0].doi, "10.5555/x")

    @inlineCallbacks
    def test_admin_errors(self) -> Any:
        code, body = yield self.call("GET", "/admin/swarms", auth=False)
        self.assertEqual(code, 401)
        for payload, error in [
            ({"info_hash": "xyz"}, "bad_infohash"),
            ({"info_hash": IH.hex(), "state": "loud"}, "bad_state"),
            ({"info_hash": IH.hex(), "doi": 5}, "bad_doi"),
        ]:
            code, body = yield self.call("POST", "/admin/swarms", payload)
            self.assertEqual((code, body["error"]), (400, error))
        code, body = yield self.call("POST", f"/admin/swarms/{IH.hex()}/mute")
        self.assertEqual((code, body["error"]), (404, "unknown_swarm"))
        code, body = yield self.call("GET", f"/admin/swarms/{IH.hex()}")
        self.assertEqual(code, 404)
        yield self.call("POST", "/admin/swarms", {"info_hash": IH.hex()})
        code, body = yield self.call("POST", f"/admin/swarms/{IH.hex()}/explode")
        self.assertEqual(code, 404)

    @inlineCallbacks
    def test_bad_requests_get_failure_reasons(self) -> Any:
        body = yield self.get("http://tracker.test/announce?info_hash=short")
        self.assertIn(b"failure reason", body)
        body = yield self.get(announce_url(None))
        self.assertEqual(body[b"failure reason"], b"an entitlement token is required")
        body = yield self.get(announce_url("not.a-token"))
        self.assertIn(b"malformed", body[b"failure reason"])
        response = yield self.http.get("http://tracker.test/elsewhere")
        self.assertEqual(response.code, 404)
        body = yield self.get("http://tracker.test/scrape?info_hash=x")
        self.assertIn(b"failure reason", body)

    @inlineCallbacks
    def test_internal_errors_are_a_failure_reason_not_a_traceback(self) -> Any:
        def boom(*args: Any) -> bytes:
            raise ZeroDivisionError()

        self.tracker.announce = boom  # type: ignore[method-assign,assignment]
        body = yield self.get(announce_url(self.token()))
        self.assertEqual(body[b"failure reason"], b"internal tracker error, retry later")
        self.assertEqual(body[b"retry in"], 60)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    @inlineCallbacks
    def test_scrape(self) -> Any:
        yield self.call("POST", "/admin/swarms", {"info_hash": IH.hex(), "state": "active"})
        yield self.get(announce_url(self.token(), left=0))
        body = yield self.get(
            f"http://tracker.test/scrape?info_hash={quote_from_bytes(IH)}&token={self.token()}"
        )
        self.assertEqual(
            body, {b"files": {IH: {b"complete": 1, b"incomplete": 0, b"downloaded": 0}}}
        )

    @inlineCallbacks
    def test_revocations_from_the_store_drop_peers(self) -> Any:
        from imsp2pd.drm import revocation

        self.store.migrate([m for m in self._drm_migrations()])
        yield self.call(
            "POST", "/admin/swarms", {"info_hash": IH.hex(), "doi": "10.5555/x", "state": "active"}
        )
        yield self.get(announce_url(self.token(user="alice"), peer=1, port=1001))
        yield self.get(announce_url(self.token(user="bob"), peer=2, port=1002))
        poller = RevocationPoller(
            StoreRevocationSource(self.store, self.clock.seconds), self.revoked, self.tracker
        )
        dropped = yield poller.poll()
        self.assertEqual(dropped, 0)
        self.store.transact_now(
            lambda txn: revocation.add(
                txn, revocation.Revocation(revocation.Kind.IMPU, "sip:bob@ims.example.org", NOW + 1)
            )
        )
        dropped = yield poller.poll()
        self.assertEqual(dropped, 1)
        body = yield self.get(announce_url(self.token(user="alice"), peer=1, port=1001))
        self.assertEqual(body[b"peers"], b"")
        body = yield self.get(announce_url(self.token(user="bob"), peer=2, port=1002))
        self.assertEqual(body[b"failure reason"], b"entitlement revoked")

    def _drm_migrations(self) -> Any:
        from imsp2pd.drm.server import MIGRATIONS as DRM

        return DRM

    @inlineCallbacks
    def test_store_without_drm_collection_is_a_logged_failure(self) -> Any:
        poller = RevocationPoller(
            StoreRevocationSource(self.store, self.clock.seconds), self.revoked, self.tracker
        )
        dropped = yield poller.poll()
        self.assertEqual((dropped, poller.failures), (0, 1))
        self.flushLoggedErrors(StoreError)


class FakeResponse:
    def __init__(self, code: int, body: bytes) -> None:
        self.code = code
        self._body = body

    def content(self) -> Deferred[bytes]:
        return succeed(self._body)


class HttpRevocationSourceTests(TestCase):
    def setUp(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.answers: list[Any] = []

    def get(self, url: str, headers: Any = None, timeout: float = 0) -> Deferred[Any]:
        self.calls.append((url, headers))
        answer = self.answers.pop(0)
        return fail(answer) if isinstance(answer, Exception) else succeed(answer)

    @inlineCallbacks
    def test_pulls_and_advances_since(self) -> Any:
        issuer = Issuer(Ed25519PrivateKey.generate())
        revoked = RevocationSet()
        tracker = Tracker(Verifier(issuer.public_key), revocations=revoked)
        source = HttpRevocationSource("https://drm.test/", "svc", self.get)
        poller = RevocationPoller(source, revoked, tracker)
        entries = [
            {"kind": "token", "value": "t1", "time": 5.0},
            {"kind": "device", "value": "ab", "time": 6.0},
        ]
        self.answers = [
            FakeResponse(200, json.dumps({"revocations": entries, "server_time": 10.0}).encode()),
            FakeResponse(500, b"oops"),
            FakeResponse(200, b"not json"),
            RuntimeError("connection refused"),
            FakeResponse(200, json.dumps({"revocations": [], "server_time": 20.0}).encode()),
        ]
        yield poller.poll()
        self.assertEqual(revoked.tokens, {"t1"})
        self.assertEqual(revoked.since, 10.0)
        self.assertEqual(
            self.calls[0],
            ("https://drm.test/revocations?since=0.0", {b"Authorization": [b"Bearer svc"]}),
        )
        for _ in range(3):
            yield poller.poll()
        self.assertEqual(poller.failures, 3)
        yield poller.poll()
        self.assertEqual((poller.failures, revoked.since), (0, 20.0))
        self.assertEqual(self.calls[-1][0], "https://drm.test/revocations?since=10.0")


class DrmRevocationContractTests(TestCase):
    """The tracker's HTTP revocation pull against the DRM server's real router."""

    @inlineCallbacks
    def test_pull_from_the_drm_router(self) -> Any:
        import os

        from treq.testing import StubTreq

        from imsp2pd.drm.http import make_router
        from imsp2pd.drm.server import MIGRATIONS as DRM_MIGRATIONS
        from imsp2pd.drm.server import DrmCore, MasterKey

        clock = Clock()
        clock.advance(NOW)
        store = SQLiteStore(self.mktemp())
        store.migrate(DRM_MIGRATIONS)
        self.addCleanup(store.close)
        issuer = Issuer(Ed25519PrivateKey.generate())
        core = DrmCore(
            signing_key=Ed25519PrivateKey.generate(),
            as_verifier=Verifier(issuer.public_key),
            master_key=MasterKey(os.urandom(32)),
        )
        drm: Any = StubTreq(make_router(core, store, clock, "svc", Registry()))
        response = yield drm.post(
            "https://drm.test/revocations",
            data=json.dumps({"kind": "impu", "value": "sip:bob@ims.example.org"}).encode(),
            headers={b"Authorization": [b"Bearer svc"], b"Content-Type": [b"application/json"]},
        )
        self.assertEqual(response.code, 200, (yield response.content()))

        def get(url: str, headers: Any = None, timeout: float = 0) -> Any:
            return drm.get(url, headers=headers)

        revoked = RevocationSet()
        tracker = Tracker(Verifier(issuer.public_key), revocations=revoked)
        tracker.register(IH, None, SwarmState.ACTIVE)
        poller = RevocationPoller(
            HttpRevocationSource("https://drm.test", "svc", get), revoked, tracker
        )
        yield poller.poll()
        self.assertEqual(poller.failures, 0)
        self.assertEqual(revoked.impus, {"sip:bob@ims.example.org"})
        self.assertEqual(revoked.since, NOW)
        bad = RevocationPoller(
            HttpRevocationSource("https://drm.test", "wrong", get), RevocationSet(), tracker
        )
        yield bad.poll()
        self.assertEqual(bad.failures, 1)
