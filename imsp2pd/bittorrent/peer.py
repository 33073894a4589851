"""A BitTorrent peer on Twisted: one :class:`Torrent` and its connections.

The protocol logic lives in the pure modules (:mod:`.peerwire` per
connection, :mod:`.picker`, :mod:`.choker`); this module only wires them to
sockets, storage and the injected reactor's clock:

* :class:`PeerProtocol` feeds bytes to its :class:`~.peerwire.PeerConnection`
  and writes what it has to send; a protocol violation drops the connection
  (and a peer that sent a piece that failed its SHA-1 check is banned, by
  peer id and address:port, never by IP alone).
* :class:`Torrent` reacts to the events: keeps the picker's availability,
  says interested, pipelines requests (depth from the measured rate, 16 KiB
  blocks), writes blocks, checks every piece, announces ``have``, serves
  requests from unchoked peers (or allowed-fast ones), rechokes every 10 s
  (4 slots with an optimistic unchoke) and, as an initial seed, can
  super-seed (BEP 16). ``upload_rate`` (bytes/s, all peers together),
  ``peer_upload_rate`` (bytes/s, each peer) and ``download_rate`` (bytes/s,
  all peers together) are token buckets refilled every second: blocks to
  send wait for tokens, and requests are only sent for blocks the download
  bucket can pay for.

``Torrent.done`` fires when every piece is on disk and verified.
:class:`PeerListener` serves several torrents on one port (the operator's
seeder): it reads the remote handshake first and hands the connection to the
torrent it names; an unknown info-hash is closed without an answer.
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from imsp2pd.bittorrent import peerwire as pw
from imsp2pd.bittorrent.choker import Choker, PeerRates, SuperSeeder
from imsp2pd.bittorrent.metainfo import Metainfo
from imsp2pd.bittorrent.picker import PiecePicker
from imsp2pd.bittorrent.storage import Storage, StorageError

__all__ = ["PeerListener", "PeerProtocol", "Torrent", "make_peer_id"]

log = Logger()

SNUB_AFTER = 60.0
MIN_DEPTH, MAX_DEPTH, START_DEPTH = 4, 250, 32
PIPELINE_SECONDS = 1.5


def make_peer_id(prefix: bytes = b"-IM0001-") -> bytes:
    return prefix + os.urandom(20 - len(prefix))


class PeerProtocol(Protocol):
    """One peer-wire connection (thin: the logic is in PeerConnection and Torrent)."""

    def __init__(self, torrent: Torrent, outgoing: bool) -> None:
        self.torrent = torrent
        self.outgoing = outgoing
        self.conn: pw.PeerConnection | None = None
        self.key: Hashable | None = None
        self.timer: Any = None
        self.received_blocks = 0
        self.rate_down = 0.0
        self.rate_up = 0.0
        self._down_mark = 0
        self._up_mark = 0
        self.sent_payload = 0
        self.last_block_at = 0.0
        self.connected_at = 0.0
        self.snubbed = False
        self.depth = START_DEPTH
        self.up_tokens = 0.0

    @property
    def peer_addr(self) -> tuple[str, int]:
        transport: Any = self.transport
        addr = transport.getPeer()
        return addr.host, addr.port

    def connectionMade(self) -> None:
        now = self.torrent.now()
        self.connected_at = now
        self.last_block_at = now
        if not self.torrent.accept(self):
            transport: Any = self.transport
            transport.loseConnection()
            return
        t = self.torrent
        self.conn = pw.PeerConnection(
            t.meta.info_hash,
            t.peer_id,
            (t.meta.num_pieces, t.meta.piece_length, t.meta.total_length),
            now,
            extensions={},
            client_name="imsp2pd",
        )
        self.flush()
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        conn = self.conn
        if conn is None or conn.closed:
            return
        now = self.torrent.now()
        try:
            events = conn.receive_data(data, now)
            for event in events:
                self.torrent.handle(self, event, now)
        except pw.PeerProtocolError as exc:
            self.torrent.violation(self, exc)
            self.drop()
            return
        except StorageError as exc:
            log.error("storage: {error}", error=str(exc))
            self.drop()
            return
        except Exception:
            log.failure("peer {addr}: internal error, connection dropped", addr=self.peer_addr)
            self.drop()
            return
        self.flush()

    def flush(self) -> None:
        if self.conn is not None and self.transport is not None:
            data = self.conn.data_to_send(self.torrent.now())
            if data:
                transport: Any = self.transport
                transport.write(data)

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        transport: Any = self.transport
        if transport is not None:
            transport.loseConnection()

    def _arm(self) -> None:
        if self.conn is None or self.conn.closed:
            return
        delay = max(0.0, self.conn.next_deadline() - self.torrent.now())
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = self.torrent.reactor.callLater(delay + 0.001, self._fire)

    def _fire(self) -> None:
        self.timer = None
        if self.conn is None or self.conn.closed:
            return
        try:
            self.conn.handle_timer(self.torrent.now())
        except pw.PeerProtocolError:
            self.drop()
            return
        self.flush()
        self._arm()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.torrent.lost(self)


class _PeerFactory(ClientFactory):
    def __init__(self, torrent: Torrent, outgoing: bool) -> None:
        self.torrent = torrent
        self.outgoing = outgoing

    def buildProtocol(self, addr: Any) -> PeerProtocol:
        return PeerProtocol(self.torrent, self.outgoing)


class Torrent:
    """Downloading and/or seeding one torrent."""

    def __init__(
        self,
        reactor: Any,
        meta: Metainfo,
        storage: Storage,
        *,
        peer_id: bytes | None = None,
        have: bytearray | None = None,
        sequential: bool = False,
        super_seed: bool = False,
        upload_rate: float | None = None,
        peer_upload_rate: float | None = None,
        download_rate: float | None = None,
        max_peers: int = 80,
        rng: random.Random | None = None,
    ) -> None:
        self.reactor = reactor
        self.meta = meta
        self.storage = storage
        self.peer_id = peer_id or make_peer_id()
        self.rng = rng or random.Random()
        self.picker = PiecePicker(
            meta.num_pieces,
            meta.piece_length,
            meta.total_length,
            have=have,
            rng=self.rng,
            sequential=sequential,
        )
        self.choker = Choker(rng=self.rng)
        self.super = (
            SuperSeeder(meta.num_pieces, self.rng) if super_seed and self.picker.complete else None
        )
        self.max_peers = max_peers
        self.peers: list[PeerProtocol] = []
        self.by_key: dict[Hashable, PeerProtocol] = {}
        self.banned: set[tuple[bytes, str, int]] = set()
        self.banned_ids: set[bytes] = set()
        self.strikes: dict[Hashable, int] = {}
        self.uploaded = 0
        self.downloaded = 0
        self.wasted = 0
        self.done: Deferred[None] = Deferred()
        if self.picker.complete:
            self.done.callback(None)
        self.upload_rate = upload_rate
        self.peer_upload_rate = peer_upload_rate
        self.download_rate = download_rate
        self._tokens = 0.0
        self._down_tokens = (
            0.0 if download_rate is None else float(max(download_rate, pw.BLOCK_SIZE))
        )
        self._send_queue: deque[tuple[PeerProtocol, int, int, int]] = deque()
        self._loops: list[Any] = []
        self.on_progress: Callable[[Torrent], None] | None = None

    # -- life ----------------------------------------------------------------

    def now(self) -> float:
        return float(self.reactor.seconds())

    def start(self) -> None:
        from twisted.internet.task import LoopingCall

        for every, fn in ((1.0, self._tick), (self.choker.rechoke_every, self.rechoke)):
            loop = LoopingCall(fn)
            loop.clock = self.reactor
            loop.start(every, now=False)
            self._loops.append(loop)

    def stop(self) -> None:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        for proto in list(self.peers):
            proto.drop()

    def listen(self, port: int = 0, interface: str = "127.0.0.1") -> Any:
        return self.reactor.listenTCP(port, _PeerFactory(self, False), interface=interface)

    def connect(self, host: str, port: int) -> None:
        """Dial a peer, unless banned, already connected or at the limit."""
        if any(host == h and port == p for _, h, p in self.banned):
            return
        if len(self.peers) >= self.max_peers:
            return
        if any(
            p.outgoing and p.transport is not None and p.peer_addr == (host, port)
            for p in self.peers
        ):
            return
        self.reactor.connectTCP(host, port, _PeerFactory(self, True), timeout=10)

    @property
    def complete(self) -> bool:
        return self.picker.complete

    @property
    def left(self) -> int:
        return sum(
            self.meta.piece_size(i) for i in range(self.meta.num_pieces) if not self.picker.have[i]
        )

    # -- connections ---------------------------------------------------------

    def accept(self, proto: PeerProtocol) -> bool:
        if len(self.peers) >= self.max_peers:
            return False
        self.peers.append(proto)
        return True

    def lost(self, proto: PeerProtocol) -> None:
        if proto in self.peers:
            self.peers.remove(proto)
        if proto.key is not None and self.by_key.get(proto.key) is proto:
            del self.by_key[proto.key]
            conn = proto.conn
            self.picker.peer_gone(proto.key, conn.peer_pieces if conn is not None else None)
            if self.super is not None:
                self._send_offers(self.super.peer_gone(proto.key))
        self._send_queue = deque(item for item in self._send_queue if item[0] is not proto)
        self._fill_all()

    def violation(self, proto: PeerProtocol, exc: pw.PeerProtocolError) -> None:
        log.info("peer {addr} dropped: {error}", addr=proto.peer_addr, error=str(exc))

    def _ban(self, proto: PeerProtocol) -> None:
        assert proto.conn is not None and proto.conn.remote is not None
        host, port = proto.peer_addr
        self.banned.add((proto.conn.remote.peer_id, host, port))
        self.banned_ids.add(proto.conn.remote.peer_id)
        log.warn("peer {addr} banned for sending bad data", addr=(host, port))
        proto.drop()

    # -- events --------------------------------------------------------------

    def handle(self, proto: PeerProtocol, event: Any, now: float) -> None:
        conn = proto.conn
        assert conn is not None
        if isinstance(event, pw.Handshake):
            self._handshake(proto, event)
        elif isinstance(event, (pw.Bitfield, pw.HaveAll)):
            assert proto.key is not None
            self.picker.add_peer_pieces(conn.peer_pieces)
            if self.super is not None:
                self._send_offers(self.super.peer_gone(proto.key))
                offer = self.super.peer_connected(proto.key, conn.peer_pieces)
                if offer is not None:
                    conn.send_have(offer)
            self._interest(proto)
        elif isinstance(event, pw.Have):
            self.picker.add_have(event.index)
            if self.super is not None:
                self._send_offers(self.super.have(proto.key, event.index))
            self._interest(proto)
        elif isinstance(event, pw.Unchoke | pw.AllowedFast):
            self._fill(proto)
        elif isinstance(event, pw.Choke):
            for block in event.dropped:
                self.picker.request_dropped(proto.key, block)
            self._fill_all()
        elif isinstance(event, pw.RejectRequest):
            self.picker.request_dropped(proto.key, (event.index, event.begin, event.length))
            self._fill_all()
        elif isinstance(event, pw.Piece):
            self._piece(proto, event, now)
        elif isinstance(event, pw.Request):
            self._request(proto, event)
        elif isinstance(event, pw.Cancel):
            pass  # the connection already forgot the request
        elif isinstance(event, pw.Interested):
            if len(self.choker.unchoked) < self.choker.slots:
                self.rechoke()
        elif isinstance(event, pw.ExtensionHandshake) and event.reqq:
            proto.depth = min(proto.depth, event.reqq)

    def _send_offers(self, offers: dict[Hashable, int]) -> None:
        for key, index in offers.items():
            other = self.by_key.get(key)
            if other is not None and other.conn is not None and not other.conn.closed:
                other.conn.send_have(index)
                other.flush()
        if self.super is not None:
            self.rechoke()  # slots go to the peers holding offers

    def _handshake(self, proto: PeerProtocol, hs: pw.Handshake) -> None:
        host, port = proto.peer_addr
        conn = proto.conn
        assert conn is not None
        if hs.peer_id in self.banned_ids or (hs.peer_id, host, port) in self.banned:
            proto.drop()
            return
        key = (hs.peer_id, host, port)
        if key in self.by_key:
            proto.drop()
            return
        proto.key = key
        self.by_key[key] = proto
        if self.super is not None:
            conn.send_bitfield(bytearray(self.meta.num_pieces))
            offer = self.super.peer_connected(key)
            if offer is not None:
                conn.send_have(offer)
        else:
            conn.send_bitfield(self.picker.have)

    def _interest(self, proto: PeerProtocol) -> None:
        conn = proto.conn
        assert conn is not None
        if conn.closed:
            return
        if self.picker.complete and conn.peer_is_seed:
            proto.drop()  # two seeds have nothing to say to each other
            return
        conn.send_interested(self.picker.wanted_from(conn.peer_pieces))
        self._fill(proto)

    def _fill(self, proto: PeerProtocol) -> None:
        conn = proto.conn
        if conn is None or conn.closed or proto.key is None or not conn.am_interested:
            return
        allowed = None
        if conn.peer_choking:
            if not (conn.allowed_fast_in and conn.fast):
                return
            allowed = conn.allowed_fast_in
        want = proto.depth - len(conn.our_requests)
        if self.download_rate is not None:
            want = min(want, int(self._down_tokens // pw.BLOCK_SIZE))
        if want <= 0:
            return
        now = self.now()
        for index, begin, length in self.picker.pick(proto.key, conn.peer_pieces, want, allowed):
            conn.send_request(index, begin, length, now)
            if self.download_rate is not None:
                self._down_tokens -= length
        proto.flush()

    def _fill_all(self) -> None:
        for proto in self.peers:
            self._fill(proto)

    def _piece(self, proto: PeerProtocol, event: pw.Piece, now: float) -> None:
        block = (event.index, event.begin, len(event.block))
        result = self.picker.block_received(proto.key, block)
        proto.last_block_at = now
        proto.snubbed = False
        if not result.accepted:
            self.wasted += len(event.block)
            return
        self.storage.write(event.index, event.begin, event.block)
        self.downloaded += len(event.block)
        for key in result.cancel:
            other = self.by_key.get(key)
            if other is not None and other.conn is not None and not other.conn.closed:
                other.conn.send_cancel(*block)
                other.flush()
        if result.piece_complete:
            self._piece_done(event.index)
        self._fill(proto)

    def _piece_done(self, index: int) -> None:
        if not self.storage.verify(index):
            for key in self.picker.piece_failed(index):
                self.strikes[key] = self.strikes.get(key, 0) + 1
                bad = self.by_key.get(key)
                if bad is not None and bad.conn is not None and bad.conn.remote is not None:
                    self._ban(bad)
            return
        self.picker.piece_verified(index)
        for proto in self.peers:
            if proto.conn is not None and proto.key is not None and not proto.conn.closed:
                proto.conn.send_have(index)
                if self.picker.complete:
                    self._interest(proto)
                proto.flush()
        if self.on_progress is not None:
            self.on_progress(self)
        if self.picker.complete and not self.done.called:
            self.storage.sync()
            self.done.callback(None)

    def _request(self, proto: PeerProtocol, event: pw.Request) -> None:
        conn = proto.conn
        assert conn is not None
        if not self.picker.have[event.index] or (
            self.super is not None and not self.super.may_serve(proto.key, event.index)
        ):
            conn.send_reject(event.index, event.begin, event.length)
            return
        if self.upload_rate is None and self.peer_upload_rate is None:
            self._send_block(proto, event.index, event.begin, event.length)
        else:
            self._send_queue.append((proto, event.index, event.begin, event.length))
            self._drain()

    def _send_block(self, proto: PeerProtocol, index: int, begin: int, length: int) -> None:
        conn = proto.conn
        if conn is None or conn.closed or (index, begin, length) not in conn.peer_requests:
            return  # cancelled or choked meanwhile
        conn.send_piece(index, begin, self.storage.read(index, begin, length))
        self.uploaded += length
        proto.sent_payload += length
        proto.flush()

    def _drain(self) -> None:
        """Send queued blocks the buckets can pay for, in arrival order."""
        kept: deque[tuple[PeerProtocol, int, int, int]] = deque()
        queue = self._send_queue
        while queue:
            proto, index, begin, length = queue[0]
            if self.upload_rate is not None and self._tokens < length:
                break
            queue.popleft()
            if self.peer_upload_rate is not None:
                if proto.up_tokens < length:
                    kept.append((proto, index, begin, length))
                    continue
                proto.up_tokens -= length
            if self.upload_rate is not None:
                self._tokens -= length
            self._send_block(proto, index, begin, length)
        kept.extend(queue)
        self._send_queue = kept

    @staticmethod
    def _refill(tokens: float, rate: float) -> float:
        return min(tokens + rate, max(rate, pw.BLOCK_SIZE))

    def _tick(self) -> None:
        now = self.now()
        if self.upload_rate is not None:
            self._tokens = self._refill(self._tokens, self.upload_rate)
        if self.peer_upload_rate is not None:
            for proto in self.peers:
                proto.up_tokens = self._refill(proto.up_tokens, self.peer_upload_rate)
        if self.download_rate is not None:
            self._down_tokens = self._refill(self._down_tokens, self.download_rate)
        if self._send_queue:
            self._drain()
        for proto in list(self.peers):
            conn = proto.conn
            if conn is None or proto.key is None:
                continue
            down = conn.bytes_received - proto._down_mark
            up = proto.sent_payload - proto._up_mark
            proto._down_mark, proto._up_mark = conn.bytes_received, proto.sent_payload
            proto.rate_down = 0.7 * proto.rate_down + 0.3 * down
            proto.rate_up = 0.7 * proto.rate_up + 0.3 * up
            depth = int(proto.rate_down * PIPELINE_SECONDS / pw.BLOCK_SIZE) + MIN_DEPTH
            proto.depth = max(MIN_DEPTH, min(MAX_DEPTH, max(depth, START_DEPTH)))
            if conn.our_requests and now - proto.last_block_at > SNUB_AFTER:
                proto.snubbed = True
                for block in list(conn.our_requests):
                    conn.send_cancel(*block)
                    self.picker.request_dropped(proto.key, block)
                proto.flush()
            self._fill(proto)

    def _wants_from_us(self, proto: PeerProtocol) -> bool:
        """Super-seeding: only a peer holding an unfinished offer can use a slot."""
        if self.super is None or proto.key is None or proto.conn is None:
            return True
        offer = self.super.offered.get(proto.key)
        return offer is not None and not proto.conn.peer_pieces[offer]

    def rechoke(self) -> None:
        now = self.now()
        rates = [
            PeerRates(
                p.key,
                p.conn.peer_interested and self._wants_from_us(p),
                p.rate_down,
                p.rate_up,
                p.connected_at,
                p.snubbed,
            )
            for p in self.peers
            if p.conn is not None and p.key is not None and not p.conn.closed
        ]
        decision = self.choker.rechoke(now, rates, seeding=self.picker.complete)
        for proto in self.peers:
            conn = proto.conn
            if conn is None or proto.key is None or conn.closed:
                continue
            if proto.key in decision.unchoked:
                conn.send_unchoke()
            else:
                conn.send_choke()
            proto.flush()


class _Dispatch(Protocol):
    """Reads the remote handshake, then hands the connection to its torrent."""

    def __init__(self, listener: PeerListener) -> None:
        self.listener = listener
        self.buf = b""
        self.inner: PeerProtocol | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.dataReceived(data)
            return
        self.buf += data
        if len(self.buf) < pw.HANDSHAKE_LEN:
            if not pw.PROTOCOL.startswith(self.buf[:20]):
                self._drop()
            return
        try:
            hs = pw.parse_handshake(self.buf)
        except pw.PeerProtocolError:
            self._drop()
            return
        torrent = self.listener.torrents.get(hs.info_hash)
        if torrent is None:
            self._drop()  # not a torrent we serve: say nothing
            return
        self.inner = PeerProtocol(torrent, outgoing=False)
        self.inner.makeConnection(self.transport)
        buf, self.buf = self.buf, b""
        self.inner.dataReceived(buf)

    def _drop(self) -> None:
        transport: Any = self.transport
        transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.inner is not None:
            self.inner.connectionLost(reason)


class PeerListener(Factory):
    """One peer-wire port for several torrents (the operator's seeder)."""

    def __init__(self) -> None:
        self.torrents: dict[bytes, Torrent] = {}

    def add(self, torrent: Torrent) -> None:
        self.torrents[torrent.meta.info_hash] = torrent

    def remove(self, info_hash: bytes) -> None:
        self.torrents.pop(info_hash, None)

    def buildProtocol(self, addr: Any) -> _Dispatch:
        return _Dispatch(self)
