"""The index's pure parts: purchase URIs, scrape URLs and answers, the SVG chart."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imsp2pd.bittorrent.bencoding import bencode
from imsp2pd.content.catalogue import DOI_RE
from imsp2pd.content.index import (
    PurchaseTarget,
    PurchaseUriError,
    Sample,
    ScrapeError,
    SwarmHealth,
    asset_path,
    parse_purchase_uri,
    parse_scrape_response,
    parse_swarm_stats,
    purchase_uri,
    scrape_url,
    svg_chart,
    tracker_key,
)

PSI = "sip:content@ims.example.org"
IH = "0123456789abcdef0123456789abcdef01234567"
SVG = "{http://www.w3.org/2000/svg}"


# -- purchase URIs ----------------------------------------------------------------


def test_purchase_uri_shape() -> None:
    assert purchase_uri(PSI, "10.5555/night-train", "rent") == (
        "sip:content@ims.example.org;doi=10.5555/night-train;offer=rent"
    )
    # characters a SIP URI parameter cannot hold are escaped
    assert purchase_uri(PSI, "10.5555/a;b=c?d é", "x") == (
        "sip:content@ims.example.org;doi=10.5555/a%3Bb%3Dc%3Fd%20%C3%A9;offer=x"
    )
    assert purchase_uri(PSI, "10.5555/x") == "sip:content@ims.example.org;doi=10.5555/x"


def test_parse_purchase_uri() -> None:
    t = parse_purchase_uri("sip:content@ims.example.org;doi=10.5555/x;offer=buy?subject=hi")
    assert t == PurchaseTarget(PSI, "10.5555/x", "buy")
    assert parse_purchase_uri("SIPS:content@h;DOI=10.5555/y").psi == "sips:content@h"
    for bad, why in [
        ("http://x/;doi=10.5555/x", "not a sip"),
        ("sip:;doi=10.5555/x", "user@host"),
        ("sip:content@h", "no doi"),
        ("sip:content@h;doi=11.1/x", "no doi"),
        ("sip:content@h;doi=10.5555/x;doi=10.5555/y", "twice"),
        ("sip:content@h;doi=10.5555/x;offer=a%20b", "offer"),
        ("sip:content@h;doi=10.5555/%FF", "UTF-8"),
    ]:
        with pytest.raises(PurchaseUriError, match=why):
            parse_purchase_uri(bad)


dois = st.builds(
    lambda reg, suffix: f"10.{reg}/{suffix}",
    st.integers(1000, 999999999),
    st.text(
        st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=40
    ),
).filter(lambda d: DOI_RE.match(d) is not None)
offers = st.none() | st.from_regex(r"[A-Za-z0-9._~-]{1,64}", fullmatch=True)


@given(dois, offers)
def test_purchase_uri_round_trip(doi: str, offer: str | None) -> None:
    uri = purchase_uri(PSI, doi, offer)
    assert all(32 < ord(c) < 127 for c in uri) and "<" not in uri and '"' not in uri
    assert parse_purchase_uri(uri) == PurchaseTarget(PSI, doi, offer)


@given(st.text(max_size=200))
def test_parse_purchase_uri_raises_only_its_error(text: str) -> None:
    try:
        parse_purchase_uri(text)
    except PurchaseUriError:
        pass


def test_asset_path_escapes_the_doi() -> None:
    assert asset_path("10.5555/a b?#") == "/assets/10.5555/a%20b%3F%23"


# -- scrape ------------------------------------------------------------------------


def test_scrape_url_from_base_or_announce() -> None:
    q = "info_hash=%01%23Eg%89%AB%CD%EF%01%23Eg%89%AB%CD%EF%01%23Eg"
    assert scrape_url("http://127.0.0.1:6969", IH) == f"http://127.0.0.1:6969/scrape?{q}"
    assert scrape_url("http://127.0.0.1:6969/", IH) == f"http://127.0.0.1:6969/scrape?{q}"
    assert scrape_url("http://t/x/announce", IH) == f"http://t/x/scrape?{q}"
    assert scrape_url("http://t/announce.php", IH) == f"http://t/scrape.php?{q}"
    assert scrape_url("http://t", IH, "a.b+c/=") == f"http://t/scrape?{q}&token=a.b%2Bc%2F%3D"


def files(entry: dict) -> bytes:
    return bencode({b"files": {bytes.fromhex(IH): entry}})


def test_parse_scrape_response() -> None:
    h = parse_scrape_response(files({b"complete": 3, b"incomplete": 5, b"downloaded": 9}), IH)
    assert h == SwarmHealth(3, 5, 9)
    assert h.origin_share is None
    assert parse_scrape_response(files({b"complete": 0, b"incomplete": 0}), IH).completed == 0
    for body, why in [
        (b"<html>", "not bencoded"),
        (bencode([1]), "not a dictionary"),
        (bencode({b"failure reason": b"token refused: expired"}), "refused: token refused"),
        (bencode({b"x": 1}), "no files"),
        (bencode({b"files": {}}), "does not report"),
        (files({b"complete": -1, b"incomplete": 0}), "complete"),
        (files({b"complete": b"3", b"incomplete": 0}), "complete"),
        (files({b"complete": 1}), "incomplete"),
    ]:
        with pytest.raises(ScrapeError, match=why):
            parse_scrape_response(body, IH)


@given(st.binary(max_size=200))
def test_parse_scrape_response_raises_only_its_error(body: bytes) -> None:
    try:
        parse_scrape_response(body, IH)
    except ScrapeError:
        pass


def test_origin_share() -> None:
    assert SwarmHealth(1, 1, 0, 50, 200).origin_share == 0.25
    assert SwarmHealth(1, 1, 0, 50, 0).origin_share is None
    assert SwarmHealth(1, 1, 0, 500, 200).origin_share == 1.0


# -- the chart ---------------------------------------------------------------------


def parse_svg(text: str) -> ET.Element:
    return ET.fromstring(text)


def test_chart_draws_each_series_with_gaps() -> None:
    samples = [
        Sample(0, SwarmHealth(1, 4, 0, 100, 100)),
        Sample(10, SwarmHealth(2, 3, 1, 100, 200)),
        Sample(20, None),  # the tracker was down: a gap
        Sample(30, SwarmHealth(3, 1, 2, 100, 400)),
        Sample(40, SwarmHealth(4, 0, 3, 100, 500)),
    ]
    root = parse_svg(svg_chart(samples, 40, title="a <b> & c"))
    assert root.tag == f"{SVG}svg"
    assert root.find(f"{SVG}title").text == "a <b> & c"
    lines = {}
    for p in root.iter(f"{SVG}polyline"):
        lines.setdefault(p.get("class"), []).append(len(p.get("points").split()))
    assert lines == {"seeders": [2, 2], "leechers": [2, 2], "origin-share": [2, 2]}
    # y grows downwards: 4 seeders at the end is the top of a 0..5 axis region
    last_seeders = [p for p in root.iter(f"{SVG}polyline") if p.get("class") == "seeders"][-1]
    ys = [float(pt.split(",")[1]) for pt in last_seeders.get("points").split()]
    assert ys[1] < ys[0]
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "now" in texts and "-40 s" in texts and "100%" in texts and "5" in texts


def test_chart_title_is_escaped_and_empty_chart_says_so() -> None:
    text = svg_chart([], 100, title="</title><script>alert(1)</script>")
    assert "<script>" not in text
    root = parse_svg(text)
    assert root.find(f"{SVG}title").text == "</title><script>alert(1)</script>"
    assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "unknown"] == [
        "no data from the tracker yet"
    ]
    assert list(root.iter(f"{SVG}polyline")) == []


def test_single_sample_is_a_dot() -> None:
    root = parse_svg(svg_chart([Sample(5, SwarmHealth(2, 2, 0))], 5))
    assert {c.get("class") for c in root.iter(f"{SVG}circle")} == {"seeders", "leechers"}


# -- the tracker's operator API ------------------------------------------------------


def test_tracker_key() -> None:
    assert tracker_key("http://t:6969/") == "http://t:6969"
    assert tracker_key("http://t:6969/announce") == "http://t:6969"
    assert tracker_key("http://t:6969/x") == "http://t:6969/x"


def test_parse_swarm_stats() -> None:
    doc = {"info_hash": IH, "doi": "10.5555/x", "state": "active", "seeders": 2, "leechers": 6}
    h = parse_swarm_stats(json.dumps({**doc, "completed": 4, "uploaded": 800}).encode(), IH)
    assert h == SwarmHealth(2, 6, 4, None, 800) and h.origin_share is None
    h = parse_swarm_stats(
        json.dumps({**doc, "completed": 4, "uploaded": 800, "origin_uploaded": 200}).encode(), IH
    )
    assert h.origin_share == 0.25
    for body, why in [
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (json.dumps({**doc, "completed": 1, "info_hash": "ff" * 20}).encode(), "another"),
        (json.dumps(doc).encode(), "no completed"),
        (json.dumps({**doc, "completed": True}).encode(), "completed is not a count"),
        (json.dumps({**doc, "completed": 1, "uploaded": -1}).encode(), "uploaded"),
    ]:
        with pytest.raises(ScrapeError, match=why):
            parse_swarm_stats(body, IH)


@given(
    st.binary(max_size=100)
    | st.builds(
        lambda d: json.dumps(d).encode(),
        st.dictionaries(
            st.sampled_from(
                ["seeders", "leechers", "completed", "uploaded", "origin_uploaded", "info_hash"]
            ),
            st.none() | st.integers(-3, 10**12) | st.text(max_size=3) | st.booleans(),
        ),
    )
)
def test_parse_swarm_stats_raises_only_its_error(body: bytes) -> None:
    try:
        parse_swarm_stats(body, IH)
    except ScrapeError:
        pass
