"""The BitTorrent peer-wire protocol, sans-IO (BEP 3, BEP 6 fast, BEP 10).

:class:`PeerConnection` is one connection to one peer for one torrent. Feed
it what the socket read with :meth:`~PeerConnection.receive_data` (it returns
the events: the decoded messages, as frozen dataclasses), tell it what to
send with its ``send_*`` methods, write what :meth:`~PeerConnection.data_to_send`
returns, and call :meth:`~PeerConnection.handle_timer` at
:meth:`~PeerConnection.next_deadline`. It never does I/O and never reads a
clock.

Strict limits: any protocol violation (bad handshake, wrong info-hash,
connecting to ourselves, a message longer than the limit, a bitfield with the
wrong length or spare bits set, an index out of range, a request
over 16 KiB or past the end of a piece, too many queued requests, a piece we
never asked for, fast-extension or extension messages that were not
negotiated, a repeated bitfield or have-all/have-none that takes pieces back,
silence longer than ``idle_timeout``) raises
:class:`PeerProtocolError` with a :class:`Violation` code; the connection is
then closed and every later call raises too. The adapter drops the socket
and may ban the peer (by peer id and address:port). A repeated bitfield that
only adds pieces (aria2 sends have-none first and a bitfield later) is
accepted and reported as the :class:`Have` events it amounts to.

If a listener serves several torrents, it reads the 68-byte handshake with
:func:`parse_handshake` first, picks the torrent, and then makes the
connection and feeds it the bytes, handshake included.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any

from imsp2pd.bittorrent.bencoding import BencodeError, bdecode, bencode

__all__ = [
    "BLOCK_SIZE",
    "HANDSHAKE_LEN",
    "PROTOCOL",
    "AllowedFast",
    "Bitfield",
    "Cancel",
    "Choke",
    "Extended",
    "ExtensionHandshake",
    "Handshake",
    "Have",
    "HaveAll",
    "HaveNone",
    "Interested",
    "KeepAlive",
    "Limits",
    "MsgId",
    "NotInterested",
    "PeerConnection",
    "PeerProtocolError",
    "Piece",
    "Port",
    "RejectRequest",
    "Request",
    "SuggestPiece",
    "Unchoke",
    "Violation",
    "parse_handshake",
]

PROTOCOL = b"\x13BitTorrent protocol"
HANDSHAKE_LEN = 68
BLOCK_SIZE = 16 * 1024
# reserved bits: BEP 10 is byte 5 bit 0x10, BEP 6 is byte 7 bit 0x04
_EXT_BYTE, _EXT_BIT = 5, 0x10
_FAST_BYTE, _FAST_BIT = 7, 0x04


class MsgId(enum.IntEnum):
    CHOKE = 0
    UNCHOKE = 1
    INTERESTED = 2
    NOT_INTERESTED = 3
    HAVE = 4
    BITFIELD = 5
    REQUEST = 6
    PIECE = 7
    CANCEL = 8
    PORT = 9
    SUGGEST_PIECE = 0x0D
    HAVE_ALL = 0x0E
    HAVE_NONE = 0x0F
    REJECT_REQUEST = 0x10
    ALLOWED_FAST = 0x11
    EXTENDED = 20


class Violation(enum.IntEnum):
    BAD_HANDSHAKE = 1
    WRONG_INFO_HASH = 2
    SELF_CONNECTION = 3
    WRONG_PEER_ID = 4
    MESSAGE_TOO_LONG = 5
    BAD_LENGTH = 6
    LATE_BITFIELD = 7
    BAD_BITFIELD = 8
    BAD_INDEX = 9
    BAD_REQUEST = 10
    TOO_MANY_REQUESTS = 11
    UNREQUESTED_PIECE = 12
    NOT_NEGOTIATED = 13
    BAD_EXTENSION = 14
    IDLE = 15
    CLOSED = 16


class PeerProtocolError(Exception):
    def __init__(self, code: Violation, message: str) -> None:
        super().__init__(f"{code.name.lower()}: {message}")
        self.code = code


# -- messages ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    info_hash: bytes
    peer_id: bytes
    reserved: bytes = bytes(8)

    @property
    def supports_fast(self) -> bool:
        return bool(self.reserved[_FAST_BYTE] & _FAST_BIT)

    @property
    def supports_extensions(self) -> bool:
        return bool(self.reserved[_EXT_BYTE] & _EXT_BIT)


@dataclass(frozen=True, slots=True)
class KeepAlive:
    pass


@dataclass(frozen=True, slots=True)
class Choke:
    """The peer choked us; ``dropped`` are our requests it will not serve
    (all of them without the fast extension; none with it, since it then
    rejects each one explicitly)."""

    dropped: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Unchoke:
    pass


@dataclass(frozen=True, slots=True)
class Interested:
    pass


@dataclass(frozen=True, slots=True)
class NotInterested:
    pass


@dataclass(frozen=True, slots=True)
class Have:
    index: int


@dataclass(frozen=True, slots=True)
class Bitfield:
    bits: bytes


@dataclass(frozen=True, slots=True)
class Request:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Piece:
    index: int
    begin: int
    block: bytes


@dataclass(frozen=True, slots=True)
class Cancel:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Port:
    port: int


@dataclass(frozen=True, slots=True)
class SuggestPiece:
    index: int


@dataclass(frozen=True, slots=True)
class HaveAll:
    pass


@dataclass(frozen=True, slots=True)
class HaveNone:
    pass


@dataclass(frozen=True, slots=True)
class RejectRequest:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class AllowedFast:
    index: int


@dataclass(frozen=True, slots=True)
class Extended:
    ext_id: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ExtensionHandshake:
    """BEP 10 handshake (extended message 0), decoded."""

    messages: dict[str, int] = field(default_factory=dict)  # "m"
    client: str | None = None  # "v"
    reqq: int | None = None
    listen_port: int | None = None  # "p"
    raw: dict[bytes, Any] = field(default_factory=dict, compare=False)


Message = (
    KeepAlive
    | Choke
    | Unchoke
    | Interested
    | NotInterested
    | Have
    | Bitfield
    | Request
    | Piece
    | Cancel
    | Port
    | SuggestPiece
    | HaveAll
    | HaveNone
    | RejectRequest
    | AllowedFast
    | Extended
)
Event = Handshake | ExtensionHandshake | Message

_NO_PAYLOAD: dict[int, Message] = {
    MsgId.CHOKE: Choke(),
    MsgId.UNCHOKE: Unchoke(),
    MsgId.INTERESTED: Interested(),
    MsgId.NOT_INTERESTED: NotInterested(),
    MsgId.HAVE_ALL: HaveAll(),
    MsgId.HAVE_NONE: HaveNone(),
}
_FAST_IDS: set[int] = {
    MsgId.SUGGEST_PIECE,
    MsgId.HAVE_ALL,
    MsgId.HAVE_NONE,
    MsgId.REJECT_REQUEST,
    MsgId.ALLOWED_FAST,
}
_TRIPLE = struct.Struct(">III")


def encode_handshake(hs: Handshake) -> bytes:
    return PROTOCOL + hs.reserved + hs.info_hash + hs.peer_id


def parse_handshake(data: bytes) -> Handshake:
    """The 68-byte handshake at the start of *data* (raises on a bad one)."""
    if len(data) < HANDSHAKE_LEN:
        raise PeerProtocolError(Violation.BAD_HANDSHAKE, "short handshake")
    if data[:20] != PROTOCOL:
        raise PeerProtocolError(Violation.BAD_HANDSHAKE, "not the BitTorrent protocol")
    return Handshake(bytes(data[28:48]), bytes(data[48:68]), bytes(data[20:28]))


def _msg(msg_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", len(payload) + 1, msg_id) + payload


def encode_message(msg: Message) -> bytes:
    if isinstance(msg, KeepAlive):
        return b"\x00\x00\x00\x00"
    if isinstance(msg, Choke):
        return _msg(MsgId.CHOKE)
    if isinstance(msg, Unchoke):
        return _msg(MsgId.UNCHOKE)
    if isinstance(msg, Interested):
        return _msg(MsgId.INTERESTED)
    if isinstance(msg, NotInterested):
        return _msg(MsgId.NOT_INTERESTED)
    if isinstance(msg, Have):
        return _msg(MsgId.HAVE, struct.pack(">I", msg.index))
    if isinstance(msg, Bitfield):
        return _msg(MsgId.BITFIELD, msg.bits)
    if isinstance(msg, Request):
        return _msg(MsgId.REQUEST, _TRIPLE.pack(msg.index, msg.begin, msg.length))
    if isinstance(msg, Piece):
        return (
            struct.pack(">IBII", len(msg.block) + 9, MsgId.PIECE, msg.index, msg.begin) + msg.block
        )
    if isinstance(msg, Cancel):
        return _msg(MsgId.CANCEL, _TRIPLE.pack(msg.index, msg.begin, msg.length))
    if isinstance(msg, Port):
        return _msg(MsgId.PORT, struct.pack(">H", msg.port))
    if isinstance(msg, SuggestPiece):
        return _msg(MsgId.SUGGEST_PIECE, struct.pack(">I", msg.index))
    if isinstance(msg, HaveAll):
        return _msg(MsgId.HAVE_ALL)
    if isinstance(msg, HaveNone):
        return _msg(MsgId.HAVE_NONE)
    if isinstance(msg, RejectRequest):
        return _msg(MsgId.REJECT_REQUEST, _TRIPLE.pack(msg.index, msg.begin, msg.length))
    if isinstance(msg, AllowedFast):
        return _msg(MsgId.ALLOWED_FAST, struct.pack(">I", msg.index))
    if isinstance(msg, Extended):
        return _msg(MsgId.EXTENDED, bytes([msg.ext_id]) + msg.payload)
    raise TypeError(f"not a peer-wire message: {msg!r}")


# -- the connection ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    max_message: int = BLOCK_SIZE + 13  # a piece message with a 16 KiB block
    max_extended: int = 1 << 20
    max_peer_requests: int = 500  # requests the peer may queue with us
    max_unrequested: int = 8  # late blocks tolerated after a cancel or choke
    keepalive_every: float = 120.0
    idle_timeout: float = 240.0
    handshake_timeout: float = 30.0


class PeerConnection:
    """One peer-wire connection for one torrent (sans-IO)."""

    def __init__(
        self,
        info_hash: bytes,
        peer_id: bytes,
        piece_sizes: tuple[int, int, int],
        now: float,
        *,
        fast: bool = True,
        extensions: dict[str, int] | None = None,
        client_name: str = "imsp2pd",
        expected_peer_id: bytes | None = None,
        limits: Limits | None = None,
    ) -> None:
        """*piece_sizes* is ``(num_pieces, piece_length, total_length)``.

        *extensions* are the BEP 10 messages we support (name -> our id);
        ``None`` turns BEP 10 off. We send our handshake at once.
        """
        if len(info_hash) != 20 or len(peer_id) != 20:
            raise ValueError("info_hash and peer_id must be 20 bytes")
        self.info_hash = info_hash
        self.peer_id = peer_id
        self.num_pieces, self.piece_length, self.total_length = piece_sizes
        self.limits = limits or Limits()
        self.expected_peer_id = expected_peer_id
        self._extensions = extensions
        self._client_name = client_name
        reserved = bytearray(8)
        if fast:
            reserved[_FAST_BYTE] |= _FAST_BIT
        if extensions is not None:
            reserved[_EXT_BYTE] |= _EXT_BIT
        self._our_reserved = bytes(reserved)
        self._buf = bytearray()
        self._bitfield_len = (self.num_pieces + 7) // 8
        self._max_any = max(
            BLOCK_SIZE + 9,
            self._bitfield_len + 1,
            self.limits.max_extended,
            self.limits.max_message,
        )
        self._out: list[bytes] = [
            encode_handshake(Handshake(info_hash, peer_id, self._our_reserved))
        ]
        self.closed = False
        self.remote: Handshake | None = None
        self.fast = False
        self.extended = False
        self.remote_extensions: ExtensionHandshake | None = None
        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.peer_interested = False
        self.peer_pieces = bytearray(self.num_pieces)  # 1 where the peer has the piece
        self.peer_piece_count = 0
        self._first_message = True
        self.our_requests: dict[tuple[int, int, int], float] = {}  # ours, pending at the peer
        self.peer_requests: dict[tuple[int, int, int], None] = {}  # the peer's, queued with us
        self.allowed_fast_in: set[int] = set()  # pieces the peer lets us fetch while choked
        self.allowed_fast_out: set[int] = set()  # pieces we let the peer fetch while choked
        self._unrequested = 0
        self._started = now
        self._last_received = now
        self._last_sent = now
        self.bytes_received = 0
        self.bytes_sent = 0

    # -- helpers -------------------------------------------------------------

    def piece_size(self, index: int) -> int:
        if index == self.num_pieces - 1:
            return self.total_length - index * self.piece_length
        return self.piece_length

    def _violation(self, code: Violation, message: str) -> PeerProtocolError:
        self.closed = True
        self._out.clear()
        return PeerProtocolError(code, message)

    def _check_open(self) -> None:
        if self.closed:
            raise PeerProtocolError(Violation.CLOSED, "connection is closed")

    def _index(self, index: int) -> int:
        if not 0 <= index < self.num_pieces:
            raise self._violation(Violation.BAD_INDEX, f"piece index {index} out of range")
        return index

    def _block(self, index: int, begin: int, length: int) -> tuple[int, int, int]:
        self._index(index)
        if not 0 < length <= BLOCK_SIZE or begin + length > self.piece_size(index):
            raise self._violation(Violation.BAD_REQUEST, f"bad block ({index}, {begin}, {length})")
        return index, begin, length

    def _set_peer_has(self, index: int) -> bool:
        if self.peer_pieces[index]:
            return False
        self.peer_pieces[index] = 1
        self.peer_piece_count += 1
        return True

    @property
    def handshaken(self) -> bool:
        return self.remote is not None

    @property
    def peer_is_seed(self) -> bool:
        return self.peer_piece_count == self.num_pieces

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Decode *data*; returns the events; raises PeerProtocolError."""
        self._check_open()
        if data:
            self._last_received = now
            self.bytes_received += len(data)
        self._buf += data
        events: list[Event] = []
        if self.remote is None:
            if len(self._buf) < HANDSHAKE_LEN:
                if self._buf and not PROTOCOL.startswith(bytes(self._buf[:20])):
                    raise self._violation(Violation.BAD_HANDSHAKE, "not the BitTorrent protocol")
                return events
            events.append(self._handshake(bytes(self._buf[:HANDSHAKE_LEN])))
            del self._buf[:HANDSHAKE_LEN]
        buf = self._buf
        pos = 0
        try:
            while len(buf) - pos >= 4:
                (length,) = struct.unpack_from(">I", buf, pos)
                if length > self._max_any:
                    raise self._violation(Violation.MESSAGE_TOO_LONG, f"message of {length} bytes")
                if length > 0 and len(buf) - pos >= 5 and length > self._max_for(buf[pos + 4]):
                    raise self._violation(
                        Violation.MESSAGE_TOO_LONG, f"message {buf[pos + 4]} of {length} bytes"
                    )
                if len(buf) - pos - 4 < length:
                    break
                body = bytes(buf[pos + 4 : pos + 4 + length])
                pos += 4 + length
                event = self._message(body, now)
                if isinstance(event, list):
                    events.extend(event)
                elif event is not None:
                    events.append(event)
        finally:
            del buf[:pos]
        return events

    def _max_for(self, msg_id: int) -> int:
        if msg_id == MsgId.PIECE:
            return BLOCK_SIZE + 9
        if msg_id == MsgId.BITFIELD:
            return self._bitfield_len + 1
        if msg_id == MsgId.EXTENDED:
            return self.limits.max_extended
        fixed = _FIXED_LENGTHS.get(msg_id)
        return self.limits.max_message if fixed is None else fixed + 1

    def _handshake(self, data: bytes) -> Handshake:
        hs = parse_handshake(data)
        if hs.info_hash != self.info_hash:
            raise self._violation(Violation.WRONG_INFO_HASH, "handshake for another torrent")
        if hs.peer_id == self.peer_id:
            raise self._violation(Violation.SELF_CONNECTION, "connected to ourselves")
        if self.expected_peer_id is not None and hs.peer_id != self.expected_peer_id:
            raise self._violation(Violation.WRONG_PEER_ID, "peer id differs from the tracker's")
        self.remote = hs
        self.fast = hs.supports_fast and bool(self._our_reserved[_FAST_BYTE] & _FAST_BIT)
        self.extended = hs.supports_extensions and self._extensions is not None
        if self.extended:
            assert self._extensions is not None
            payload: dict[bytes, Any] = {
                b"m": {k.encode(): v for k, v in self._extensions.items()},
                b"v": self._client_name,
                b"reqq": self.limits.max_peer_requests,
            }
            self._queue(Extended(0, bencode(payload)))
        return hs

    def _message(self, body: bytes, now: float) -> Event | list[Event] | None:
        if not body:
            return KeepAlive()
        msg_id = body[0]
        payload = body[1:]
        first = self._first_message
        if msg_id in _ENDS_FIRST:
            self._first_message = False
        if msg_id in _FAST_IDS and not self.fast:
            raise self._violation(
                Violation.NOT_NEGOTIATED, f"fast-extension message {msg_id} not negotiated"
            )
        fixed = _FIXED_LENGTHS.get(msg_id)
        if fixed is not None and len(payload) != fixed:
            raise self._violation(
                Violation.BAD_LENGTH, f"message {msg_id} with {len(payload)} payload bytes"
            )
        if msg_id in _NO_PAYLOAD:
            return self._simple(msg_id, first)
        if msg_id == MsgId.HAVE:
            (index,) = struct.unpack(">I", payload)
            self._set_peer_has(self._index(index))
            return Have(index)
        if msg_id == MsgId.BITFIELD:
            return self._bitfield(payload, first)
        if msg_id == MsgId.REQUEST:
            return self._request(*_TRIPLE.unpack(payload))
        if msg_id == MsgId.PIECE:
            return self._piece(payload)
        if msg_id == MsgId.CANCEL:
            block = _TRIPLE.unpack(payload)
            self.peer_requests.pop(block, None)
            return Cancel(*block)
        if msg_id == MsgId.PORT:
            return Port(struct.unpack(">H", payload)[0])
        if msg_id == MsgId.SUGGEST_PIECE:
            return SuggestPiece(self._index(struct.unpack(">I", payload)[0]))
        if msg_id == MsgId.REJECT_REQUEST:
            block = _TRIPLE.unpack(payload)
            if self.our_requests.pop(block, None) is None:
                raise self._violation(Violation.BAD_REQUEST, "reject of a block we did not request")
            return RejectRequest(*block)
        if msg_id == MsgId.ALLOWED_FAST:
            index = struct.unpack(">I", payload)[0]
            if index < self.num_pieces:  # BEP 6: ignore out-of-range allowed-fast
                self.allowed_fast_in.add(index)
            return AllowedFast(index)
        if msg_id == MsgId.EXTENDED:
            return self._extended(payload)
        return None  # unknown ids are ignored (BEP 3)

    def _simple(self, msg_id: int, first: bool) -> Event | list[Event]:
        if msg_id == MsgId.CHOKE:
            self.peer_choking = True
            dropped: tuple[tuple[int, int, int], ...] = ()
            if not self.fast:
                dropped = tuple(self.our_requests)
                self.our_requests.clear()
            return Choke(dropped)
        if msg_id == MsgId.UNCHOKE:
            self.peer_choking = False
            return Unchoke()
        if msg_id == MsgId.INTERESTED:
            self.peer_interested = True
            return Interested()
        if msg_id == MsgId.NOT_INTERESTED:
            self.peer_interested = False
            return NotInterested()
        if not first:
            # Some clients (aria2) repeat their piece set later: accepted as
            # a batch of haves, but a peer never takes pieces back.
            return self._late_pieces(
                bytearray(b"\x01" * self.num_pieces)
                if msg_id == MsgId.HAVE_ALL
                else bytearray(self.num_pieces)
            )
        if msg_id == MsgId.HAVE_ALL:
            self.peer_pieces = bytearray(b"\x01" * self.num_pieces)
            self.peer_piece_count = self.num_pieces
            return HaveAll()
        return HaveNone()

    def _late_pieces(self, pieces: bytearray) -> list[Event]:
        if any(old and not new for old, new in zip(self.peer_pieces, pieces, strict=True)):
            raise self._violation(Violation.LATE_BITFIELD, "a later bitfield takes pieces back")
        added: list[Event] = []
        for i, (old, new) in enumerate(zip(self.peer_pieces, pieces, strict=True)):
            if new and not old:
                self._set_peer_has(i)
                added.append(Have(i))
        return added

    def _bitfield(self, payload: bytes, first: bool) -> Bitfield | list[Event]:
        n = self.num_pieces
        if len(payload) != (n + 7) // 8:
            raise self._violation(Violation.BAD_BITFIELD, "bitfield of the wrong length")
        spare = (8 - n % 8) % 8
        if spare and payload[-1] & ((1 << spare) - 1):
            raise self._violation(Violation.BAD_BITFIELD, "spare bits set in the bitfield")
        pieces = bytearray(n)
        count = 0
        for i in range(n):
            if payload[i >> 3] & (0x80 >> (i & 7)):
                pieces[i] = 1
                count += 1
        if not first:
            return self._late_pieces(pieces)
        self.peer_pieces = pieces
        self.peer_piece_count = count
        return Bitfield(payload)

    def _request(self, index: int, begin: int, length: int) -> Event | None:
        block = self._block(index, begin, length)
        if self.am_choking and index not in self.allowed_fast_out:
            if self.fast:
                self._queue(RejectRequest(*block))
            return None  # BEP 3: requests while choked are dropped
        if block in self.peer_requests:
            return None
        if len(self.peer_requests) >= self.limits.max_peer_requests:
            raise self._violation(Violation.TOO_MANY_REQUESTS, "request queue overflow")
        self.peer_requests[block] = None
        return Request(*block)

    def _piece(self, payload: bytes) -> Event | None:
        if len(payload) < 8:
            raise self._violation(Violation.BAD_LENGTH, "piece message too short")
        index, begin = struct.unpack_from(">II", payload)
        data = payload[8:]
        key = (index, begin, len(data))
        if self.our_requests.pop(key, None) is None:
            self._unrequested += 1
            if self._unrequested > self.limits.max_unrequested:
                raise self._violation(
                    Violation.UNREQUESTED_PIECE, "too many blocks we never asked for"
                )
            return None
        return Piece(index, begin, data)

    def _extended(self, payload: bytes) -> Event:
        if not self.extended:
            raise self._violation(Violation.NOT_NEGOTIATED, "extension message not negotiated")
        if not payload:
            raise self._violation(Violation.BAD_LENGTH, "empty extension message")
        ext_id, data = payload[0], payload[1:]
        if ext_id != 0:
            return Extended(ext_id, data)
        try:
            raw = bdecode(data, max_depth=8)
        except BencodeError as exc:
            raise self._violation(Violation.BAD_EXTENSION, f"extension handshake: {exc}") from None
        if not isinstance(raw, dict):
            raise self._violation(
                Violation.BAD_EXTENSION, "extension handshake is not a dictionary"
            )
        messages: dict[str, int] = {}
        m = raw.get(b"m", {})
        if isinstance(m, dict):
            for name, num in m.items():
                if isinstance(num, int) and 0 <= num <= 255:
                    messages[name.decode("utf-8", "replace")] = num
        v = raw.get(b"v")
        reqq = raw.get(b"reqq")
        port = raw.get(b"p")
        hs = ExtensionHandshake(
            messages=messages,
            client=v.decode("utf-8", "replace")[:64] if isinstance(v, bytes) else None,
            reqq=reqq if isinstance(reqq, int) and reqq > 0 else None,
            listen_port=port if isinstance(port, int) and 0 < port < 65536 else None,
            raw=raw,
        )
        self.remote_extensions = hs
        return hs

    # -- output --------------------------------------------------------------

    def _queue(self, msg: Message) -> None:
        self._out.append(encode_message(msg))

    def data_to_send(self, now: float) -> bytes:
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        self._last_sent = now
        self.bytes_sent += len(data)
        return data

    def _need_handshake(self) -> None:
        self._check_open()
        if self.remote is None:
            raise RuntimeError("send before the peer's handshake")

    def send_bitfield(self, have: bytes | bytearray) -> None:
        """Our pieces (one byte per piece, non-zero = have), as the first
        message: have-all / have-none when the fast extension allows."""
        self._need_handshake()
        if len(have) != self.num_pieces:
            raise ValueError("one entry per piece")
        count = sum(1 for b in have if b)
        if self.fast and count == self.num_pieces:
            self._queue(HaveAll())
        elif self.fast and count == 0:
            self._queue(HaveNone())
        elif count:
            bits = bytearray((self.num_pieces + 7) // 8)
            for i, b in enumerate(have):
                if b:
                    bits[i >> 3] |= 0x80 >> (i & 7)
            self._queue(Bitfield(bytes(bits)))

    def send_have(self, index: int) -> None:
        self._need_handshake()
        self._queue(Have(index))

    def send_choke(self) -> list[tuple[int, int, int]]:
        """Choke the peer; returns its queued requests that we drop
        (rejected explicitly under the fast extension)."""
        self._need_handshake()
        if self.am_choking:
            return []
        self.am_choking = True
        self._queue(Choke())
        dropped = [b for b in self.peer_requests if b[0] not in self.allowed_fast_out]
        for block in dropped:
            del self.peer_requests[block]
            if self.fast:
                self._queue(RejectRequest(*block))
        return dropped

    def send_unchoke(self) -> None:
        self._need_handshake()
        if self.am_choking:
            self.am_choking = False
            self._queue(Unchoke())

    def send_interested(self, interested: bool) -> None:
        self._need_handshake()
        if interested != self.am_interested:
            self.am_interested = interested
            self._queue(Interested() if interested else NotInterested())

    def send_request(self, index: int, begin: int, length: int, now: float) -> None:
        self._need_handshake()
        if not 0 <= index < self.num_pieces or not 0 < length <= BLOCK_SIZE:
            raise ValueError("bad block")
        if self.peer_choking and index not in self.allowed_fast_in:
            raise RuntimeError("the peer is choking us")
        key = (index, begin, length)
        if key not in self.our_requests:
            self.our_requests[key] = now
            self._queue(Request(*key))

    def send_cancel(self, index: int, begin: int, length: int) -> None:
        self._need_handshake()
        if self.our_requests.pop((index, begin, length), None) is not None:
            self._queue(Cancel(index, begin, length))

    def send_piece(self, index: int, begin: int, block: bytes) -> None:
        """Answer one of the peer's queued requests."""
        self._need_handshake()
        key = (index, begin, len(block))
        if key not in self.peer_requests:
            raise RuntimeError("no such request queued (cancelled?)")
        del self.peer_requests[key]
        self._queue(Piece(index, begin, block))

    def send_reject(self, index: int, begin: int, length: int) -> None:
        """Refuse one of the peer's queued requests (explicitly under BEP 6)."""
        self._need_handshake()
        key = (index, begin, length)
        if key in self.peer_requests:
            del self.peer_requests[key]
            if self.fast:
                self._queue(RejectRequest(*key))

    def send_allowed_fast(self, index: int) -> None:
        self._need_handshake()
        if self.fast and index not in self.allowed_fast_out:
            self.allowed_fast_out.add(index)
            self._queue(AllowedFast(index))

    def send_suggest(self, index: int) -> None:
        self._need_handshake()
        if self.fast:
            self._queue(SuggestPiece(index))

    def send_extended(self, name: str, payload: bytes) -> None:
        """Send an extension message by name, with the peer's id for it."""
        self._need_handshake()
        if self.remote_extensions is None or name not in self.remote_extensions.messages:
            raise RuntimeError(f"the peer does not support {name}")
        ext_id = self.remote_extensions.messages[name]
        if ext_id == 0:
            raise RuntimeError(f"the peer disabled {name}")
        self._queue(Extended(ext_id, payload))

    # -- time ----------------------------------------------------------------

    def next_deadline(self) -> float:
        if self.remote is None:
            return self._started + self.limits.handshake_timeout
        return min(
            self._last_sent + self.limits.keepalive_every,
            self._last_received + self.limits.idle_timeout,
        )

    def handle_timer(self, now: float) -> None:
        """Send a keep-alive when due; raise on a silent or slow peer."""
        self._check_open()
        if self.remote is None:
            if now >= self._started + self.limits.handshake_timeout:
                raise self._violation(Violation.IDLE, "no handshake in time")
            return
        if now >= self._last_received + self.limits.idle_timeout:
            raise self._violation(Violation.IDLE, "peer silent for too long")
        if now >= self._last_sent + self.limits.keepalive_every and not self._out:
            self._out.append(encode_message(KeepAlive()))

    def close(self) -> None:
        self.closed = True
        self._out.clear()


# Messages after which a bitfield / have-all / have-none is late. Extension,
# allowed-fast, suggest and DHT port messages may come before the bitfield.
_ENDS_FIRST: set[int] = {
    MsgId.CHOKE,
    MsgId.UNCHOKE,
    MsgId.INTERESTED,
    MsgId.NOT_INTERESTED,
    MsgId.HAVE,
    MsgId.BITFIELD,
    MsgId.REQUEST,
    MsgId.PIECE,
    MsgId.CANCEL,
    MsgId.HAVE_ALL,
    MsgId.HAVE_NONE,
    MsgId.REJECT_REQUEST,
}

_FIXED_LENGTHS: dict[int, int] = {
    MsgId.CHOKE: 0,
    MsgId.UNCHOKE: 0,
    MsgId.INTERESTED: 0,
    MsgId.NOT_INTERESTED: 0,
    MsgId.HAVE: 4,
    MsgId.REQUEST: 12,
    MsgId.CANCEL: 12,
    MsgId.PORT: 2,
    MsgId.SUGGEST_PIECE: 4,
    MsgId.HAVE_ALL: 0,
    MsgId.HAVE_NONE: 0,
    MsgId.REJECT_REQUEST: 12,
    MsgId.ALLOWED_FAST: 4,
}
