"""PeerProtocol with a StringTransport and a Clock: timers, violations, serving, bans."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from imsp2pd.bittorrent import peerwire as pw
from imsp2pd.bittorrent.metainfo import make_metainfo
from imsp2pd.bittorrent.peer import PeerProtocol, Torrent
from imsp2pd.bittorrent.storage import Storage

REMOTE_ID = b"-XX0001-remoteremote"


def msg(msg_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", len(payload) + 1, msg_id) + payload


class PeerProtocolTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        d = Path(self.mktemp())
        d.mkdir()
        self.data = bytes(range(256)) * 512  # 128 KiB: 2 pieces of 64 KiB
        (d / "f.bin").write_bytes(self.data)
        self.meta = make_metainfo(d / "f.bin", None, piece_length=64 * 1024)
        self.storage = Storage(self.meta, d / "f.bin", create=False)
        self.addCleanup(self.storage.close)
        self.torrent = Torrent(self.clock, self.meta, self.storage, have=self.storage.check())

    def connect(self, port: int = 5000) -> tuple[PeerProtocol, StringTransport]:
        proto = PeerProtocol(self.torrent, outgoing=False)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
        proto.makeConnection(transport)
        handshake = pw.encode_handshake(
            pw.Handshake(self.meta.info_hash, REMOTE_ID, bytes(7) + b"\x04")
        )
        proto.dataReceived(handshake)
        out = transport.value()
        transport.clear()
        self.assertTrue(out.startswith(pw.PROTOCOL))
        self.assertEqual(
            out[pw.HANDSHAKE_LEN :], msg(pw.MsgId.HAVE_ALL)
        )  # we are a seed, fast peer
        return proto, transport

    def test_keepalive_then_idle_drop(self) -> None:
        proto, transport = self.connect()
        self.clock.advance(120.01)
        self.assertEqual(transport.value(), b"\x00\x00\x00\x00")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(121)
        self.assertTrue(transport.disconnecting)

    def test_violation_drops_the_connection(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(struct.pack(">I", 1 << 20) + b"\x07")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_interested_peer_is_unchoked_and_served(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(msg(pw.MsgId.HAVE_NONE) + msg(pw.MsgId.INTERESTED))
        self.assertEqual(transport.value(), msg(pw.MsgId.UNCHOKE))
        transport.clear()
        proto.dataReceived(msg(pw.MsgId.REQUEST, struct.pack(">III", 1, 16384, 16384)))
        expected = (
            struct.pack(">IBII", 16384 + 9, pw.MsgId.PIECE, 1, 16384)
            + self.data[65536 + 16384 : 65536 + 32768]
        )
        self.assertEqual(transport.value(), expected)
        self.assertEqual(self.torrent.uploaded, 16384)

    def test_requests_for_missing_pieces_are_rejected(self) -> None:
        d = Path(self.mktemp())
        d.mkdir()
        storage = Storage(self.meta, d / "empty.bin")
        self.addCleanup(storage.close)
        leech = Torrent(self.clock, self.meta, storage)
        proto = PeerProtocol(leech, outgoing=True)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 6000))
        proto.makeConnection(transport)
        proto.dataReceived(
            pw.encode_handshake(pw.Handshake(self.meta.info_hash, REMOTE_ID, bytes(7) + b"\x04"))
        )
        transport.clear()
        assert proto.conn is not None
        proto.conn.allowed_fast_out.add(0)  # let it ask while choked
        proto.dataReceived(
            msg(pw.MsgId.HAVE_NONE) + msg(pw.MsgId.REQUEST, struct.pack(">III", 0, 0, 16384))
        )
        self.assertIn(
            msg(pw.MsgId.REJECT_REQUEST, struct.pack(">III", 0, 0, 16384)), transport.value()
        )

    def test_bad_piece_bans_by_peer_id_and_address(self) -> None:
        d = Path(self.mktemp())
        d.mkdir()
        storage = Storage(self.meta, d / "victim.bin")
        self.addCleanup(storage.close)
        leech = Torrent(self.clock, self.meta, storage)
        proto = PeerProtocol(leech, outgoing=True)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 7000))
        proto.makeConnection(transport)
        proto.dataReceived(
            pw.encode_handshake(pw.Handshake(self.meta.info_hash, REMOTE_ID, bytes(7) + b"\x04"))
        )
        proto.dataReceived(msg(pw.MsgId.HAVE_ALL) + msg(pw.MsgId.UNCHOKE))
        assert proto.conn is not None
        requested = sorted(proto.conn.our_requests)
        self.assertTrue(requested)
        piece = requested[0][0]
        for index, begin, length in requested:
            if index == piece:
                proto.dataReceived(
                    struct.pack(">IBII", length + 9, pw.MsgId.PIECE, index, begin)
                    + b"\xee" * length
                )
        self.assertEqual(leech.banned, {(REMOTE_ID, "127.0.0.1", 7000)})
        self.assertTrue(transport.disconnecting)
        self.assertEqual(leech.picker.have_count, 0)
        self.assertNotEqual(hashlib.sha1(b"\xee" * 65536).digest(), self.meta.piece_hash(piece))
        # The same peer id from another port is refused at once.
        again = PeerProtocol(leech, outgoing=False)
        t2 = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 7001))
        again.makeConnection(t2)
        again.dataReceived(pw.encode_handshake(pw.Handshake(self.meta.info_hash, REMOTE_ID)))
        self.assertTrue(t2.disconnecting)

    def test_connection_limit(self) -> None:
        self.torrent.max_peers = 1
        self.connect(5000)
        proto = PeerProtocol(self.torrent, outgoing=False)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5001))
        proto.makeConnection(transport)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def tearDown(self) -> Any:
        pending: list[Any] = list(self.clock.getDelayedCalls())
        for call in pending:
            call.cancel()
