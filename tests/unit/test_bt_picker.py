"""Piece picker: random first, rarest first, sequential, endgame, failures."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd.bittorrent.peerwire import BLOCK_SIZE
from imsp2pd.bittorrent.picker import PiecePicker

PL = 4 * BLOCK_SIZE


def picker(n: int = 10, last: int = PL, **kw: object) -> PiecePicker:
    return PiecePicker(n, PL, (n - 1) * PL + last, rng=random.Random(3), **kw)  # type: ignore[arg-type]


ALL = [1] * 10


def test_blocks_geometry() -> None:
    p = picker(2, last=BLOCK_SIZE + 5)
    blocks = p.pick("a", [1, 1], 100)
    expected = [
        *[(0, i * BLOCK_SIZE, BLOCK_SIZE) for i in range(4)],
        (1, 0, BLOCK_SIZE),
        (1, BLOCK_SIZE, 5),
    ]
    assert sorted(blocks) == expected
    assert p.pick("a", [1, 1], 100) == []  # everything is in flight from a


def test_finishes_started_pieces_first() -> None:
    p = picker()
    first = p.pick("a", ALL, 2)
    assert len({b[0] for b in first}) == 1
    nxt = p.pick("b", ALL, 2)
    assert {b[0] for b in nxt} == {first[0][0]}  # same piece continued by another peer


def test_rarest_first_after_random_first() -> None:
    p = picker(random_first=0)
    p.add_peer_pieces(ALL)
    p.add_peer_pieces([1] * 9 + [0])
    p.add_peer_pieces([1] * 5 + [0] * 5)
    # pieces 5..8 have availability 2, piece 9 has 1 -> rarest is 9
    assert p.pick("a", ALL, 1)[0][0] == 9
    p2 = picker(random_first=0)
    p2.add_peer_pieces([1] * 9 + [0])
    p2.add_peer_pieces([1] * 5 + [0] * 5)
    p2.add_have(7)
    blocks = p2.pick("a", [1] * 9 + [0], 4)
    assert blocks[0][0] in (5, 6, 8)


def test_random_first_varies() -> None:
    firsts = set()
    for seed in range(20):
        p = PiecePicker(10, PL, 10 * PL, rng=random.Random(seed))
        p.add_peer_pieces([1] * 9 + [0])
        p.add_peer_pieces([1] * 10)
        firsts.add(p.pick("a", ALL, 1)[0][0])
    assert len(firsts) > 3  # not rarest (9) every time


def test_sequential() -> None:
    p = picker(sequential=True)
    got = [p.pick("a", ALL, 4)[0][0] for _ in range(3)]
    assert got == [0, 1, 2]
    p.piece_verified(5)
    assert p.pick("b", [0, 0, 0, 0, 0, 1, 1, 1, 1, 1], 1)[0][0] == 6


def test_only_pieces_the_peer_has_and_allowed_fast() -> None:
    p = picker()
    peer = [0] * 10
    peer[4] = 1
    assert {b[0] for b in p.pick("a", peer, 100)} == {4}
    p = picker()
    assert {b[0] for b in p.pick("a", ALL, 100, allowed={2, 7, 99})} == {2, 7}


def test_receive_complete_verify() -> None:
    p = picker(1)
    blocks = p.pick("a", [1], 10)
    assert len(blocks) == 4 and p.outstanding("a") == 4
    for i, blk in enumerate(blocks):
        r = p.block_received("a", blk)
        assert r.accepted and r.piece_complete == (i == 3)
    assert not p.block_received("a", blocks[0]).accepted
    p.piece_verified(0)
    assert p.complete and p.have_count == 1 and p.pick("a", [1], 10) == []
    assert not p.block_received("a", (0, 0, BLOCK_SIZE)).accepted
    assert not p.block_received("a", (0, 5, BLOCK_SIZE)).accepted


def test_failed_piece_returns_sources_and_restarts() -> None:
    p = picker(1)
    blocks = p.pick("a", [1], 2) + p.pick("b", [1], 2)
    for blk in blocks[:2]:
        p.block_received("a", blk)
    for blk in blocks[2:]:
        p.block_received("b", blk)
    assert p.piece_failed(0) == {"a", "b"}
    assert len(p.pick("c", [1], 10)) == 4
    assert p.piece_failed(5) == set()


def test_dropped_and_gone_free_blocks() -> None:
    p = picker(1)
    blocks = p.pick("a", [1], 4)
    p.request_dropped("a", blocks[0])
    assert p.pick("b", [1], 4) == [blocks[0]]
    p.peer_gone("b", [1])
    assert p.availability[0] == 0
    assert p.pick("c", [1], 4) == [blocks[0]]


def test_endgame_duplicates_and_cancels() -> None:
    p = picker(1, endgame_dup=2)
    blocks = p.pick("a", [1], 4)
    assert p.in_endgame()
    dup = p.pick("b", [1], 4)
    assert sorted(dup) == sorted(blocks)
    assert p.pick("c", [1], 4) == []  # at most two copies in flight
    r = p.block_received("b", blocks[0])
    assert r.accepted and r.cancel == ("a",)
    assert not p.block_received("a", blocks[0]).accepted
    assert p.outstanding("a") == 3


def test_not_endgame_while_pieces_unstarted() -> None:
    p = picker(3)
    p.pick("a", [1, 0, 0], 10)
    assert not p.in_endgame()
    assert p.pick("b", [1, 0, 0], 10) == []


def test_wanted_from_and_have() -> None:
    p = picker(3, have=[1, 0, 1])
    assert p.have_count == 2
    assert p.wanted_from([0, 1, 0]) and not p.wanted_from([1, 0, 1])
    with pytest.raises(ValueError):
        picker(3, have=[1])


@settings(max_examples=60)
@given(st.integers(0, 2**32), st.integers(1, 12), st.integers(1, 4 * BLOCK_SIZE))
def test_random_swarm_always_completes(seed: int, n: int, last: int) -> None:
    """Peers with random pieces, random drops and duplicates: every piece
    is finished exactly once and no block is lost."""
    rng = random.Random(seed)
    p = PiecePicker(n, PL, (n - 1) * PL + last, rng=random.Random(seed))
    peers = {f"p{k}": [1 if rng.random() < 0.6 else 0 for _ in range(n)] for k in range(4)}
    peers["seed"] = [1] * n
    for bits in peers.values():
        p.add_peer_pieces(bits)
    inflight: list[tuple[str, tuple[int, int, int]]] = []
    for _ in range(10_000):
        if p.complete:
            break
        name = rng.choice(list(peers))
        inflight += [(name, b) for b in p.pick(name, peers[name], rng.randint(1, 6))]
        rng.shuffle(inflight)
        for _ in range(rng.randint(0, len(inflight))):
            who, blk = inflight.pop()
            if rng.random() < 0.1:
                p.request_dropped(who, blk)
                continue
            r = p.block_received(who, blk)
            if r.piece_complete:
                if rng.random() < 0.05:
                    p.piece_failed(blk[0])
                else:
                    p.piece_verified(blk[0])
    assert p.complete and not p.partial
