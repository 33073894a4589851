"""Peer-side announce: URL building, answer parsing, fuzzing."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imsp2pd.bittorrent.announce import AnnounceError, announce_url, parse_response
from imsp2pd.bittorrent.bencoding import bencode
from imsp2pd.bittorrent.tracker import parse_announce

IH = bytes(range(20))
PID = b"-IM0001-" + b"\xff" * 12


def test_url_keeps_the_token_and_round_trips_through_our_parser() -> None:
    url = announce_url(
        "http://127.0.0.1:6969/announce?token=abc.def", IH, PID, 6881, 1, 2, 3, "started", 10
    )
    assert url.startswith("http://127.0.0.1:6969/announce?token=abc.def&info_hash=")
    req = parse_announce(url.partition("?")[2].encode(), "127.0.0.1")
    assert (req.info_hash, req.peer_id, req.port, req.uploaded, req.downloaded, req.left) == (
        IH,
        PID,
        6881,
        1,
        2,
        3,
    )
    assert req.token == "abc.def" and req.numwant == 10 and req.compact
    assert "?info_hash=" in announce_url("http://t/announce", IH, PID, 1, 0, 0, 0)


def test_parse_compact_v4_v6_and_dict() -> None:
    body = bencode(
        {
            b"interval": 60,
            b"min interval": 10,
            b"complete": 1,
            b"incomplete": 2,
            b"peers": b"\x7f\x00\x00\x01\x1a\xe1" + b"\x0a\x00\x00\x02\x00\x00",
            b"peers6": b"\x00" * 15 + b"\x01\x1a\xe2",
        }
    )
    r = parse_response(body)
    assert (
        r.peers == (("127.0.0.1", 6881), ("::1", 6882))
        and r.interval == 60
        and r.min_interval == 10
    )
    assert (r.complete, r.incomplete) == (1, 2)
    body = bencode(
        {
            b"interval": 5,
            b"peers": [{b"ip": b"10.0.0.1", b"port": 7}, {b"ip": b"bad", b"port": 1}, 5],
        }
    )
    assert parse_response(body).peers == (("10.0.0.1", 7),)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (bencode({b"failure reason": b"torrent not yet available"}), "torrent not yet available"),
        (b"<html>", "not bencoded"),
        (bencode([1]), "not a dictionary"),
        (bencode({b"peers": b""}), "no interval"),
        (bencode({b"interval": 1, b"peers": b"12345"}), "bad length"),
    ],
)
def test_errors(body: bytes, words: str) -> None:
    with pytest.raises(AnnounceError, match=words):
        parse_response(body)


@given(st.binary(max_size=200))
def test_never_raises_anything_else(data: bytes) -> None:
    try:
        parse_response(data)
    except AnnounceError:
        pass


def test_unquote_sanity() -> None:
    url = announce_url("http://t/announce", IH, PID, 1, 0, 0, 0)
    assert unquote_to_bytes(url.split("info_hash=")[1].split("&")[0]) == IH
