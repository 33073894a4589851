"""The index role over real loopback HTTP, with a fake tracker answering BEP 48 scrapes
(and a second tracker that is down)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from imsp2pd.bittorrent.bencoding import bencode
from imsp2pd.bittorrent.metainfo import make_metainfo
from imsp2pd.bittorrent.tracker import parse_scrape
from imsp2pd.config import CORE_SCHEMAS, load_config
from imsp2pd.content.catalogue import AssetState, Catalogue, parse_metadata
from imsp2pd.control import admin_router
from imsp2pd.entitlement import Issuer, TrackerRole, Verifier
from imsp2pd.metrics import Registry
from imsp2pd.roles import Hub
from imsp2pd.store import SQLiteStore
from imsp2pd.web import HttpError, Response, Router, make_site
from imsp2pd_roles.index import IndexRole

PSI = "sip:content@ims.example.org"
CAROL = "sip:carol@ims.example.org"
OFFERS = [{"id": "rent", "price": "2.50", "currency": "EUR", "rights": {"plays": 3}}]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class _Body(Protocol):
    def __init__(self, done: Deferred[bytes]) -> None:
        self.done, self.parts = done, []

    def dataReceived(self, data: bytes) -> None:
        self.parts.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(b"".join(self.parts))


def read_body(response: Any) -> Deferred[bytes]:
    done: Deferred[bytes] = Deferred()
    response.deliverBody(_Body(done))
    return done


class FakeTracker:
    """Answers /scrape for the info-hashes it knows, checking the entitlement token."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.counts: dict[bytes, tuple[int, int, int]] = {}
        self.tokens: list[Any] = []
        self.stats: dict[str, dict[str, Any]] = {}
        self.router = Router(token="tok")
        self.router.route("GET", "/scrape", self.scrape)
        self.router.route("GET", "/admin/swarms/{infohash}", self.admin_stats, auth=True)

    def admin_stats(self, req: Any) -> Any:
        found = self.stats.get(req.params["infohash"])
        if found is None:
            raise HttpError(404, "unknown_swarm", "no such swarm")
        return found

    def scrape(self, req: Any) -> Response:
        parsed = parse_scrape(req.raw_query)
        token = self.verifier.verify_tracker(parsed.token, reactor.seconds())
        self.tokens.append(token)
        files = {
            ih: {b"complete": c[0], b"incomplete": c[1], b"downloaded": c[2]}
            for ih in parsed.info_hashes
            if ih == token.info_hash and (c := self.counts.get(ih)) is not None
        }
        return Response(200, bencode({b"files": files}), "text/plain")


class IndexOverHttpTests(TestCase):
    @inlineCallbacks
    def setUp(self) -> Any:
        tmp = Path(self.mktemp()).resolve()
        tmp.mkdir(parents=True)
        key = Ed25519PrivateKey.generate()
        self.tracker = FakeTracker(Verifier(key.public_key()))
        self.tracker_port = reactor.listenTCP(
            0, make_site(self.tracker.router, reactor), interface="127.0.0.1"
        )
        self.addCleanup(self.tracker_port.stopListening)
        tracker_url = f"http://127.0.0.1:{self.tracker_port.getHost().port}"
        down_url = f"http://127.0.0.1:{free_port()}"

        cfg = tmp / "imsp2pd.toml"
        cfg.write_text(
            '[daemon]\nstate_dir = "state"\n[admin]\ntoken = "tok"\n'
            '[index]\nlisten = "127.0.0.1:0"\nurl = "http://index.test"\n'
            "scrape_interval = 1.0\nscrape_timeout = 2.0\n"
            f'[index.tracker_admin]\n"{tracker_url}/announce" = "{tracker_url}"\n'
        )
        role = IndexRole()
        config = load_config(cfg, {**CORE_SCHEMAS, "index": role.schema})
        role.check(config)
        self.store = SQLiteStore(tmp / "state" / "imsp2pd.sqlite", reactor)
        self.store.start()
        self.addCleanup(self.store.close)
        self.store.migrate(role.migrations())
        self.hub = Hub(reactor, config, self.store, Registry(), admin_router("tok"), ("index",))
        self.hub.provide("as.issuer", Issuer(key))

        cat = Catalogue(self.store, reactor.seconds)
        self.assets = {}
        for doi, title, url in [
            ("10.5555/up", "Swarm Up", tracker_url),
            ("10.5555/scraped", "Scraped Only", tracker_url),
            ("10.5555/down", "Tracker Down", down_url),
        ]:
            f = tmp / doi.replace("/", "_")
            f.write_bytes(title.encode() * 5000)
            t = make_metainfo(f, f"{url}/announce", doi=doi).to_bytes()
            meta = parse_metadata({"title": title, "genre": "doc", "offers": OFFERS})
            asset = yield cat.add(
                meta, publisher=CAROL, torrent=t, tracker=url, state=AssetState.LISTED
            )
            self.assets[doi] = (asset, t)
        up = self.assets["10.5555/up"][0]
        self.tracker.stats[up.info_hash] = {
            "info_hash": up.info_hash,
            "seeders": 2,
            "leechers": 5,
            "completed": 11,
            "uploaded": 4000,
            "origin_uploaded": 1000,
        }
        scraped = self.assets["10.5555/scraped"][0]
        self.tracker.counts[bytes.fromhex(scraped.info_hash)] = (1, 4, 9)

        self.service = role.build(config, self.store, reactor, self.hub)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        host, port = self.service.listener.address()
        self.base = f"http://{host}:{port}"
        self.agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))

    @inlineCallbacks
    def get(self, path: str) -> Any:
        response = yield self.agent.request(b"GET", (self.base + path).encode())
        body = yield read_body(response)
        return response, body

    @inlineCallbacks
    def test_pages_torrents_and_api_over_http(self) -> Any:
        up, up_torrent = self.assets["10.5555/up"]
        r, body = yield self.get("/")
        self.assertEqual(r.code, 200)
        self.assertEqual(r.headers.getRawHeaders(b"content-type"), [b"text/html; charset=utf-8"])
        self.assertIn(b"Swarm Up", body)
        self.assertIn(b"Tracker Down", body)

        r, body = yield self.get("/assets/10.5555/up")
        page = body.decode()
        self.assertEqual(r.code, 200)
        self.assertIn(f'href="{PSI};doi=10.5555/up;offer=rent"', page)
        self.assertIn('<b class="seeders">2</b>', page)
        self.assertIn('<b class="leechers">5</b>', page)
        self.assertIn('<b class="completed">11</b>', page)
        self.assertIn("origin share 25%", page)  # from the tracker's operator API

        # a swarm the operator API does not know: scraped, with a seeder token for it
        scraped = self.assets["10.5555/scraped"][0]
        r, body = yield self.get("/assets/10.5555/scraped")
        self.assertIn(b'<b class="leechers">4</b>', body)
        self.assertNotIn(b"origin share", body)
        tokens = [t for t in self.tracker.tokens if t.info_hash.hex() == scraped.info_hash]
        self.assertTrue(tokens)
        self.assertEqual(
            (tokens[-1].impu, tokens[-1].role), ("sip:index@ims.example.org", TrackerRole.SEEDER)
        )
        self.assertNotIn(up.info_hash, [t.info_hash.hex() for t in self.tracker.tokens])

        r, body = yield self.get("/assets/10.5555/down")
        self.assertEqual(r.code, 200)
        self.assertIn(b"Swarm health: unknown", body)

        torrent_href = re.search(rb'href="(/torrents/[0-9a-f]{40}\.torrent)"', body).group(1)
        r, body = yield self.get(torrent_href.decode())
        self.assertEqual(r.code, 200)
        self.assertEqual(r.headers.getRawHeaders(b"content-type"), [b"application/x-bittorrent"])
        self.assertEqual(body, self.assets["10.5555/down"][1])

        r, body = yield self.get("/api/assets/10.5555/up")
        doc = json.loads(body)
        self.assertEqual(doc["health"]["seeders"], 2)
        self.assertEqual(doc["torrent_url"], f"http://index.test/torrents/{up.info_hash}.torrent")
        r, body = yield self.get("/api/assets/10.5555/none")
        self.assertEqual((r.code, json.loads(body)["error"]), (404, "unknown_doi"))

        r, body = yield self.get("/dashboard")
        self.assertEqual(r.code, 200)
        self.assertEqual(body.count(b'<svg xmlns="http://www.w3.org/2000/svg" class="chart"'), 3)

    @inlineCallbacks
    def test_health_check_metrics_and_admin_route(self) -> Any:
        yield self.service.sampler.tick()
        self.assertEqual(self.hub.health_checks["index"](), {"ok": True, "swarms": 3})
        text = self.hub.metrics.render()
        self.assertIn('imsp2pd_index_scrapes_total{result="ok"}', text)
        self.assertIn('imsp2pd_index_scrapes_total{result="unknown"}', text)
        self.assertIn("imsp2pd_index_assets_listed 3", text)
        self.assertIn(("GET", "/admin/content"), self.hub.admin.routes())
