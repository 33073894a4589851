"""The AS's DRM back end against the real drm role over loopback HTTPS."""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from imsp2pd import entitlement
from imsp2pd.config import load_config
from imsp2pd.content.backends import DrmBackend
from imsp2pd.content.purchase import NotAllowed, PricedOffer, UnknownContent
from imsp2pd.httpclient import JsonClient
from imsp2pd.metrics import Registry
from imsp2pd.roles import Hub, discover_roles, role_schemas
from imsp2pd.store import SQLiteStore
from imsp2pd.web import Router

CAROL = "sip:carol@ims.example.org"
ALICE = "sip:alice@ims.example.org"


class DrmBackendTests(TestCase):
    def setUp(self) -> None:
        base = Path(self.mktemp()).resolve()
        (base / "etc").mkdir(parents=True)
        cfg = base / "etc" / "imsp2pd.toml"
        cfg.write_text(
            '[daemon]\nstate_dir = "../var"\n[admin]\ntoken = "adm"\n'
            '[drm]\nlisten = "127.0.0.1:0"\nservice_token = "svc"\n'
        )
        known = discover_roles()
        config = load_config(cfg, role_schemas(known))
        role = known["drm"]
        store = SQLiteStore(config.state_path("db.sqlite"), reactor)
        store.migrate(role.migrations())
        self.addCleanup(store.close)
        hub = Hub(reactor, config, store, Registry(), Router(token="adm"))
        self.service = role.build(config, store, reactor, hub)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        url = f"https://127.0.0.1:{self.service.port.getHost().port}"
        ca = str(config.state_path("tls", "ca.pem"))
        self.as_key = entitlement.load_or_create_private_key(config.state_path("keys"))
        self.client = JsonClient(reactor, url, token="svc", ca_path=ca)
        self.addCleanup(self.client.close)
        self.provider = JsonClient(reactor, url, ca_path=ca)
        self.addCleanup(self.provider.close)
        self.drm = DrmBackend(self.client)

    @inlineCallbacks
    def register(self):
        token = entitlement.Issuer(self.as_key).issue_publisher(CAROL, int(time.time()) + 600)
        reply = yield self.provider.post(
            "/content", {"publisher_token": token, "content_key": "00" * 16}
        )
        self.assertEqual(reply.status, 201, reply.body)
        return reply.json()["doi"]

    @inlineCallbacks
    def test_content_bind_rights_and_revocation(self):
        doi = yield self.register()
        info = yield self.drm.content(doi)
        self.assertEqual((info["owner"], info["state"]), (CAROL, "registered"))
        self.assertIsNone((yield self.drm.content("10.5555/imsp2p.nothing")))
        yield self.drm.bind(doi, "ab" * 20)
        yield self.drm.bind(doi, "ab" * 20)  # the same again: fine
        with self.assertRaises(NotAllowed):
            yield self.drm.bind(doi, "cd" * 20)
        offer = PricedOffer(
            doi, "rent", Decimal("2.50"), "EUR", {"plays": 3}, 2, "ab" * 20, "http://127.0.0.1:6969"
        )
        yield self.drm.authorise(str(uuid.uuid4()), ALICE, offer)
        with self.assertRaises(UnknownContent):
            yield self.drm.authorise(
                str(uuid.uuid4()),
                ALICE,
                PricedOffer(
                    "10.5555/imsp2p.none",
                    "rent",
                    Decimal(1),
                    "EUR",
                    {"plays": 1},
                    1,
                    "ab" * 20,
                    "http://x",
                ),
            )
        yield self.drm.revoke_doi(doi, "taken down")
        reply = yield self.client.get("/revocations?since=0")
        self.assertIn(doi, [e["value"] for e in reply.json()["revocations"]])


class TrackerSwarmsTests(TestCase):
    """The AS's tracker back end against two real tracker roles' admin APIs."""

    def start_tracker(self, name: str):
        from imsp2pd.web import make_site

        base = Path(self.mktemp()).resolve()
        (base / "etc").mkdir(parents=True)
        cfg = base / "etc" / "imsp2pd.toml"
        cfg.write_text(
            '[daemon]\nstate_dir = "../var"\n[admin]\ntoken = "adm"\n'
            '[tracker]\nlisten = "127.0.0.1:0"\nrevocations = "off"\n'
        )
        known = discover_roles()
        config = load_config(cfg, role_schemas(known))
        role = known["tracker"]
        store = SQLiteStore(config.state_path("db.sqlite"), reactor)
        store.migrate(role.migrations())
        self.addCleanup(store.close)
        hub = Hub(reactor, config, store, Registry(), Router(token="adm", auth_prefix="/admin/"))
        service = role.build(config, store, reactor, hub)
        service.startService()
        self.addCleanup(service.stopService)
        port = reactor.listenTCP(0, make_site(hub.admin, reactor), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = JsonClient(reactor, f"http://127.0.0.1:{port.getHost().port}", token="adm")
        self.addCleanup(client.close)
        return f"http://{name}", client, hub.lookup("tracker")

    @inlineCallbacks
    def test_least_loaded_register_unmute_disable(self):
        from imsp2pd.content.backends import TrackerSwarms
        from imsp2pd.content.purchase import BackendDown

        a, client_a, _ = self.start_tracker("a:6969")
        b, client_b, _ = self.start_tracker("b:6969")
        swarms = TrackerSwarms({a: client_a, b: client_b})
        yield swarms.register(a, "11" * 20, "10.5555/one")
        self.assertEqual((yield swarms.least_loaded()), a)  # a tie goes to the first
        yield swarms.register(b, "22" * 20, "10.5555/two")
        stats = yield swarms.stats(b, "22" * 20)
        self.assertEqual((stats["state"], stats["doi"]), ("muted", "10.5555/two"))
        yield swarms.unmute(b, "22" * 20)
        self.assertEqual((yield swarms.stats(b, "22" * 20))["state"], "active")
        yield swarms.disable(b, "22" * 20)
        self.assertEqual((yield swarms.stats(b, "22" * 20))["state"], "disabled")
        with self.assertRaises(UnknownContent):
            yield swarms.stats(b, "33" * 20)
        dead = TrackerSwarms(
            {"http://c:6969": JsonClient(reactor, "http://127.0.0.1:1", timeout=2)}
        )
        with self.assertRaises(BackendDown):
            yield dead.least_loaded()


class FakeAdmin:
    def __init__(self, peers: int | None) -> None:
        self.peers = peers

    def request(self, method, path, body=None):
        from twisted.internet.defer import fail, succeed

        from imsp2pd.httpclient import Reply, Unreachable

        if self.peers is None:
            return fail(Unreachable("down"))
        swarms = [{"seeders": self.peers, "leechers": 1}]
        return succeed(Reply(200, json.dumps({"swarms": swarms}).encode(), "application/json"))


def test_least_loaded_skips_trackers_that_do_not_answer() -> None:
    from imsp2pd.content.backends import TrackerSwarms

    swarms = TrackerSwarms(
        {"http://a": FakeAdmin(9), "http://b": FakeAdmin(None), "http://c": FakeAdmin(2)}
    )
    out: list = []
    swarms.least_loaded().addCallback(out.append)
    assert out == ["http://c"]
