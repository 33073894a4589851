"""Our seeder to our leecher over loopback TCP; a bad-data peer gets banned."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from imsp2pd.bittorrent.metainfo import make_metainfo
from imsp2pd.bittorrent.peer import Torrent
from imsp2pd.bittorrent.storage import Storage

reactor: Any = _reactor


def with_timeout(d: Deferred[Any], seconds: float) -> Deferred[Any]:
    d.addTimeout(seconds, reactor)
    return d


class LoopbackTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir(parents=True)
        self.data = os.urandom(3 * 1024 * 1024 + 12345)
        self.src = self.dir / "src.bin"
        self.src.write_bytes(self.data)
        self.meta = make_metainfo(self.src, None, piece_length=256 * 1024)

    def torrent(self, target: Path, create: bool, **kw: Any) -> Torrent:
        storage = Storage(self.meta, target, create=create)
        self.addCleanup(storage.close)
        have = storage.check()
        t = Torrent(reactor, self.meta, storage, have=have, **kw)
        t.start()
        self.addCleanup(t.stop)
        return t

    @inlineCallbacks
    def test_seed_to_leecher(self) -> Any:
        seed = self.torrent(self.src, create=False)
        self.assertTrue(seed.complete)
        port = seed.listen()
        self.addCleanup(port.stopListening)
        out = self.dir / "out.bin"
        leech = self.torrent(out, create=True)
        self.assertFalse(leech.complete)
        leech.connect("127.0.0.1", port.getHost().port)
        yield with_timeout(leech.done, 30)
        self.assertEqual(out.read_bytes(), self.data)
        self.assertEqual(leech.downloaded, len(self.data))
        self.assertGreaterEqual(seed.uploaded, len(self.data))

    @inlineCallbacks
    def test_two_leechers_and_super_seeding(self) -> Any:
        seed = self.torrent(self.src, create=False, super_seed=True)
        self.assertIsNotNone(seed.super)
        port = seed.listen()
        self.addCleanup(port.stopListening)
        leechers = []
        for name in ("a.bin", "b.bin"):
            t = self.torrent(self.dir / name, create=True)
            leechers.append(t)
            t.connect("127.0.0.1", port.getHost().port)
        lport = leechers[0].listen()
        self.addCleanup(lport.stopListening)
        leechers[1].connect("127.0.0.1", lport.getHost().port)
        yield with_timeout(leechers[0].done, 40)
        yield with_timeout(leechers[1].done, 40)
        for name in ("a.bin", "b.bin"):
            self.assertEqual((self.dir / name).read_bytes(), self.data)

    @inlineCallbacks
    def test_rate_limits(self) -> Any:
        mib = 1024 * 1024
        seed = self.torrent(self.src, create=False, peer_upload_rate=1.5 * mib)
        port = seed.listen()
        self.addCleanup(port.stopListening)
        leech = self.torrent(self.dir / "slow.bin", create=True, download_rate=1.0 * mib)
        start = reactor.seconds()
        leech.connect("127.0.0.1", port.getHost().port)
        yield with_timeout(leech.done, 30)
        elapsed = reactor.seconds() - start
        # 3 MiB at 1 MiB/s after a one-second burst: at least about 2 s.
        self.assertGreater(elapsed, 1.8)
        self.assertLess(elapsed, 15)
        self.assertEqual((self.dir / "slow.bin").read_bytes(), self.data)

    @inlineCallbacks
    def test_resume_from_partial_file(self) -> Any:
        out = self.dir / "partial.bin"
        out.write_bytes(self.data[: 2 * 256 * 1024] + bytes(len(self.data) - 2 * 256 * 1024))
        seed = self.torrent(self.src, create=False)
        port = seed.listen()
        self.addCleanup(port.stopListening)
        leech = self.torrent(out, create=True)
        self.assertEqual(leech.picker.have_count, 2)
        leech.connect("127.0.0.1", port.getHost().port)
        yield with_timeout(leech.done, 30)
        self.assertEqual(out.read_bytes(), self.data)
        self.assertEqual(leech.downloaded, len(self.data) - 2 * 256 * 1024)

    @inlineCallbacks
    def test_bad_data_bans_the_sender(self) -> Any:
        corrupt = self.dir / "corrupt.bin"
        bad = bytearray(self.data)
        for i in range(0, len(bad), 256 * 1024):
            bad[i] ^= 0xFF  # every piece wrong
        corrupt.write_bytes(bytes(bad))
        liar_storage = Storage(self.meta, corrupt, create=False)
        self.addCleanup(liar_storage.close)
        liar = Torrent(
            reactor, self.meta, liar_storage, have=bytearray(b"\x01" * self.meta.num_pieces)
        )
        liar.start()
        self.addCleanup(liar.stop)
        port = liar.listen()
        self.addCleanup(port.stopListening)
        leech = self.torrent(self.dir / "victim.bin", create=True)
        leech.connect("127.0.0.1", port.getHost().port)
        for _ in range(200):
            if leech.banned:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(len(leech.banned), 1)
        (peer_id, host, _port) = next(iter(leech.banned))
        self.assertEqual((peer_id, host), (liar.peer_id, "127.0.0.1"))
        self.assertEqual(leech.picker.have_count, 0)


class ListenerTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_one_port_serves_several_torrents(self) -> Any:
        import socket

        from imsp2pd.bittorrent.peer import PeerListener

        d = Path(self.mktemp()).resolve()
        d.mkdir(parents=True)
        listener = PeerListener()
        metas = []
        for name in ("a.bin", "b.bin"):
            (d / name).write_bytes(os.urandom(600_000))
            meta = make_metainfo(d / name, None, piece_length=64 * 1024)
            storage = Storage(meta, d / name, create=False)
            self.addCleanup(storage.close)
            seed = Torrent(reactor, meta, storage, have=storage.check())
            seed.start()
            self.addCleanup(seed.stop)
            listener.add(seed)
            metas.append(meta)
        port = reactor.listenTCP(0, listener, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        leechers = []
        for meta, name in zip(metas, ("a.out", "b.out"), strict=True):
            storage = Storage(meta, d / name)
            self.addCleanup(storage.close)
            t = Torrent(reactor, meta, storage)
            t.start()
            self.addCleanup(t.stop)
            t.connect("127.0.0.1", port.getHost().port)
            leechers.append(t)
        for t in leechers:
            yield with_timeout(t.done, 30)
        self.assertEqual((d / "a.out").read_bytes(), (d / "a.bin").read_bytes())
        self.assertEqual((d / "b.out").read_bytes(), (d / "b.bin").read_bytes())
        # An unknown info-hash is closed without a word.
        with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5) as s:
            s.sendall(b"\x13BitTorrent protocol" + bytes(8) + b"U" * 20 + b"-XX0001-xxxxxxxxxxxx")
            s.setblocking(False)
            for _ in range(100):
                yield deferLater(reactor, 0.02, lambda: None)
                try:
                    data = s.recv(100)
                except BlockingIOError:
                    continue
                self.assertEqual(data, b"")
                break
            else:
                self.fail("the listener did not close an unknown torrent's connection")
