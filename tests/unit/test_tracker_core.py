"""The sans-IO tracker: parsing, admission, muting, revocation, peer tables."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd.bittorrent.bencoding import bdecode
from imsp2pd.bittorrent.tracker import (
    AnnounceEvent,
    FailureCode,
    SwarmState,
    Tracker,
    TrackerConfig,
    TrackerFailure,
    parse_announce,
    parse_scrape,
)
from imsp2pd.entitlement import Issuer, Verifier

KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
ISSUER = Issuer(KEY)
IH = bytes(range(20))
IH2 = bytes(range(1, 21))
NOW = 1_800_000_000
DOI = "10.5555/imsp2p.1"


def tok(
    role: str = "consumer",
    user: str = "alice",
    ih: bytes = IH,
    not_after: int = NOW + 3600,
    token_id: str | None = None,
) -> str:
    return ISSUER.issue_tracker(f"sip:{user}@ims.example.org", ih, role, not_after, token_id)


def query(
    token: str | None,
    *,
    ih: bytes = IH,
    peer: int = 1,
    port: int = 6881,
    left: int = 100,
    event: str = "",
    compact: int | None = 1,
    numwant: int | None = None,
    uploaded: int = 0,
    downloaded: int = 0,
    extra: str = "",
) -> bytes:
    parts = [
        "info_hash=" + quote_from_bytes(ih),
        "peer_id=" + quote_from_bytes(b"-IM0001-" + peer.to_bytes(12, "big")),
        f"port={port}",
        f"uploaded={uploaded}",
        f"downloaded={downloaded}",
        f"left={left}",
    ]
    if event:
        parts.append("event=" + event)
    if compact is not None:
        parts.append(f"compact={compact}")
    if numwant is not None:
        parts.append(f"numwant={numwant}")
    if token is not None:
        parts.append("token=" + token)
    if extra:
        parts.append(extra)
    return "&".join(parts).encode()


class Revoked:
    def __init__(self) -> None:
        self.users: set[str] = set()
        self.tokens: set[str] = set()
        self.dois: set[str] = set()

    def is_revoked(self, impu: str, token_id: str, doi: str | None) -> bool:
        return impu in self.users or token_id in self.tokens or doi in self.dois


@pytest.fixture
def revoked() -> Revoked:
    return Revoked()


@pytest.fixture
def tracker(revoked: Revoked) -> Tracker:
    t = Tracker(
        Verifier(KEY.public_key()),
        TrackerConfig(interval=120, min_interval=30, peer_expiry=300),
        revocations=revoked,
        rng=random.Random(1),
    )
    t.register(IH, DOI, SwarmState.ACTIVE)
    return t


def announce(t: Tracker, q: bytes, ip: str = "127.0.0.1", now: float = NOW) -> dict[bytes, Any]:
    result = bdecode(t.announce(parse_announce(q, ip), now))
    assert isinstance(result, dict)
    return result


def compact_ports(body: dict[bytes, Any]) -> list[int]:
    raw = body[b"peers"]
    assert isinstance(raw, bytes) and len(raw) % 6 == 0
    return sorted(int.from_bytes(raw[i + 4 : i + 6], "big") for i in range(0, len(raw), 6))


# -- parsing -----------------------------------------------------------------


def test_parse_announce() -> None:
    req = parse_announce(
        query("T", event="started", numwant=5, extra="ip=1.2.3.4&key=abc"), "::ffff:10.0.0.1"
    )
    assert req.info_hash == IH and req.port == 6881 and req.left == 100
    assert req.event is AnnounceEvent.STARTED and req.compact and req.numwant == 5
    assert req.ip == "10.0.0.1"  # mapped address normalised, ip= ignored
    assert req.token == "T" and req.key == b"abc"
    assert parse_announce(query(None, compact=None), "::1").compact is True


@pytest.mark.parametrize(
    "q",
    [
        b"peer_id=" + b"a" * 20 + b"&port=1",
        query("T", ih=b"short"),
        query("T").replace(b"port=6881", b"port=0"),
        query("T").replace(b"port=6881", b"port=70000"),
        query("T").replace(b"port=6881", b"port=-1"),
        query("T").replace(b"left=100", b"left=1e3"),
        query("T", event="exploded"),
        query("T", compact=2),
        query("T") + b"&port=1",
        query("T") + b"&x" * 70,
        b"a=" + b"x" * 9000,
        query("%FF"),
    ],
)
def test_parse_announce_refuses(q: bytes) -> None:
    with pytest.raises(TrackerFailure):
        parse_announce(q, "127.0.0.1")


def test_parse_announce_refuses_bad_remote() -> None:
    with pytest.raises(TrackerFailure):
        parse_announce(query("T"), "not-an-ip")


@settings(max_examples=300)
@given(st.binary(max_size=300), st.sampled_from(["127.0.0.1", "::1", "x"]))
def test_parse_never_raises_anything_else(q: bytes, ip: str) -> None:
    for parse in (lambda: parse_announce(q, ip), lambda: parse_scrape(q)):
        try:
            parse()
        except TrackerFailure:
            pass


def test_parse_scrape() -> None:
    q = (
        b"info_hash="
        + quote_from_bytes(IH).encode()
        + b"&info_hash="
        + quote_from_bytes(IH2).encode()
        + b"&token=T"
    )
    req = parse_scrape(q)
    assert req.info_hashes == (IH, IH2) and req.token == "T"
    with pytest.raises(TrackerFailure):
        parse_scrape(b"info_hash=abc")
    with pytest.raises(TrackerFailure):
        parse_scrape(b"token=a&token=b")


# -- admission ---------------------------------------------------------------


def test_compact_announce_and_counts(tracker: Tracker) -> None:
    body = announce(tracker, query(tok(), peer=1, port=1001, event="started"))
    assert body[b"interval"] == 120 and body[b"min interval"] == 30
    assert body[b"peers"] == b"" and body[b"incomplete"] == 1 and body[b"complete"] == 0
    body = announce(tracker, query(tok(user="bob"), peer=2, port=1002, left=0, event="started"))
    assert compact_ports(body) == [1001]
    assert (body[b"complete"], body[b"incomplete"]) == (1, 1)
    # A seed is not sent seeds; a leecher gets everyone else.
    announce(tracker, query(tok(user="carol", role="provider"), peer=3, port=1003, left=0))
    assert compact_ports(announce(tracker, query(tok(user="bob"), peer=2, port=1002, left=0))) == [
        1001
    ]
    assert compact_ports(announce(tracker, query(tok(), peer=1, port=1001))) == [1002, 1003]
    assert (
        bytes(announce(tracker, query(tok(), peer=1, port=1001))[b"peers"])[:4]
        == b"\x7f\x00\x00\x01"
    )


def test_same_ip_different_ports_are_different_peers(tracker: Tracker) -> None:
    for port in range(2000, 2010):
        announce(tracker, query(tok(), peer=7, port=port))
    assert tracker.peer_count == 10


def test_dictionary_form_and_no_peer_id(tracker: Tracker) -> None:
    announce(tracker, query(tok(), peer=1, port=1001))
    body = announce(tracker, query(tok(user="bob"), peer=2, port=1002, compact=0))
    assert body[b"peers"] == [
        {b"ip": b"127.0.0.1", b"port": 1001, b"peer id": b"-IM0001-" + (1).to_bytes(12, "big")}
    ]
    body = announce(
        tracker, query(tok(user="bob"), peer=2, port=1002, compact=0, extra="no_peer_id=1")
    )
    assert body[b"peers"] == [{b"ip": b"127.0.0.1", b"port": 1001}]


def test_ipv6_peers6(tracker: Tracker) -> None:
    announce(tracker, query(tok(), peer=1, port=1001), ip="::1")
    announce(tracker, query(tok(user="bob"), peer=2, port=1002), ip="127.0.0.1")
    body = announce(tracker, query(tok(user="carol"), peer=3, port=1003), ip="10.0.0.3")
    assert body[b"peers6"] == b"\x00" * 15 + b"\x01" + (1001).to_bytes(2, "big")
    assert compact_ports(body) == [1002]
    body = announce(tracker, query(tok(user="carol"), peer=3, port=1003, compact=0), ip="10.0.0.3")
    assert sorted(p[b"ip"] for p in body[b"peers"]) == [b"127.0.0.1", b"::1"]


def test_numwant(tracker: Tracker) -> None:
    for i in range(100):
        announce(tracker, query(tok(), peer=i, port=3000 + i))
    assert len(compact_ports(announce(tracker, query(tok(), peer=0, port=3000, numwant=7)))) == 7
    assert len(compact_ports(announce(tracker, query(tok(), peer=0, port=3000)))) == 50
    assert len(compact_ports(announce(tracker, query(tok(), peer=0, port=3000, numwant=0)))) == 0
    ports = compact_ports(announce(tracker, query(tok(), peer=0, port=3000, numwant=1000)))
    assert len(ports) == 99 and 3000 not in ports


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "token is required"),
        ("garbage", "token refused: malformed"),
        (
            Issuer(Ed25519PrivateKey.generate()).issue_tracker("sip:a@b", IH, "consumer", NOW + 5),
            "bad-signature",
        ),
        (tok(not_after=NOW - 1), "expired"),
        (tok(ih=IH2), "wrong-subject"),
        (ISSUER.issue_license("sip:a@b", DOI, "o", NOW + 5), "wrong-kind"),
    ],
)
def test_token_refusals(tracker: Tracker, token: str | None, reason: str) -> None:
    body = announce(tracker, query(token))
    assert reason.encode() in body[b"failure reason"]
    assert b"peers" not in body and tracker.peer_count == 0


def test_unregistered(tracker: Tracker) -> None:
    body = announce(tracker, query(tok(ih=IH2), ih=IH2))
    assert body == {b"failure reason": b"unregistered torrent"}


def test_failures_are_counted(revoked: Revoked) -> None:
    seen: list[FailureCode] = []
    t = Tracker(Verifier(KEY.public_key()), on_failure=seen.append)
    announce(t, query(None))
    announce(t, query(tok()))
    assert seen == [FailureCode.NO_TOKEN, FailureCode.UNREGISTERED]


def test_muted_swarm(tracker: Tracker) -> None:
    announce(tracker, query(tok(), peer=1, port=1001))
    tracker.set_state(IH, SwarmState.MUTED)
    assert tracker.peer_count == 0  # the consumer was dropped
    body = announce(tracker, query(tok(user="bob"), peer=2, port=1002))
    assert body[b"failure reason"] == b"torrent not yet available"
    provider = tok(user="carol", role="provider")
    seeder = tok(user="seeder", role="seeder")
    assert announce(tracker, query(provider, peer=3, port=1003, left=0))[b"peers"] == b""
    assert compact_ports(announce(tracker, query(seeder, peer=4, port=1004))) == [1003]
    assert compact_ports(announce(tracker, query(provider, peer=3, port=1003, left=0))) == [1004]
    tracker.set_state(IH, SwarmState.ACTIVE)
    assert compact_ports(announce(tracker, query(tok(user="bob"), peer=2, port=1002))) == [
        1003,
        1004,
    ]


def test_disabled_swarm(tracker: Tracker) -> None:
    announce(tracker, query(tok(user="carol", role="provider"), peer=3, port=1003))
    tracker.set_state(IH, SwarmState.DISABLED)
    assert tracker.peer_count == 0
    for role in ("consumer", "provider", "seeder"):
        body = announce(tracker, query(tok(role=role)))
        assert body[b"failure reason"] == b"torrent disabled by the operator"
    assert tracker.peer_count == 0


def test_revocation_refuses_and_drops(tracker: Tracker, revoked: Revoked) -> None:
    alice = tok(token_id="alice-token")
    announce(tracker, query(alice, peer=1, port=1001))
    announce(tracker, query(tok(user="bob"), peer=2, port=1002))
    announce(tracker, query(tok(user="carol"), peer=3, port=1003))
    revoked.tokens.add("alice-token")
    revoked.users.add("sip:bob@ims.example.org")
    assert tracker.drop_revoked() == 2
    body = announce(tracker, query(tok(user="carol"), peer=3, port=1003))
    assert compact_ports(body) == []
    assert (
        announce(tracker, query(alice, peer=1, port=1001))[b"failure reason"]
        == b"entitlement revoked"
    )
    revoked.dois.add(DOI)
    assert tracker.drop_revoked() == 1
    assert announce(tracker, query(tok(user="dave")))[b"failure reason"] == b"entitlement revoked"


def test_stopped_completed_and_stats(tracker: Tracker) -> None:
    announce(tracker, query(tok(), peer=1, port=1001, event="started", uploaded=0, downloaded=0))
    announce(
        tracker,
        query(tok(), peer=1, port=1001, left=0, event="completed", downloaded=100, uploaded=10),
    )
    announce(
        tracker,
        query(tok(), peer=1, port=1001, left=0, event="completed", downloaded=100, uploaded=30),
    )
    [stats] = tracker.stats(IH)
    assert (stats.seeders, stats.leechers, stats.completed) == (1, 0, 1)
    assert (stats.uploaded, stats.downloaded) == (30, 100)
    assert stats.as_json()["state"] == "active" and stats.as_json()["info_hash"] == IH.hex()
    body = announce(tracker, query(tok(), peer=1, port=1001, left=0, event="stopped", uploaded=50))
    assert body[b"peers"] == b"" and body[b"complete"] == 0
    assert tracker.peer_count == 0 and tracker.stats(IH)[0].uploaded == 50
    assert tracker.stats(IH)[0].origin_uploaded == 0
    provider = tok(user="carol", role="provider")
    announce(tracker, query(provider, peer=5, port=1005, left=0, uploaded=0))
    announce(tracker, query(provider, peer=5, port=1005, left=0, uploaded=700))
    assert tracker.stats(IH)[0].as_json()["origin_uploaded"] == 700
    # stopping an unknown peer is harmless
    announce(tracker, query(tok(), peer=9, port=1009, event="stopped"))
    assert tracker.stats(IH2) == [] and len(tracker.stats()) == 1


def test_peer_id_of_another_user_is_refused(tracker: Tracker) -> None:
    announce(tracker, query(tok(), peer=1, port=1001))
    body = announce(tracker, query(tok(user="mallory"), peer=1, port=1001))
    assert body[b"failure reason"] == b"peer id in use by another user"


def test_expiry(tracker: Tracker) -> None:
    announce(tracker, query(tok(), peer=1, port=1001), now=NOW)
    announce(tracker, query(tok(user="bob"), peer=2, port=1002), now=NOW + 200)
    assert tracker.expire(NOW + 301) == 1 and tracker.peer_count == 1
    # Lazy sweep during an announce too.
    body = announce(tracker, query(tok(user="carol"), peer=3, port=1003), now=NOW + 600)
    assert compact_ports(body) == [] and tracker.peer_count == 1


def test_limits() -> None:
    t = Tracker(
        Verifier(KEY.public_key()), TrackerConfig(max_peers=3, max_peers_per_swarm=2, max_swarms=2)
    )
    t.register(IH, DOI, SwarmState.ACTIVE)
    t.register(IH2, DOI, SwarmState.ACTIVE)
    with pytest.raises(ValueError):
        t.register(bytes(20), DOI)
    announce(t, query(tok(), peer=1, port=1))
    announce(t, query(tok(), peer=2, port=2))
    assert (
        announce(t, query(tok(), peer=3, port=3))[b"failure reason"]
        == b"tracker is full, retry later"
    )
    announce(t, query(tok(ih=IH2), ih=IH2, peer=3, port=3))
    assert b"failure reason" in announce(t, query(tok(ih=IH2), ih=IH2, peer=4, port=4))
    # updates of known peers still work when full
    assert b"peers" in announce(t, query(tok(), peer=1, port=1))
    t.unregister(IH)
    assert t.peer_count == 1 and t.state(IH) is None
    with pytest.raises(KeyError):
        t.set_state(IH, SwarmState.ACTIVE)


def test_config_checks() -> None:
    with pytest.raises(ValueError):
        TrackerConfig(interval=10, min_interval=20)
    with pytest.raises(ValueError):
        TrackerConfig(interval=100, peer_expiry=50)


def test_scrape(tracker: Tracker) -> None:
    announce(tracker, query(tok(), peer=1, port=1001, left=0))
    announce(tracker, query(tok(), peer=2, port=1002))
    q = b"info_hash=" + quote_from_bytes(IH).encode() + b"&token=" + tok().encode()
    body = bdecode(tracker.scrape(parse_scrape(q), NOW))
    assert body == {b"files": {IH: {b"complete": 1, b"incomplete": 1, b"downloaded": 0}}}
    # No info_hash: the token's swarm. Another info-hash: nothing.
    assert IH in bdecode(tracker.scrape(parse_scrape(b"token=" + tok().encode()), NOW))[b"files"]
    q2 = b"info_hash=" + quote_from_bytes(IH2).encode() + b"&token=" + tok().encode()
    assert bdecode(tracker.scrape(parse_scrape(q2), NOW)) == {b"files": {}}
    assert b"failure reason" in bdecode(tracker.scrape(parse_scrape(b""), NOW))
    tracker.set_state(IH, SwarmState.MUTED)
    assert bdecode(tracker.scrape(parse_scrape(b"token=" + tok().encode()), NOW)) == {b"files": {}}
    provider = tok(role="provider").encode()
    assert IH in bdecode(tracker.scrape(parse_scrape(b"token=" + provider), NOW))[b"files"]


def test_many_swarms_and_peers_stay_consistent() -> None:
    rng = random.Random(5)
    t = Tracker(
        Verifier(KEY.public_key()),
        TrackerConfig(interval=120, min_interval=30, peer_expiry=300),
        rng=rng,
    )
    hashes = [i.to_bytes(20, "big") for i in range(20)]
    tokens = {h: tok(ih=h) for h in hashes}
    for h in hashes:
        t.register(h, None, SwarmState.ACTIVE)
    live: set[tuple[bytes, int]] = set()
    for step in range(2000):
        h = rng.choice(hashes)
        peer = rng.randrange(30)
        stop = rng.random() < 0.2
        left = rng.choice([0, 10])
        q = query(
            tokens[h], ih=h, peer=peer, port=1000 + peer, left=left, event="stopped" if stop else ""
        )
        announce(t, q, now=NOW + step * 0.01)
        (live.discard if stop else live.add)((h, peer))
    assert t.peer_count == len(live)
    total = 0
    for s in t.stats():
        assert s.seeders >= 0 and s.leechers >= 0
        total += s.seeders + s.leechers
    assert total == len(live)
