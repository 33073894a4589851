"""Our peer engine against libtorrent: each downloads what the other seeds; bytes equal."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from imsp2pd.bittorrent.metainfo import make_metainfo
from imsp2pd.bittorrent.peer import Torrent
from imsp2pd.bittorrent.storage import Storage

reactor: Any = _reactor
lt: Any
try:
    import libtorrent as lt
except ImportError:  # pragma: no cover
    lt = None

SIZE = 8 * 1024 * 1024 + 4321


def lt_session() -> Any:
    return lt.session(
        {
            "listen_interfaces": "127.0.0.1:0",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "allow_multiple_connections_per_ip": True,
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
        }
    )


class LibtorrentPeerTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        if lt is None:
            raise SkipTest("libtorrent Python bindings are not installed (pip install libtorrent)")
        self.dir = Path(self.mktemp()).resolve()
        (self.dir / "seed").mkdir(parents=True)
        (self.dir / "leech").mkdir()
        self.data = os.urandom(SIZE)
        (self.dir / "seed" / "movie.bin").write_bytes(self.data)
        self.meta = make_metainfo(
            self.dir / "seed" / "movie.bin", "http://127.0.0.1:1/announce", piece_length=256 * 1024
        )

    def add(self, session: Any, save_path: Path) -> Any:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(self.meta.to_bytes())
        params.save_path = str(save_path)
        return session.add_torrent(params)

    @inlineCallbacks
    def wait(self, check: Any, what: str, seconds: float = 60) -> Any:
        for _ in range(int(seconds / 0.05)):
            if check():
                return
            yield deferLater(reactor, 0.05, lambda: None)
        self.fail(f"timed out waiting for {what}")

    @inlineCallbacks
    def test_we_download_from_libtorrent(self) -> Any:
        session = lt_session()
        handle = self.add(session, self.dir / "seed")
        yield self.wait(lambda: handle.status().is_seeding, "libtorrent to check its files")
        out = self.dir / "leech" / "movie.bin"
        storage = Storage(self.meta, out)
        self.addCleanup(storage.close)
        ours = Torrent(reactor, self.meta, storage)
        ours.start()
        self.addCleanup(ours.stop)
        ours.connect("127.0.0.1", session.listen_port())
        d = ours.done
        d.addTimeout(90, reactor)
        yield d
        self.assertEqual(out.read_bytes(), self.data)
        self.assertEqual(ours.banned, set())
        del session

    @inlineCallbacks
    def test_libtorrent_downloads_from_us(self) -> Any:
        storage = Storage(self.meta, self.dir / "seed" / "movie.bin", create=False)
        self.addCleanup(storage.close)
        ours = Torrent(reactor, self.meta, storage, have=storage.check())
        self.assertTrue(ours.complete)
        ours.start()
        self.addCleanup(ours.stop)
        port = ours.listen()
        self.addCleanup(port.stopListening)
        session = lt_session()
        handle = self.add(session, self.dir / "leech")
        status = handle.status
        yield self.wait(lambda: status().state != lt.torrent_status.checking_files, "checking")
        handle.connect_peer(("127.0.0.1", port.getHost().port))
        yield self.wait(lambda: status().is_seeding, "libtorrent to finish", 90)
        session.remove_torrent(handle)
        del session  # its destructor waits for the disk writes (DESIGN.md §6)
        self.assertEqual((self.dir / "leech" / "movie.bin").read_bytes(), self.data)
        self.assertGreaterEqual(ours.uploaded, SIZE)


class LibtorrentThroughTrackerTests(TestCase):
    """Both announce to our tracker with valid tokens; libtorrent finds us there."""

    timeout = 120

    @inlineCallbacks
    def test_libtorrent_finds_our_seeder_through_our_tracker(self) -> Any:
        if lt is None:
            raise SkipTest("libtorrent Python bindings are not installed (pip install libtorrent)")
        import treq
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from imsp2pd.bittorrent.announce import Announcer
        from imsp2pd.bittorrent.tracker import SwarmState, Tracker, TrackerConfig
        from imsp2pd.bittorrent.tracker_http import TrackerResource
        from imsp2pd.entitlement import Issuer, Verifier
        from imsp2pd.web import make_site

        issuer = Issuer(Ed25519PrivateKey.generate())
        tracker = Tracker(
            Verifier(issuer.public_key), TrackerConfig(interval=30, min_interval=5, peer_expiry=60)
        )
        site = make_site(TrackerResource(tracker, reactor.seconds), reactor=reactor)
        tport = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(tport.stopListening)
        base = f"http://127.0.0.1:{tport.getHost().port}/announce"
        d = Path(self.mktemp()).resolve()
        (d / "seed").mkdir(parents=True)
        (d / "leech").mkdir()
        data = os.urandom(3 * 1024 * 1024 + 7)
        (d / "seed" / "f.bin").write_bytes(data)
        meta = make_metainfo(d / "seed" / "f.bin", base, piece_length=256 * 1024)
        tracker.register(meta.info_hash, "10.5555/lt", SwarmState.ACTIVE)
        storage = Storage(meta, d / "seed" / "f.bin", create=False)
        self.addCleanup(storage.close)
        ours = Torrent(reactor, meta, storage, have=storage.check())
        ours.start()
        self.addCleanup(ours.stop)
        port = ours.listen()
        self.addCleanup(port.stopListening)

        def get(url: str) -> Any:
            return treq.get(url, persistent=False, timeout=10).addCallback(treq.content)

        provider = issuer.issue_tracker(
            "sip:carol@ims.example.org", meta.info_hash, "provider", 2**40
        )
        ann = Announcer(reactor, ours, [f"{base}?token={provider}"], port.getHost().port, get)
        self.addCleanup(ann.stop)
        yield ann.start()
        consumer = issuer.issue_tracker(
            "sip:alice@ims.example.org", meta.info_hash, "consumer", 2**40
        )
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(meta.to_bytes())
        params.save_path = str(d / "leech")
        params.trackers = [f"{base}?token={consumer}"]
        session = lt_session()
        handle = session.add_torrent(params)
        status = handle.status
        for _ in range(1800):
            if status().is_seeding:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertTrue(status().is_seeding, "libtorrent did not finish through our tracker")
        self.assertEqual(
            tracker.stats(meta.info_hash)[0].seeders + tracker.stats(meta.info_hash)[0].leechers, 2
        )
        session.remove_torrent(handle)
        del session
        self.assertEqual((d / "leech" / "f.bin").read_bytes(), data)
