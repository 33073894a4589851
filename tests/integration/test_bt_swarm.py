"""Tracker, seeder and leecher, all ours, over loopback: admission decides who gets peers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import treq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from imsp2pd.bittorrent.announce import Announcer
from imsp2pd.bittorrent.metainfo import make_metainfo
from imsp2pd.bittorrent.peer import Torrent
from imsp2pd.bittorrent.storage import Storage
from imsp2pd.bittorrent.tracker import SwarmState, Tracker, TrackerConfig
from imsp2pd.bittorrent.tracker_http import TrackerResource
from imsp2pd.entitlement import Issuer, Verifier
from imsp2pd.web import make_site

reactor: Any = _reactor


def http_get(url: str) -> Deferred[bytes]:
    d: Deferred[Any] = treq.get(url, persistent=False, timeout=10)
    d.addCallback(treq.content)
    return d


class SwarmTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.issuer = Issuer(Ed25519PrivateKey.generate())
        self.tracker = Tracker(
            Verifier(self.issuer.public_key),
            TrackerConfig(interval=30, min_interval=5, peer_expiry=60),
        )
        site = make_site(TrackerResource(self.tracker, reactor.seconds), reactor=reactor)
        self.tport = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.tport.stopListening)
        self.announce = f"http://127.0.0.1:{self.tport.getHost().port}/announce"
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir(parents=True)
        self.data = os.urandom(2 * 1024 * 1024 + 99)
        (self.dir / "src.bin").write_bytes(self.data)
        self.meta = make_metainfo(self.dir / "src.bin", self.announce, doi="10.5555/s")
        self.ih = self.meta.info_hash

    def peer(self, target: Path, create: bool, user: str, role: str) -> tuple[Torrent, Announcer]:
        storage = Storage(self.meta, target, create=create)
        self.addCleanup(storage.close)
        t = Torrent(reactor, self.meta, storage, have=storage.check())
        t.start()
        self.addCleanup(t.stop)
        port = t.listen()
        self.addCleanup(port.stopListening)
        token = self.issuer.issue_tracker(f"sip:{user}@ims.example.org", self.ih, role, 2**40)
        a = Announcer(reactor, t, [f"{self.announce}?token={token}"], port.getHost().port, http_get)
        self.addCleanup(a.stop)
        return t, a

    @inlineCallbacks
    def test_muted_then_unmuted(self) -> Any:
        self.tracker.register(self.ih, "10.5555/s", SwarmState.MUTED)
        seed, seed_ann = self.peer(self.dir / "src.bin", False, "carol", "provider")
        yield seed_ann.start()
        self.assertIsNotNone(seed_ann.last)
        leech, leech_ann = self.peer(self.dir / "out.bin", True, "alice", "consumer")
        yield leech_ann.start()
        self.assertIn("torrent not yet available", leech_ann.last_error or "")
        self.assertEqual(leech.peers, [])
        self.tracker.set_state(self.ih, SwarmState.ACTIVE)
        yield leech_ann.announce()
        self.assertEqual(leech_ann.last_error, None)
        d = leech.done
        d.addTimeout(30, reactor)
        yield d
        self.assertEqual((self.dir / "out.bin").read_bytes(), self.data)
        yield leech_ann.announce()  # completed was sent when done; now a seed
        [stats] = self.tracker.stats(self.ih)
        self.assertEqual((stats.seeders, stats.completed), (2, 1))
