"""The index site in memory: the Router's dispatch with DummyRequests, a fake clock
and a fake swarm-health source, on a real (temporary) SQLite catalogue."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.test.requesthelper import DummyRequest

from imsp2pd.bittorrent.metainfo import make_metainfo
from imsp2pd.content.catalogue import MIGRATIONS, Asset, AssetState, Catalogue, parse_metadata
from imsp2pd.content.index import (
    FirstKnownSource,
    IndexSettings,
    IndexSite,
    ScrapeError,
    ScrapeHealthSource,
    SwarmHealth,
    SwarmMonitor,
    TrackerAdminSource,
    parse_purchase_uri,
)
from imsp2pd.control import admin_router
from imsp2pd.metrics import Registry
from imsp2pd.store import SQLiteStore
from imsp2pd.web import Response

PSI = "sip:content@ims.example.org"
CAROL = "sip:carol@ims.example.org"
TRACKER = "http://127.0.0.1:6969"


def request(method: str, path: str, headers: dict[str, str] | None = None) -> DummyRequest:
    path_only = path.partition("?")[0]
    req = DummyRequest([s.encode() for s in path_only.strip("/").split("/")])
    req.method = method.encode()
    req.uri = path.encode()
    req.path = path_only.encode()
    req.content = io.BytesIO(b"")
    for k, v in (headers or {}).items():
        req.requestHeaders.setRawHeaders(k.encode(), [v.encode()])
    return req


class FakeSource:
    """Health by info-hash: a SwarmHealth, an exception to fail with, or a Deferred."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.asked: list[str] = []

    def health(self, asset: Asset) -> Deferred[SwarmHealth | None]:
        self.asked.append(asset.info_hash)
        answer = self.answers.get(asset.info_hash)
        if isinstance(answer, Exception):
            return fail(answer)
        if isinstance(answer, Deferred):
            return answer
        return succeed(answer)


def make_torrent(tmp: Path, doi: str, name: str) -> bytes:
    f = tmp / name
    f.write_bytes(name.encode() * 4096)
    return make_metainfo(f, f"{TRACKER}/announce", doi=doi, creation_date=1).to_bytes()


OFFERS = [
    {
        "id": "rent",
        "price": "2.50",
        "currency": "EUR",
        "rights": {"play_seconds_from_first_use": 172800},
    },
    {"id": "buy", "price": "9.99", "currency": "EUR", "rights": {"plays": 100}, "devices": 3},
]


def fired(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "not fired"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


class SiteTestsBase(TestCase):
    def setUp(self) -> None:
        tmp = Path(self.mktemp())
        tmp.mkdir()
        self.store = SQLiteStore(tmp / "index.sqlite")
        self.addCleanup(self.store.close)
        self.store.migrate(MIGRATIONS)
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.catalogue = Catalogue(self.store, self.clock.seconds)
        self.source = FakeSource()
        self.monitor = SwarmMonitor(self.source, self.clock.seconds, history=5, max_age=30)
        self.metrics = Registry()
        self.admin = admin_router("tok")
        self.site = IndexSite(
            self.catalogue,
            self.monitor,
            IndexSettings(psi=PSI, base_url="http://index.test"),
            self.metrics,
            self.clock.seconds,
        )
        self.site.add_admin_routes(self.admin)
        self.assets: dict[str, Asset] = {}
        self.torrents: dict[str, bytes] = {}
        for doi, title, genre, state in [
            ("10.5555/night-train", "Night Train", "drama", AssetState.LISTED),
            (
                "10.5555/a&b",
                'Cats <script>alert("x")</script> & "Dogs"',
                "comedy",
                AssetState.LISTED,
            ),
            ("10.5555/muted", "Still Muted", "drama", AssetState.PENDING),
            ("10.5555/gone", "Taken Down", "drama", AssetState.REMOVED),
        ]:
            t = make_torrent(tmp, doi, doi.rsplit("/", 1)[1].replace("&", "_"))
            meta = parse_metadata(
                {
                    "title": title,
                    "description": "Line 1\n<i>line</i> 2",
                    "genre": genre,
                    "offers": OFFERS,
                }
            )
            a = fired(self.catalogue.add(meta, publisher=CAROL, torrent=t, tracker=TRACKER))
            if state is not AssetState.PENDING:
                fired(self.catalogue.list_asset(doi))
            if state is AssetState.REMOVED:
                fired(self.catalogue.remove(doi))
            self.clock.advance(10)
            self.assets[doi] = a
            self.torrents[doi] = t

    def get(self, path: str, router: Any = None, **headers: str) -> Response:
        return fired((router or self.site.router).dispatch(request("GET", path, headers)))

    def html(self, path: str) -> tuple[int, str]:
        r = self.get(path)
        self.assertEqual(r.content_type, "text/html; charset=utf-8")
        self.assertIn("default-src 'none'", r.headers["Content-Security-Policy"])
        return r.status, r.body.decode()

    def ih(self, doi: str) -> str:
        return self.assets[doi].info_hash


class CatalogueAndAssetPageTests(SiteTestsBase):
    def test_catalogue_lists_only_listed_assets_escaped(self) -> None:
        status, page = self.html("/")
        self.assertEqual(status, 200)
        self.assertIn("Night Train", page)
        self.assertIn(
            "Cats &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;Dogs&quot;", page
        )
        self.assertNotIn("<script", page)
        self.assertNotIn("Still Muted", page)
        self.assertNotIn("Taken Down", page)
        self.assertIn('href="/assets/10.5555/a%26b"', page)
        self.assertIn("from 2.50 EUR, 9.99 EUR", page)
        self.assertIn('href="/?genre=comedy"', page)

    def test_genre_filter(self) -> None:
        _, page = self.html("/?genre=comedy")
        self.assertIn("Catalogue: comedy", page)
        self.assertIn("Cats", page)
        self.assertNotIn("Night Train", page)
        _, page = self.html("/?genre=%3Cb%3E")
        self.assertIn("Catalogue: &lt;b&gt;", page)
        self.assertIn("Nothing is listed here yet", page)

    def test_asset_page(self) -> None:
        ih = self.ih("10.5555/night-train")
        self.source.answers[ih] = SwarmHealth(3, 7, 12, 300, 1200)
        status, page = self.html("/assets/10.5555/night-train")
        self.assertEqual(status, 200)
        self.assertIn("<h1>Night Train</h1>", page)
        self.assertIn("Line 1\n&lt;i&gt;line&lt;/i&gt; 2", page)
        self.assertIn("2.50 EUR", page)
        self.assertIn("2 day(s) from first play, 1 device(s)", page)
        self.assertIn("100 play(s), 3 device(s)", page)
        hrefs = re.findall(r'<a class="buy" href="([^"]+)"', page)
        self.assertEqual(
            hrefs,
            [
                "sip:content@ims.example.org;doi=10.5555/night-train;offer=rent",
                "sip:content@ims.example.org;doi=10.5555/night-train;offer=buy",
            ],
        )
        self.assertEqual(parse_purchase_uri(hrefs[1]).offer, "buy")
        self.assertIn(f'href="/torrents/{ih}.torrent"', page)
        self.assertIn('<b class="seeders">3</b>', page)
        self.assertIn('<b class="leechers">7</b>', page)
        self.assertIn('<b class="completed">12</b>', page)
        self.assertIn("origin share 25%", page)

    def test_purchase_link_of_an_awkward_doi_is_escaped_in_html(self) -> None:
        _, page = self.html("/assets/10.5555/a%26b")
        self.assertIn('href="sip:content@ims.example.org;doi=10.5555/a&amp;b;offer=rent"', page)

    def test_a_tracker_that_is_down_shows_unknown(self) -> None:
        self.source.answers[self.ih("10.5555/night-train")] = ConnectionRefusedError()
        status, page = self.html("/assets/10.5555/night-train")
        self.assertEqual(status, 200)
        self.assertIn("Swarm health: unknown", page)
        self.source.answers[self.ih("10.5555/night-train")] = ScrapeError("refused")
        self.clock.advance(31)
        status, page = self.html("/assets/10.5555/night-train")
        self.assertIn("Swarm health: unknown", page)

    def test_unlisted_and_unknown_assets_are_404_pages(self) -> None:
        for path in (
            "/assets/10.5555/muted",
            "/assets/10.5555/gone",
            "/assets/10.5555/none",
            "/nope",
        ):
            status, page = self.html(path)
            self.assertEqual(status, 404, path)
            self.assertIn("Not found", page)

    def test_catalogue_pages(self) -> None:
        small = IndexSite(
            self.catalogue,
            self.monitor,
            IndexSettings(psi=PSI, page_size=1, api_limit=1),
            Registry(),
            self.clock.seconds,
        )
        first = fired(small.router.dispatch(request("GET", "/"))).body.decode()
        self.assertEqual(first.count('<li class="asset"'), 1)
        self.assertIn("Cats", first)  # newest first
        self.assertIn('page 1 of 2 <a rel="next" href="/?page=2">Older</a>', first)
        last = fired(small.router.dispatch(request("GET", "/?page=2"))).body.decode()
        self.assertIn("Night Train", last)
        self.assertIn('<a rel="prev" href="/">Newer</a> page 2 of 2', last)
        for odd in ("/?page=99", "/?page=x"):
            page = fired(small.router.dispatch(request("GET", odd))).body.decode()
            self.assertEqual(page.count('<li class="asset"'), 1, odd)
        one = fired(small.router.dispatch(request("GET", "/?genre=drama"))).body.decode()
        self.assertNotIn("pager", one)
        body = json.loads(fired(small.router.dispatch(request("GET", "/api/assets?offset=1"))).body)
        self.assertEqual((body["total"], body["offset"]), (2, 1))
        self.assertEqual([a["doi"] for a in body["assets"]], ["10.5555/night-train"])
        r = fired(small.router.dispatch(request("GET", "/api/assets?limit=2")))
        self.assertEqual((r.status, json.loads(r.body)["error"]), (400, "bad_request"))

    def test_static_files(self) -> None:
        css = self.get("/static/index.css")
        self.assertEqual((css.status, css.content_type), (200, "text/css; charset=utf-8"))
        icon = self.get("/static/favicon.svg")
        self.assertEqual(icon.content_type, "image/svg+xml")
        self.assertEqual(self.get("/favicon.ico").status, 200)


class TorrentAndApiTests(SiteTestsBase):
    def test_torrent_download(self) -> None:
        ih = self.ih("10.5555/night-train")
        r = self.get(f"/torrents/{ih}.torrent")
        self.assertEqual((r.status, r.content_type), (200, "application/x-bittorrent"))
        self.assertEqual(r.body, self.torrents["10.5555/night-train"])
        self.assertEqual(
            r.headers["Content-Disposition"], 'attachment; filename="night-train.torrent"'
        )
        self.assertEqual(self.get(f"/torrents/{ih.upper()}.torrent").status, 200)

    def test_no_torrent_for_unlisted_or_bad_hashes(self) -> None:
        for doi in ("10.5555/muted", "10.5555/gone"):
            self.assertEqual(self.get(f"/torrents/{self.ih(doi)}.torrent").status, 404)
        self.assertEqual(self.get("/torrents/xyz.torrent").status, 404)
        self.assertEqual(self.get(f"/torrents/{'0' * 40}.torrent").status, 404)

    def test_api_assets(self) -> None:
        r = self.get("/api/assets")
        self.assertEqual((r.status, r.content_type), (200, "application/json"))
        body = json.loads(r.body)
        self.assertEqual([a["doi"] for a in body["assets"]], ["10.5555/a&b", "10.5555/night-train"])
        a = body["assets"][1]
        self.assertEqual(a["url"], "http://index.test/assets/10.5555/night-train")
        self.assertEqual(a["torrent_url"], f"http://index.test/torrents/{a['info_hash']}.torrent")
        self.assertEqual(
            [o["purchase_uri"] for o in a["offers"]],
            [
                f"{PSI};doi=10.5555/night-train;offer=rent",
                f"{PSI};doi=10.5555/night-train;offer=buy",
            ],
        )
        self.assertEqual(a["offers"][1]["price"], "9.99")
        body = json.loads(self.get("/api/assets?genre=comedy").body)
        self.assertEqual([a["doi"] for a in body["assets"]], ["10.5555/a&b"])

    def test_api_asset_with_health(self) -> None:
        self.source.answers[self.ih("10.5555/night-train")] = SwarmHealth(1, 2, 3)
        body = json.loads(self.get("/api/assets/10.5555/night-train").body)
        self.assertEqual(body["title"], "Night Train")
        self.assertEqual(
            body["health"],
            {
                "at": self.clock.seconds(),
                "seeders": 1,
                "leechers": 2,
                "completed": 3,
                "uploaded": None,
                "origin_share": None,
            },
        )
        self.source.answers[self.ih("10.5555/a&b")] = ScrapeError("down")
        self.assertIsNone(json.loads(self.get("/api/assets/10.5555/a%26b").body)["health"])
        r = self.get("/api/assets/10.5555/muted")
        self.assertEqual((r.status, json.loads(r.body)["error"]), (404, "unknown_doi"))

    def test_metrics(self) -> None:
        self.get("/")
        self.get("/")
        self.get("/api/assets")
        text = self.metrics.render()
        self.assertIn('imsp2pd_index_page_views_total{page="catalogue"} 2', text)
        self.assertIn('imsp2pd_index_page_views_total{page="api"} 1', text)
        self.assertIn("imsp2pd_index_assets_listed 2", text)


class DashboardAndAdminTests(SiteTestsBase):
    def test_dashboard_draws_history(self) -> None:
        ih = self.ih("10.5555/night-train")
        assets = fired(self.catalogue.by_state(AssetState.LISTED))
        for i in range(8):
            self.source.answers[ih] = SwarmHealth(i, 8 - i, i, 100, 100 * (i + 1))
            fired(self.monitor.sample_all(assets))
            self.clock.advance(15)
        self.assertEqual(len(self.monitor.history(ih)), 5)  # the ring buffer is bounded
        status, page = self.html("/dashboard")
        self.assertEqual(status, 200)
        self.assertEqual(page.count('<section class="swarm"'), 3)  # pending + listed
        self.assertIn("Still Muted", page)
        self.assertNotIn("Taken Down", page)
        section = page.split(f'data-infohash="{ih}"')[1].split("</section>")[0]
        self.assertEqual(section.count('<polyline class="seeders"'), 1)
        self.assertEqual(section.count('<polyline class="origin-share"'), 1)
        points = re.search(r'class="seeders"[^>]*points="([^"]+)"', section).group(1)
        self.assertEqual(len(points.split()), 5)
        self.assertIn("no data from the tracker yet", page)  # the pending swarm was never sampled
        self.assertNotIn("<script", page)

    def test_admin_content_needs_the_token(self) -> None:
        self.assertEqual(self.get("/admin/content", self.admin).status, 401)
        r = self.get("/admin/content", self.admin, Authorization="Bearer tok")
        body = json.loads(r.body)
        self.assertEqual(
            sorted((a["doi"], a["state"]) for a in body["assets"]),
            [
                ("10.5555/a&b", "listed"),
                ("10.5555/gone", "removed"),
                ("10.5555/muted", "pending"),
                ("10.5555/night-train", "listed"),
            ],
        )
        r = self.get("/admin/content?state=pending", self.admin, Authorization="Bearer tok")
        self.assertEqual([a["doi"] for a in json.loads(r.body)["assets"]], ["10.5555/muted"])
        r = self.get("/admin/content?state=odd", self.admin, Authorization="Bearer tok")
        self.assertEqual(r.status, 400)

    def test_admin_asset_shows_history(self) -> None:
        ih = self.ih("10.5555/muted")
        self.source.answers[ih] = SwarmHealth(1, 0, 0)
        fired(self.monitor.sample(self.assets["10.5555/muted"]))
        self.clock.advance(5)
        self.source.answers[ih] = ScrapeError("down")
        fired(self.monitor.sample(self.assets["10.5555/muted"]))
        r = self.get("/admin/content/10.5555/muted", self.admin, Authorization="Bearer tok")
        body = json.loads(r.body)
        self.assertEqual(body["state"], "pending")
        self.assertEqual([h.get("seeders", "?") for h in body["history"]], [1, "?"])
        self.assertEqual(body["health"]["known"], False)
        r = self.get("/admin/content/10.5555/none", self.admin, Authorization="Bearer tok")
        self.assertEqual(r.status, 404)


class MonitorTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.source = FakeSource()
        self.asset = _asset("a" * 40)

    def test_fresh_samples_are_reused_stale_ones_renewed(self) -> None:
        m = SwarmMonitor(self.source, self.clock.seconds, max_age=30)
        self.source.answers[self.asset.info_hash] = SwarmHealth(1, 1, 1)
        fired(m.current(self.asset))
        self.clock.advance(30)
        fired(m.current(self.asset))
        self.assertEqual(len(self.source.asked), 1)
        self.clock.advance(1)
        fired(m.current(self.asset))
        self.assertEqual(len(self.source.asked), 2)

    def test_one_scrape_in_flight_per_swarm(self) -> None:
        m = SwarmMonitor(self.source, self.clock.seconds)
        pending: Deferred[SwarmHealth | None] = Deferred()
        self.source.answers[self.asset.info_hash] = pending
        d1, d2 = m.sample(self.asset), m.sample(self.asset)
        self.assertEqual(len(self.source.asked), 1)
        pending.callback(SwarmHealth(2, 0, 0))
        self.assertEqual(fired(d1), fired(d2))
        self.assertEqual(len(m.history(self.asset.info_hash)), 1)

    def test_a_source_that_raises_gives_unknown(self) -> None:
        class Broken:
            def health(self, asset: Asset) -> Deferred[SwarmHealth | None]:
                raise OSError("no route")

        m = SwarmMonitor(Broken(), self.clock.seconds)
        self.assertIsNone(fired(m.sample(self.asset)).health)

    def test_a_round_asks_a_few_trackers_at_a_time(self) -> None:
        m = SwarmMonitor(self.source, self.clock.seconds, concurrency=2)
        assets = [_asset(c * 40) for c in "abcde"]
        waiting = {a.info_hash: Deferred() for a in assets}
        self.source.answers.update(waiting)
        done = m.sample_all(assets)
        self.assertEqual(self.source.asked, ["a" * 40, "b" * 40])
        waiting["a" * 40].callback(SwarmHealth(1, 0, 0))
        self.assertEqual(self.source.asked, ["a" * 40, "b" * 40, "c" * 40])
        for ih in ("b", "c", "d", "e"):
            waiting[ih * 40].callback(None)
        self.assertEqual(len(fired(done)), 5)
        self.assertEqual(len(self.source.asked), 5)

    def test_swarms_are_bounded_and_forgotten(self) -> None:
        m = SwarmMonitor(self.source, self.clock.seconds, max_swarms=2)
        assets = [_asset(c * 40) for c in "abc"]
        for a in assets:
            fired(m.sample(a))
        self.assertEqual(m.tracked(), ["b" * 40, "c" * 40])
        fired(m.sample_all(assets[2:]))
        self.assertEqual(m.tracked(), ["c" * 40])


class ScrapeSourceTests(TestCase):
    def test_scrapes_with_a_token_and_reads_the_answer(self) -> None:
        from imsp2pd.bittorrent.bencoding import bencode

        ih = "ab" * 20
        urls: list[str] = []

        def fetch(url: str) -> Deferred[tuple[int, bytes]]:
            urls.append(url)
            return succeed(
                (
                    200,
                    bencode(
                        {
                            b"files": {
                                bytes.fromhex(ih): {
                                    b"complete": 4,
                                    b"incomplete": 1,
                                    b"downloaded": 7,
                                }
                            }
                        }
                    ),
                )
            )

        source = ScrapeHealthSource(fetch, lambda a: "tok.en")
        self.assertEqual(fired(source.health(_asset(ih))), SwarmHealth(4, 1, 7))
        self.assertEqual(
            urls,
            [
                f"{TRACKER}/scrape?info_hash=%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB%AB&token=tok.en"
            ],
        )

    def test_http_errors_are_scrape_errors(self) -> None:
        source = ScrapeHealthSource(lambda url: succeed((503, b"busy")))
        d = source.health(_asset("ab" * 20))
        self.failureResultOf(d, ScrapeError)


class TrackerAdminSourceTests(TestCase):
    def setUp(self) -> None:
        self.calls: list[tuple[str, dict[str, str] | None]] = []
        self.answer: tuple[int, bytes] = (200, b"")

    def fetch(self, url: str, headers: dict[str, str] | None = None) -> Deferred[tuple[int, bytes]]:
        self.calls.append((url, headers))
        return succeed(self.answer)

    def test_reads_the_operator_api_with_the_bearer_token(self) -> None:
        ih = "cd" * 20
        self.answer = (
            200,
            json.dumps(
                {
                    "info_hash": ih,
                    "seeders": 1,
                    "leechers": 3,
                    "completed": 2,
                    "uploaded": 1000,
                    "origin_uploaded": 400,
                }
            ).encode(),
        )
        source = TrackerAdminSource(
            self.fetch, {f"{TRACKER}/announce": "http://127.0.0.1:9100/"}, "tok"
        )
        health = fired(source.health(_asset(ih)))
        self.assertEqual((health.seeders, health.leechers, health.origin_share), (1, 3, 0.4))
        self.assertEqual(
            self.calls,
            [(f"http://127.0.0.1:9100/admin/swarms/{ih}", {"Authorization": "Bearer tok"})],
        )

    def test_unknown_tracker_unregistered_swarm_and_errors(self) -> None:
        source = TrackerAdminSource(
            self.fetch, {"http://other:6969": "http://127.0.0.1:9100"}, "tok"
        )
        self.failureResultOf(source.health(_asset("cd" * 20)), ScrapeError)
        source = TrackerAdminSource(self.fetch, {TRACKER: "http://127.0.0.1:9100"}, "tok")
        self.answer = (404, b'{"error":"unknown_swarm"}')
        self.assertIsNone(fired(source.health(_asset("cd" * 20))))
        self.answer = (401, b"{}")
        self.failureResultOf(source.health(_asset("cd" * 20)), ScrapeError)

    def test_first_known_source_falls_back(self) -> None:
        first, second = FakeSource(), FakeSource()
        a = _asset("ef" * 20)
        both = FirstKnownSource(first, second)
        first.answers[a.info_hash] = ScrapeError("down")
        second.answers[a.info_hash] = SwarmHealth(5, 0, 0)
        self.assertEqual(fired(both.health(a)).seeders, 5)
        first.answers[a.info_hash] = SwarmHealth(1, 0, 0)
        self.assertEqual(fired(both.health(a)).seeders, 1)
        self.assertEqual(len(second.asked), 1)
        first.answers[a.info_hash] = None
        second.answers[a.info_hash] = ScrapeError("also down")
        self.failureResultOf(both.health(a), ScrapeError)


def _asset(info_hash: str) -> Asset:
    from imsp2pd.content.catalogue import parse_offers

    return Asset(
        doi="10.5555/x",
        title="x",
        description="",
        genre=None,
        series=None,
        publisher=CAROL,
        offers=parse_offers(OFFERS),
        info_hash=info_hash,
        tracker=TRACKER,
        state=AssetState.LISTED,
        created=0.0,
        updated=0.0,
    )
