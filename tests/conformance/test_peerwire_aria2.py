"""aria2c downloads from our seeder through our tracker; without a token it gets no peers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import treq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from imsp2pd.bittorrent.announce import Announcer
from imsp2pd.bittorrent.metainfo import make_metainfo
from imsp2pd.bittorrent.peer import Torrent
from imsp2pd.bittorrent.storage import Storage
from imsp2pd.bittorrent.tracker import SwarmState, Tracker, TrackerConfig
from imsp2pd.bittorrent.tracker_http import TrackerResource
from imsp2pd.entitlement import Issuer, Verifier
from imsp2pd.web import make_site

reactor: Any = _reactor
ARIA2 = shutil.which("aria2c")


def http_get(url: str) -> Any:
    return treq.get(url, persistent=False, timeout=10).addCallback(treq.content)


class Aria2Tests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        if ARIA2 is None:
            raise SkipTest("aria2c is not installed (Debian package aria2)")
        self.issuer = Issuer(Ed25519PrivateKey.generate())
        self.tracker = Tracker(
            Verifier(self.issuer.public_key),
            TrackerConfig(interval=30, min_interval=5, peer_expiry=60),
        )
        site = make_site(TrackerResource(self.tracker, reactor.seconds), reactor=reactor)
        self.tport = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.tport.stopListening)
        self.base = f"http://127.0.0.1:{self.tport.getHost().port}/announce"
        self.dir = Path(self.mktemp()).resolve()
        (self.dir / "seed").mkdir(parents=True)
        (self.dir / "aria").mkdir()
        self.data = os.urandom(2 * 1024 * 1024 + 5)
        (self.dir / "seed" / "f.bin").write_bytes(self.data)
        self.meta = make_metainfo(self.dir / "seed" / "f.bin", self.base, piece_length=256 * 1024)
        self.tracker.register(self.meta.info_hash, "10.5555/a", SwarmState.ACTIVE)

    @inlineCallbacks
    def seed(self) -> Any:
        storage = Storage(self.meta, self.dir / "seed" / "f.bin", create=False)
        self.addCleanup(storage.close)
        ours = Torrent(reactor, self.meta, storage, have=storage.check())
        ours.start()
        self.addCleanup(ours.stop)
        port = ours.listen()
        self.addCleanup(port.stopListening)
        token = self.issuer.issue_tracker(
            "sip:carol@ims.example.org", self.meta.info_hash, "provider", 2**40
        )
        ann = Announcer(
            reactor, ours, [f"{self.base}?token={token}"], port.getHost().port, http_get
        )
        self.addCleanup(ann.stop)
        yield ann.start()
        return ours

    def aria2(self, announce: str, timeout: int) -> Any:
        from imsp2pd.bittorrent.metainfo import make_metainfo as _make

        meta = _make(self.dir / "seed" / "f.bin", announce, piece_length=256 * 1024)
        assert meta.info_hash == self.meta.info_hash
        torrent = self.dir / "x.torrent"
        torrent.write_bytes(meta.to_bytes())
        assert ARIA2 is not None
        return getProcessOutputAndValue(
            ARIA2,
            [
                "--dir",
                str(self.dir / "aria"),
                "--enable-dht=false",
                "--bt-enable-lpd=false",
                "--enable-peer-exchange=false",
                "--interface=127.0.0.1",
                "--disable-ipv6=true",
                "--seed-time=0",
                f"--listen-port={self.tport.getHost().port + 1}",
                f"--bt-stop-timeout={timeout}",
                "--summary-interval=0",
                "--console-log-level=warn",
                "--check-certificate=false",
                "--file-allocation=none",
                str(torrent),
            ],
            env=dict(os.environ),
            reactor=reactor,
        )

    @inlineCallbacks
    def test_aria2_downloads_from_our_seeder(self) -> Any:
        ours = yield self.seed()
        token = self.issuer.issue_tracker(
            "sip:alice@ims.example.org", self.meta.info_hash, "consumer", 2**40
        )
        out, err, code = yield self.aria2(f"{self.base}?token={token}", 60)
        self.assertEqual(code, 0, (out + err).decode(errors="replace")[-2000:])
        self.assertEqual((self.dir / "aria" / "f.bin").read_bytes(), self.data)
        self.assertGreaterEqual(ours.uploaded, len(self.data))

    @inlineCallbacks
    def test_aria2_without_token_gets_no_peers(self) -> Any:
        ours = yield self.seed()
        out, err, code = yield self.aria2(self.base, 8)
        self.assertNotEqual(code, 0)
        self.assertEqual(ours.uploaded, 0)
        self.assertEqual(self.tracker.peer_count, 1)  # only our seeder
