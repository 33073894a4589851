"""Peer-wire state machine: a paired harness, every violation, fuzzing."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd.bittorrent.bencoding import bdecode, bencode
from imsp2pd.bittorrent.peerwire import (
    BLOCK_SIZE,
    PROTOCOL,
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    Extended,
    ExtensionHandshake,
    Handshake,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    Limits,
    NotInterested,
    PeerConnection,
    PeerProtocolError,
    Piece,
    RejectRequest,
    Request,
    Unchoke,
    Violation,
    encode_handshake,
    encode_message,
    parse_handshake,
)

IH = b"I" * 20
A_ID = b"-IM0001-aaaaaaaaaaaa"
B_ID = b"-IM0001-bbbbbbbbbbbb"
SIZES = (10, 4 * BLOCK_SIZE, 9 * 4 * BLOCK_SIZE + 100)  # last piece is 100 bytes


def make(
    peer_id: bytes = A_ID, fast: bool = True, ext: dict[str, int] | None = None, **kw: object
) -> PeerConnection:
    return PeerConnection(IH, peer_id, SIZES, 0.0, fast=fast, extensions=ext, **kw)  # type: ignore[arg-type]


def pump(
    a: PeerConnection, b: PeerConnection, now: float = 0.0
) -> tuple[list[object], list[object]]:
    """Move bytes both ways until quiet; returns (events at a, events at b)."""
    ea: list[object] = []
    eb: list[object] = []
    while True:
        da, db = a.data_to_send(now), b.data_to_send(now)
        if not da and not db:
            return ea, eb
        eb += b.receive_data(da, now)
        ea += a.receive_data(db, now)


def pair(
    fast_a: bool = True, fast_b: bool = True, ext: bool = False
) -> tuple[PeerConnection, PeerConnection]:
    exts = {"ut_metadata": 3} if ext else None
    a, b = make(A_ID, fast_a, exts), make(B_ID, fast_b, exts)
    ea, eb = pump(a, b)
    assert isinstance(ea[0], Handshake) and ea[0].peer_id == B_ID
    assert isinstance(eb[0], Handshake) and eb[0].peer_id == A_ID
    return a, b


def raw_peer(reserved: bytes = bytes(8), peer_id: bytes = B_ID) -> bytes:
    return encode_handshake(Handshake(IH, peer_id, reserved))


FAST = bytes(7) + b"\x04"


def test_handshake_and_negotiation() -> None:
    a, b = pair()
    assert a.fast and b.fast and not a.extended
    a, b = pair(fast_b=False)
    assert not a.fast and not b.fast
    hs = parse_handshake(raw_peer(FAST))
    assert hs == Handshake(IH, B_ID, FAST) and hs.supports_fast and not hs.supports_extensions


def test_extension_handshake() -> None:
    a, b = make(A_ID, ext={"ut_metadata": 3}, client_name="us 1.0"), make(B_ID, ext={"ut_pex": 1})
    ea, eb = pump(a, b)
    [ext_a] = [e for e in ea if isinstance(e, ExtensionHandshake)]
    [ext_b] = [e for e in eb if isinstance(e, ExtensionHandshake)]
    assert ext_a.messages == {"ut_pex": 1} and ext_b.messages == {"ut_metadata": 3}
    assert ext_b.client == "us 1.0" and ext_b.reqq == 500
    a.send_extended("ut_pex", b"d1:ai1ee")
    _, eb = pump(a, b)
    assert eb == [Extended(1, b"d1:ai1ee")]
    with pytest.raises(RuntimeError):
        a.send_extended("ut_metadata", b"")


def test_full_exchange() -> None:
    a, b = pair()
    have = bytearray(10)
    have[0] = have[9] = 1
    b.send_bitfield(have)
    a.send_bitfield(bytearray(10))
    ea, eb = pump(a, b)
    assert ea == [Bitfield(bytes([0x80, 0x40]))] and eb == [HaveNone()]
    assert a.peer_pieces[0] and a.peer_pieces[9] and a.peer_piece_count == 2
    a.send_interested(True)
    a.send_interested(True)  # no duplicate
    _, eb = pump(a, b)
    assert eb == [Interested()] and b.peer_interested
    b.send_unchoke()
    ea, _ = pump(a, b)
    assert ea == [Unchoke()] and not a.peer_choking
    a.send_request(9, 0, 100, 1.0)
    a.send_request(0, 0, BLOCK_SIZE, 1.0)
    _, eb = pump(a, b)
    assert eb == [Request(9, 0, 100), Request(0, 0, BLOCK_SIZE)]
    b.send_piece(9, 0, b"x" * 100)
    ea, _ = pump(a, b)
    assert ea == [Piece(9, 0, b"x" * 100)] and list(a.our_requests) == [(0, 0, BLOCK_SIZE)]
    a.send_cancel(0, 0, BLOCK_SIZE)
    _, eb = pump(a, b)
    assert eb == [Cancel(0, 0, BLOCK_SIZE)] and not b.peer_requests
    with pytest.raises(RuntimeError):
        b.send_piece(0, 0, b"y" * BLOCK_SIZE)  # cancelled
    b.send_have(3)
    ea, _ = pump(a, b)
    assert ea == [Have(3)] and a.peer_piece_count == 3
    a.send_interested(False)
    _, eb = pump(a, b)
    assert eb == [NotInterested()]


def test_have_all_and_seed() -> None:
    a, b = pair()
    b.send_bitfield(bytearray(b"\x01" * 10))
    ea, _ = pump(a, b)
    assert ea == [HaveAll()] and a.peer_is_seed
    a, b = pair(fast_b=False)
    b.send_bitfield(bytearray(b"\x01" * 10))
    ea, _ = pump(a, b)
    assert ea == [Bitfield(b"\xff\xc0")] and a.peer_is_seed


def test_choke_without_fast_drops_requests() -> None:
    a, b = pair(fast_a=False)
    b.send_unchoke()
    pump(a, b)
    a.send_request(1, 0, BLOCK_SIZE, 0.0)
    pump(a, b)
    b.send_choke()
    ea, _ = pump(a, b)
    assert ea == [Choke(((1, 0, BLOCK_SIZE),))] and not a.our_requests and not b.peer_requests
    with pytest.raises(RuntimeError):
        a.send_request(1, 0, BLOCK_SIZE, 0.0)


def test_fast_choke_rejects_each_request_and_allowed_fast() -> None:
    a, b = pair()
    b.send_unchoke()
    pump(a, b)
    a.send_request(1, 0, BLOCK_SIZE, 0.0)
    a.send_request(2, 0, BLOCK_SIZE, 0.0)
    pump(a, b)
    b.send_allowed_fast(2)
    assert b.send_choke() == [(1, 0, BLOCK_SIZE)]
    ea, _ = pump(a, b)
    assert ea == [AllowedFast(2), Choke(), RejectRequest(1, 0, BLOCK_SIZE)]
    assert list(a.our_requests) == [(2, 0, BLOCK_SIZE)]
    # While choked: allowed-fast pieces may still be requested; others are rejected.
    a.send_request(2, BLOCK_SIZE, BLOCK_SIZE, 0.0)
    a.our_requests[(3, 0, BLOCK_SIZE)] = 0.0  # pretend we sent one anyway
    a._out.append(encode_message(Request(3, 0, BLOCK_SIZE)))
    ea, eb = pump(a, b)
    assert eb == [Request(2, BLOCK_SIZE, BLOCK_SIZE)]
    assert ea == [RejectRequest(3, 0, BLOCK_SIZE)]
    b.send_reject(2, 0, BLOCK_SIZE)
    ea, _ = pump(a, b)
    assert ea == [RejectRequest(2, 0, BLOCK_SIZE)]


def test_keepalive_and_idle_timer() -> None:
    a, b = pair()
    assert a.next_deadline() == 120.0
    a.handle_timer(120.0)
    assert a.data_to_send(120.0) == b"\x00\x00\x00\x00"
    assert b.receive_data(b"\x00\x00\x00\x00", 120.0) == [KeepAlive()]
    with pytest.raises(PeerProtocolError) as info:
        a.handle_timer(240.0)
    assert info.value.code is Violation.IDLE
    c = make()
    assert c.next_deadline() == 30.0
    with pytest.raises(PeerProtocolError):
        c.handle_timer(30.0)


def connected(fast: bool = True, **kw: Any) -> PeerConnection:
    c = make(**kw)
    c.receive_data(raw_peer(FAST if fast else bytes(8)), 0.0)
    c.data_to_send(0.0)
    return c


def msg(msg_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", len(payload) + 1, msg_id) + payload


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x13BitTorrent protocoX", Violation.BAD_HANDSHAKE),
        (b"GET / HTTP/1.1\r\n", Violation.BAD_HANDSHAKE),
        (PROTOCOL + bytes(8) + b"J" * 20 + B_ID, Violation.WRONG_INFO_HASH),
        (PROTOCOL + bytes(8) + IH + A_ID, Violation.SELF_CONNECTION),
    ],
)
def test_bad_handshakes(data: bytes, code: Violation) -> None:
    c = make()
    with pytest.raises(PeerProtocolError) as info:
        c.receive_data(data, 0.0)
    assert info.value.code is code and c.closed
    with pytest.raises(PeerProtocolError) as again:
        c.receive_data(b"", 0.0)
    assert again.value.code is Violation.CLOSED


def test_expected_peer_id() -> None:
    c = make(expected_peer_id=b"-XX0000-cccccccccccc")
    with pytest.raises(PeerProtocolError) as info:
        c.receive_data(raw_peer(), 0.0)
    assert info.value.code is Violation.WRONG_PEER_ID


@pytest.mark.parametrize(
    ("data", "code", "fast"),
    [
        (struct.pack(">I", BLOCK_SIZE + 14) + b"\x07", Violation.MESSAGE_TOO_LONG, True),
        (struct.pack(">I", 1 << 24), Violation.MESSAGE_TOO_LONG, True),
        (struct.pack(">I", 100) + b"\x04", Violation.MESSAGE_TOO_LONG, True),
        (msg(4, b"\x00\x00\x00"), Violation.BAD_LENGTH, True),
        (msg(0, b"\x00"), Violation.MESSAGE_TOO_LONG, True),
        (msg(4, struct.pack(">I", 10)), Violation.BAD_INDEX, True),
        (msg(5, b"\xff"), Violation.BAD_BITFIELD, True),
        (msg(5, b"\xff\xff"), Violation.BAD_BITFIELD, True),
        (msg(4, bytes(4)) + msg(0x0F), Violation.LATE_BITFIELD, True),
        (msg(0x0E) + msg(5, b"\x00\x00"), Violation.LATE_BITFIELD, True),
        (msg(5, b"\xc0\x00") + msg(5, b"\x40\x00"), Violation.LATE_BITFIELD, True),
        (msg(0x0E), Violation.NOT_NEGOTIATED, False),
        (msg(0x11, bytes(4)), Violation.NOT_NEGOTIATED, False),
        (msg(20, b"\x00de"), Violation.NOT_NEGOTIATED, True),
        (msg(6, struct.pack(">III", 0, 0, BLOCK_SIZE + 1)), Violation.BAD_REQUEST, True),
        (msg(6, struct.pack(">III", 9, 0, 101)), Violation.BAD_REQUEST, True),
        (msg(6, struct.pack(">III", 0, 4 * BLOCK_SIZE - 10, 100)), Violation.BAD_REQUEST, True),
        (msg(6, struct.pack(">III", 0, 0, 0)), Violation.BAD_REQUEST, True),
        (msg(6, struct.pack(">III", 11, 0, 10)), Violation.BAD_INDEX, True),
        (msg(0x10, struct.pack(">III", 0, 0, 10)), Violation.BAD_REQUEST, True),
        (msg(7, b"\x00"), Violation.BAD_LENGTH, True),
        (msg(0x0D, struct.pack(">I", 99)), Violation.BAD_INDEX, True),
    ],
)
def test_violations(data: bytes, code: Violation, fast: bool) -> None:
    c = connected(fast)
    with pytest.raises(PeerProtocolError) as info:
        c.receive_data(data, 1.0)
    assert info.value.code is code, info.value
    assert c.closed and c.data_to_send(1.0) == b""


def test_late_bitfield_is_a_batch_of_haves() -> None:
    # aria2 sends have-none first and a full bitfield later.
    c = connected()
    events = c.receive_data(msg(0x0F) + msg(2) + msg(5, b"\xa0\x00") + msg(0x0E), 0.0)
    assert events == [HaveNone(), Interested(), Have(0), Have(2)] + [
        Have(i) for i in (1, 3, 4, 5, 6, 7, 8, 9)
    ]
    assert c.peer_is_seed
    assert c.receive_data(msg(0x0E) + msg(5, b"\xff\xc0"), 0.0) == []


def test_extension_violations() -> None:
    c = make(ext={"ut_pex": 1})
    c.receive_data(raw_peer(bytes(5) + b"\x10" + bytes(2)), 0.0)
    with pytest.raises(PeerProtocolError) as info:
        c.receive_data(msg(20, b"\x00" + b"not bencode"), 0.0)
    assert info.value.code is Violation.BAD_EXTENSION
    c = make(ext={"ut_pex": 1})
    c.receive_data(raw_peer(bytes(5) + b"\x10" + bytes(2)), 0.0)
    with pytest.raises(PeerProtocolError):
        c.receive_data(msg(20), 0.0)
    c = make(ext={"ut_pex": 1})
    c.receive_data(raw_peer(bytes(5) + b"\x10" + bytes(2)), 0.0)
    [hs] = c.receive_data(
        msg(20, b"\x00" + bencode({b"m": {b"x": 300, b"y": 2}, b"p": 70000, b"reqq": -1})), 0.0
    )
    assert isinstance(hs, ExtensionHandshake) and hs.messages == {"y": 2}
    assert hs.listen_port is None and hs.reqq is None


def test_request_while_choked_is_dropped_without_fast() -> None:
    c = connected(fast=False)
    assert c.receive_data(msg(6, struct.pack(">III", 0, 0, BLOCK_SIZE)), 0.0) == []
    assert c.data_to_send(0.0) == b"" and not c.peer_requests


def test_request_flood_disconnects() -> None:
    c = connected(limits=Limits(max_peer_requests=3))
    c.send_unchoke()
    reqs = b"".join(msg(6, struct.pack(">III", i, 0, BLOCK_SIZE)) for i in range(4))
    with pytest.raises(PeerProtocolError) as info:
        c.receive_data(reqs, 0.0)
    assert info.value.code is Violation.TOO_MANY_REQUESTS


def test_unrequested_pieces_tolerated_then_disconnect() -> None:
    c = connected(limits=Limits(max_unrequested=2))
    block = msg(7, struct.pack(">II", 0, 0) + b"x" * 10)
    assert c.receive_data(block + block, 0.0) == []
    with pytest.raises(PeerProtocolError) as info:
        c.receive_data(block, 0.0)
    assert info.value.code is Violation.UNREQUESTED_PIECE


def test_unknown_ids_are_ignored_and_messages_split_anywhere() -> None:
    c = connected()
    data = msg(99, b"abc") + msg(2) + msg(9, b"\x1a\xe1") + msg(4, struct.pack(">I", 5))
    events: list[object] = []
    for i in range(len(data)):
        events += c.receive_data(data[i : i + 1], 0.0)
    assert events[0] == Interested() and events[-1] == Have(5)
    assert len(events) == 3


def test_large_bitfield_allowed() -> None:
    n = 200_000
    c = PeerConnection(IH, A_ID, (n, BLOCK_SIZE, n * BLOCK_SIZE), 0.0)
    c.receive_data(raw_peer(FAST), 0.0)
    [bf] = c.receive_data(msg(5, b"\xff" * (n // 8)), 0.0)
    assert isinstance(bf, Bitfield) and c.peer_is_seed


def test_send_guards() -> None:
    c = make()
    with pytest.raises(RuntimeError):
        c.send_have(0)
    c = connected()
    with pytest.raises(ValueError):
        c.send_bitfield(bytearray(3))
    with pytest.raises(ValueError):
        c.send_request(0, 0, BLOCK_SIZE + 1, 0.0)
    with pytest.raises(TypeError):
        encode_message("nope")  # type: ignore[arg-type]
    c.close()
    with pytest.raises(PeerProtocolError):
        c.send_have(0)
    with pytest.raises(ValueError):
        PeerConnection(b"x", A_ID, SIZES, 0.0)


def test_bencoded_extension_payload_round_trip() -> None:
    a, b = pair(ext=True)
    assert (
        a.remote_extensions is not None
        and bdecode(bencode(a.remote_extensions.raw))[b"reqq"] == 500
    )


@settings(max_examples=300)
@given(st.binary(max_size=400), st.booleans())
def test_never_raises_anything_else(data: bytes, fast: bool) -> None:
    c = make(ext={"ut_pex": 1})
    try:
        c.receive_data(raw_peer(FAST if fast else bytes(8)) + data, 0.0)
    except PeerProtocolError:
        pass


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 25), st.binary(max_size=16)), max_size=12))
def test_framed_garbage_never_raises_anything_else(frames: list[tuple[int, bytes]]) -> None:
    c = make(ext={"ut_pex": 1})
    data = raw_peer(FAST + b"") + b"".join(msg(i, p) for i, p in frames)
    try:
        c.receive_data(data, 0.0)
    except PeerProtocolError:
        pass
