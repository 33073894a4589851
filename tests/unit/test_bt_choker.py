"""Choker (tit-for-tat, optimistic unchoke, seed mode) and super-seeding."""

from __future__ import annotations

import random

import pytest

from imsp2pd.bittorrent.choker import Choker, PeerRates, SuperSeeder


def rates(
    key: str, down: float = 0, up: float = 0, interested: bool = True, **kw: object
) -> PeerRates:
    return PeerRates(key, interested, down, up, **kw)  # type: ignore[arg-type]


def test_top_three_by_download_rate_plus_optimistic() -> None:
    c = Choker(rng=random.Random(1))
    peers = [rates(f"p{i}", down=i * 100) for i in range(8)]
    d = c.rechoke(0.0, peers, seeding=False)
    assert {"p7", "p6", "p5"} <= d.unchoked and len(d.unchoked) == 4
    assert d.optimistic in {"p0", "p1", "p2", "p3", "p4"} and d.optimistic in d.unchoked
    assert c.next_deadline() == 10.0


def test_uninterested_and_snubbed() -> None:
    c = Choker(rng=random.Random(1))
    peers = [
        rates("fast-but-uninterested", down=10_000, interested=False),
        rates("snubbed", down=5_000, snubbed=True),
        rates("a", down=10),
        rates("b", down=20),
        rates("c", down=30),
    ]
    d = c.rechoke(0.0, peers, seeding=False)
    assert "fast-but-uninterested" not in d.unchoked
    assert {"a", "b", "c"} <= d.unchoked  # snubbed ranks last; it may only be optimistic
    assert d.optimistic == "snubbed"


def test_optimistic_rotates_every_30s() -> None:
    c = Choker(rng=random.Random(7))
    peers = [rates(f"p{i}", down=1000 if i < 3 else 0) for i in range(20)]
    first = c.rechoke(0.0, peers, seeding=False).optimistic
    assert c.rechoke(10.0, peers, seeding=False).optimistic == first
    assert c.rechoke(20.0, peers, seeding=False).optimistic == first
    seen = {first}
    for t in range(30, 600, 30):
        seen.add(c.rechoke(float(t), peers, seeding=False).optimistic)
    assert len(seen) > 3


def test_optimistic_replaced_when_it_leaves() -> None:
    c = Choker(rng=random.Random(2))
    peers = [rates(f"p{i}", down=1000 if i < 3 else 0) for i in range(6)]
    opt = c.rechoke(0.0, peers, seeding=False).optimistic
    remaining = [p for p in peers if p.key != opt]
    d = c.rechoke(10.0, remaining, seeding=False)
    assert d.optimistic not in (None, opt) and len(d.unchoked) == 4


def test_new_peers_favoured_for_optimistic() -> None:
    c = Choker(rng=random.Random(3))
    counts = {"old": 0, "new": 0}
    for t in range(0, 30 * 400, 30):
        now = 1000.0 + t
        peers = [rates("r1", down=9), rates("r2", down=9), rates("r3", down=9)]
        peers += [rates("old", connected_at=0.0), rates("new", connected_at=now)]
        counts[str(c.rechoke(now, peers, seeding=False).optimistic)] += 1
    assert counts["new"] > 2 * counts["old"]


def test_seed_mode_ranks_by_upload_and_rotates_ties() -> None:
    c = Choker(rng=random.Random(1))
    peers = [rates(f"p{i}", up=500 * i, down=0) for i in range(6)]
    d = c.rechoke(0.0, peers, seeding=True)
    assert {"p5", "p4", "p3"} <= d.unchoked
    # Equal peers: the regular slots go to those unchoked longest ago.
    c = Choker(slots=2, rng=random.Random(1))
    same = [rates(f"q{i}") for i in range(4)]
    seen: set[object] = set()
    for t in range(0, 200, 10):
        seen |= c.rechoke(float(t), same, seeding=True).unchoked
    assert seen == {"q0", "q1", "q2", "q3"}


def test_few_peers_all_unchoked() -> None:
    c = Choker()
    d = c.rechoke(0.0, [rates("a"), rates("b")], seeding=False)
    assert d.unchoked == {"a", "b"}
    assert c.rechoke(10.0, [], seeding=False).unchoked == frozenset()
    with pytest.raises(ValueError):
        Choker(slots=0)


# -- super-seeding -------------------------------------------------------------


def test_super_seeder_offers_distinct_pieces() -> None:
    s = SuperSeeder(8, rng=random.Random(1))
    offers = [s.peer_connected(f"p{i}") for i in range(8)]
    assert sorted(offers) == list(range(8))  # type: ignore[type-var]
    assert s.may_serve("p0", offers[0]) and not s.may_serve("p0", offers[1])  # type: ignore[arg-type]
    s.peer_gone("p7")
    assert not s.may_serve("p7", offers[7])  # type: ignore[arg-type]


def test_super_seeder_next_piece_only_after_it_spread() -> None:
    s = SuperSeeder(4, rng=random.Random(1))
    a = s.peer_connected("a")
    b = s.peer_connected("b")
    assert a is not None and b is not None and a != b
    assert s.have("a", a) == {}  # a has its piece, but nobody else yet
    assert s.have("b", a) == {"a": s.offered["a"]}  # b got it from a: a goes on
    assert s.offered["a"] not in (a, None)
    assert s.have("b", 99) == {} and s.have("zz", 0) == {}


def test_super_seeder_lonely_peer_goes_on() -> None:
    s = SuperSeeder(3, rng=random.Random(1))
    first = s.peer_connected("solo")
    assert first is not None
    got = s.have("solo", first)
    assert set(got) == {"solo"} and got["solo"] != first
    second = got["solo"]
    third = s.have("solo", second)["solo"]
    assert s.have("solo", third) == {}  # nothing left to offer
    assert s.offered["solo"] is None


def test_super_seeder_prefers_rare_pieces_and_skips_owned() -> None:
    s = SuperSeeder(3, rng=random.Random(1))
    s.peer_connected("x", [1, 1, 0])
    assert s.offered["x"] == 2
    # Every piece y lacks is out or held: y waits instead of a second upload.
    assert s.peer_connected("y", [1, 0, 0]) is None
    assert s.peer_connected("z", [0, 0, 0]) is None
    # x announces piece 2: nothing is in flight any more, the waiting peers go on.
    offers = s.have("x", 2)
    assert set(offers) == {"y", "z"}
    assert offers["y"] in (1, 2) and offers["z"] in (0, 1, 2)


def test_super_seeder_peer_leaving_with_an_offer_releases_it() -> None:
    s = SuperSeeder(1, rng=random.Random(1))
    assert s.peer_connected("a") == 0
    assert s.peer_connected("b") is None  # the only piece is in flight to a
    assert s.peer_gone("a") == {"b": 0}
    assert s.may_serve("b", 0)
