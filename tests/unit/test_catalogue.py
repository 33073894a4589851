"""The content catalogue: offer and metadata checks, the life cycle, queries on SQLite."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.python.failure import Failure

from imsp2pd.bittorrent.metainfo import make_metainfo
from imsp2pd.content.catalogue import (
    ASSETS,
    MIGRATIONS,
    Asset,
    AssetError,
    AssetExists,
    AssetState,
    Catalogue,
    CatalogueError,
    OfferError,
    StateError,
    UnknownAsset,
    new_asset,
    parse_metadata,
    parse_offer,
    parse_offers,
)
from imsp2pd.content.purchase import PricedOffer
from imsp2pd.store import SQLiteStore

CAROL = "sip:carol@ims.example.org"
TRACKER = "http://127.0.0.1:6969"

RENT = {
    "id": "rent",
    "price": "2.50",
    "currency": "EUR",
    "rights": {"play_seconds_from_first_use": 172800},
}
BUY = {"id": "buy", "price": "9.99", "currency": "EUR", "rights": {"plays": 100}, "devices": 3}


def result(d: Any) -> Any:
    """The result of an already-fired Deferred (the store runs inline without a reactor)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def torrent(tmp_path: Path, doi: str, name: str = "film.imsp2p", private: bool = True) -> bytes:
    f = tmp_path / name
    f.write_bytes(doi.encode() * 1000)
    return make_metainfo(
        f, f"{TRACKER}/announce", doi=doi, private=private, creation_date=1
    ).to_bytes()


def metadata(**over: Any) -> dict[str, Any]:
    base = {
        "title": "Night Train",
        "description": 'A film <b>about</b> trains & "night".',
        "genre": "drama",
        "series": "Rails",
        "offers": [RENT, BUY],
    }
    base.update(over)
    return base


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(tmp_path / "cat.sqlite")
    s.migrate(MIGRATIONS)
    yield s
    s.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cat(store: SQLiteStore, clock: Clock) -> Catalogue:
    return Catalogue(store, clock)


# -- offers -------------------------------------------------------------------


def test_offer_round_trip() -> None:
    o = parse_offer(BUY)
    assert (o.id, o.price, o.currency, o.devices) == ("buy", "9.99", "EUR", 3)
    assert o.amount == Decimal("9.99")
    assert o.rights.plays == 100
    assert parse_offer(o.to_json()) == o
    assert parse_offer(RENT).devices == 1


def test_play_until_is_normalised_to_unix_seconds() -> None:
    o = parse_offer({**RENT, "rights": {"play_until": "2027-01-01T00:00:00Z"}})
    assert o.to_json()["rights"] == {"play_until": 1798761600}


@pytest.mark.parametrize(
    "price",
    [
        "-1",
        "1e3",
        "1,50",
        " 1",
        "01",
        "",
        "1.",
        ".5",
        "NaN",
        "Infinity",
        4.5,
        4,
        None,
        "1.1234567",
        "1000000000",
    ],
)
def test_bad_prices_are_refused(price: Any) -> None:
    with pytest.raises(OfferError, match="price"):
        parse_offer({**RENT, "price": price})


@pytest.mark.parametrize("price", ["0", "0.00", "4.5", "4.50", "999999999.999999"])
def test_good_prices(price: str) -> None:
    assert parse_offer({**RENT, "price": price}).price == price


def test_offer_faults_are_named() -> None:
    with pytest.raises(OfferError, match="unknown rights"):
        parse_offer({**RENT, "rights": {"plays": 1, "forever": True}})
    with pytest.raises(OfferError, match="rights need"):
        parse_offer({**RENT, "rights": {}})
    with pytest.raises(OfferError, match="unknown offer key 'label'"):
        parse_offer({**RENT, "label": "x"})
    with pytest.raises(OfferError, match="currency"):
        parse_offer({**RENT, "currency": "eur"})
    with pytest.raises(OfferError, match="offer id"):
        parse_offer({**RENT, "id": "has space"})
    with pytest.raises(OfferError, match="devices"):
        parse_offer({**RENT, "devices": 0})
    with pytest.raises(OfferError, match="price is missing"):
        parse_offer({k: v for k, v in RENT.items() if k != "price"})
    with pytest.raises(OfferError, match="JSON object"):
        parse_offer(["rent"])


def test_offer_lists() -> None:
    assert [o.id for o in parse_offers([RENT, BUY])] == ["rent", "buy"]
    with pytest.raises(OfferError, match="duplicate offer id 'rent'"):
        parse_offers([RENT, {**BUY, "id": "rent"}])
    with pytest.raises(OfferError, match="non-empty"):
        parse_offers([])
    with pytest.raises(OfferError, match="at most"):
        parse_offers([{**RENT, "id": f"o{i}"} for i in range(17)])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
offer_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=8) | json_values,
        "price": st.from_regex(r"-?[0-9]{0,4}(\.[0-9]{0,8})?", fullmatch=True) | json_values,
        "currency": st.sampled_from(["EUR", "usd", "XX"]) | json_values,
        "rights": st.dictionaries(
            st.sampled_from(["plays", "play_until", "play_seconds_from_first_use", "x"]),
            st.integers(-5, 10**10) | st.text(max_size=25),
        )
        | json_values,
        "devices": st.integers(-2, 200) | json_values,
        "extra": json_values,
    },
)


@given(offer_like)
def test_parse_offer_never_raises_anything_but_offer_error(obj: dict[str, Any]) -> None:
    try:
        o = parse_offer(obj)
    except OfferError:
        return
    assert parse_offer(o.to_json()) == o
    assert o.amount >= 0


@given(json_values)
def test_parse_metadata_never_raises_anything_but_catalogue_error(obj: Any) -> None:
    try:
        parse_metadata(obj)
    except CatalogueError:
        pass


# -- metadata and new assets --------------------------------------------------------


def test_metadata_checks() -> None:
    m = parse_metadata(metadata(description="line one\r\nline two"))
    assert m.description == "line one\nline two"
    assert [o.id for o in m.offers] == ["rent", "buy"]
    with pytest.raises(AssetError, match="title must not be empty"):
        parse_metadata(metadata(title="  "))
    with pytest.raises(AssetError, match="title must be one line"):
        parse_metadata(metadata(title="a\nb"))
    with pytest.raises(AssetError, match="control characters"):
        parse_metadata(metadata(description="bell\x07"))
    with pytest.raises(AssetError, match="unknown metadata key 'price'"):
        parse_metadata(metadata(price="1"))
    with pytest.raises(AssetError, match="genre must be a string"):
        parse_metadata(metadata(genre=3))
    with pytest.raises(AssetError, match="title is longer"):
        parse_metadata(metadata(title="x" * 201))
    with pytest.raises(OfferError):
        parse_metadata(metadata(offers=None))
    with pytest.raises(AssetError, match="not a DOI"):
        parse_metadata(metadata(doi="11.1/x"))


def test_new_asset_takes_the_doi_and_info_hash_from_the_torrent(tmp_path: Path) -> None:
    t = torrent(tmp_path, "10.5555/night-train")
    a = new_asset(parse_metadata(metadata()), publisher=CAROL, torrent=t, tracker=TRACKER, now=5.0)
    assert a.doi == "10.5555/night-train"
    assert len(a.info_hash) == 40 and a.state is AssetState.PENDING
    assert (a.name, a.size, a.created, a.listed_at) == ("film.imsp2p", 19000, 5.0, None)
    assert Asset.from_doc(a.to_doc()) == a
    assert "extra" not in a.to_json()


def test_new_asset_refusals(tmp_path: Path) -> None:
    m = parse_metadata(metadata())
    t = torrent(tmp_path, "10.5555/a")
    with pytest.raises(AssetError, match="not the .torrent's"):
        new_asset(m, publisher=CAROL, torrent=t, tracker=TRACKER, now=0, doi="10.5555/b")
    with pytest.raises(AssetError, match="not valid"):
        new_asset(m, publisher=CAROL, torrent=b"d4:infoe", tracker=TRACKER, now=0)
    with pytest.raises(AssetError, match="private"):
        new_asset(
            m,
            publisher=CAROL,
            torrent=torrent(tmp_path, "10.5555/p", "p", private=False),
            tracker=TRACKER,
            now=0,
        )
    with pytest.raises(AssetError, match="publisher"):
        new_asset(m, publisher="carol", torrent=t, tracker=TRACKER, now=0)
    for bad in (
        "ftp://x",
        "http://",
        "http://h:99999",
        "http://h/announce?x=1",
        "javascript:alert(1)",
    ):
        with pytest.raises(AssetError, match="tracker"):
            new_asset(m, publisher=CAROL, torrent=t, tracker=bad, now=0)
    with pytest.raises(StateError):
        new_asset(m, publisher=CAROL, torrent=t, tracker=TRACKER, now=0, state=AssetState.REMOVED)
    f = tmp_path / "nodoi"
    f.write_bytes(b"x" * 10)
    no_doi = make_metainfo(f, None).to_bytes()
    with pytest.raises(AssetError, match="no DOI"):
        new_asset(m, publisher=CAROL, torrent=no_doi, tracker=TRACKER, now=0)


# -- the store ------------------------------------------------------------------


def add(cat: Catalogue, tmp_path: Path, doi: str, **meta: Any) -> Asset:
    t = torrent(tmp_path, doi, name=doi.replace("/", "_"))
    return result(
        cat.add(parse_metadata(metadata(**meta)), publisher=CAROL, torrent=t, tracker=TRACKER)
    )


def test_add_list_and_life_cycle(cat: Catalogue, clock: Clock, tmp_path: Path) -> None:
    a = add(cat, tmp_path, "10.5555/a", title="Alpha", genre="drama")
    clock.now = 2_000.0
    b = add(cat, tmp_path, "10.5555/b", title="Beta", genre="comedy", series="S2")
    assert result(cat.listed()) == []
    assert result(cat.count(AssetState.PENDING)) == 2
    result(cat.list_asset(a.doi))
    clock.now = 3_000.0
    listed_b = result(cat.list_asset(b.doi))
    assert listed_b.listed_at == 3_000.0 and listed_b.state is AssetState.LISTED
    assert [x.doi for x in result(cat.listed())] == ["10.5555/b", "10.5555/a"]
    assert [x.doi for x in result(cat.listed(genre="drama"))] == ["10.5555/a"]
    assert [x.doi for x in result(cat.listed(series="S2"))] == ["10.5555/b"]
    assert result(cat.listed(genre="horror")) == []
    assert result(cat.genres()) == [("comedy", 1), ("drama", 1)]
    assert result(cat.by_info_hash(a.info_hash)).doi == a.doi
    assert result(cat.by_info_hash("0" * 40)) is None
    assert len(result(cat.by_publisher(CAROL))) == 2
    assert result(cat.by_publisher("sip:bob@ims.example.org")) == []

    # listing again is a no-op; removal is final and hides the asset and its .torrent
    first_listed = result(cat.get(a.doi)).listed_at
    assert result(cat.list_asset(a.doi)).listed_at == first_listed == 2_000.0
    removed = result(cat.remove(a.doi))
    assert removed.state is AssetState.REMOVED and removed.removed_at == 3_000.0
    assert [x.doi for x in result(cat.listed())] == ["10.5555/b"]
    assert result(cat.torrent(a.info_hash)) is None
    assert result(cat.torrent_any_state(a.info_hash)).startswith(b"d")
    with pytest.raises(StateError, match="cannot go from removed to listed"):
        result(cat.list_asset(a.doi))
    assert [x.state for x in result(cat.by_state())] == [AssetState.LISTED, AssetState.REMOVED]
    assert [x.doi for x in result(cat.by_state(AssetState.REMOVED))] == [a.doi]


def test_torrent_bytes_survive_exactly(cat: Catalogue, tmp_path: Path) -> None:
    t = torrent(tmp_path, "10.5555/t")
    a = result(cat.add(parse_metadata(metadata()), publisher=CAROL, torrent=t, tracker=TRACKER))
    assert result(cat.torrent(a.info_hash)) is None  # pending: not downloadable from the index
    assert result(cat.torrent_any_state(a.info_hash)) == t
    result(cat.list_asset(a.doi))
    assert result(cat.torrent(a.info_hash)) == t


def test_duplicates_are_refused(cat: Catalogue, tmp_path: Path) -> None:
    t = torrent(tmp_path, "10.5555/dup")
    m = parse_metadata(metadata())
    result(cat.add(m, publisher=CAROL, torrent=t, tracker=TRACKER))
    with pytest.raises(AssetExists, match="already"):
        result(cat.add(m, publisher=CAROL, torrent=t, tracker=TRACKER))
    assert result(cat.count(AssetState.PENDING)) == 1


def test_unknown_asset(cat: Catalogue) -> None:
    assert result(cat.get("10.5555/none")) is None
    with pytest.raises(UnknownAsset, match="no asset 10.5555/none"):
        result(cat.remove("10.5555/none"))


def test_update_changes_metadata_not_identity(cat: Catalogue, clock: Clock, tmp_path: Path) -> None:
    a = add(cat, tmp_path, "10.5555/u")
    clock.now = 1_500.0
    new = parse_metadata(metadata(title="Renamed", offers=[{**RENT, "price": "1.00"}]))
    u = result(cat.update(a.doi, new))
    assert (u.title, u.offers[0].price, u.info_hash, u.created, u.updated) == (
        "Renamed",
        "1.00",
        a.info_hash,
        a.created,
        1_500.0,
    )
    assert result(cat.get(a.doi)) == u
    with pytest.raises(AssetError):
        result(cat.update(a.doi, parse_metadata(metadata(doi="10.5555/other"))))
    result(cat.remove(a.doi))
    with pytest.raises(StateError):
        result(cat.update(a.doi, new))


def test_priced_offer_for_the_as(cat: Catalogue, tmp_path: Path) -> None:
    a = add(cat, tmp_path, "10.5555/p")
    assert result(cat.priced_offer(a.doi, "buy")) is None  # not listed yet
    result(cat.list_asset(a.doi))
    p = result(cat.priced_offer(a.doi, "buy"))
    assert p == PricedOffer(
        doi=a.doi,
        offer_id="buy",
        price=Decimal("9.99"),
        currency="EUR",
        rights={"plays": 100},
        devices=3,
        info_hash=a.info_hash,
        tracker_url=TRACKER,
    )
    assert result(cat.priced_offer(a.doi, "nope")) is None
    assert result(cat.priced_offer("10.5555/none", "buy")) is None


def test_a_broken_record_is_a_catalogue_error(cat: Catalogue, store: SQLiteStore) -> None:
    store.transact_now(lambda t: t.put(ASSETS, "10.5555/x", {"doi": "10.5555/x", "state": "weird"}))
    with pytest.raises(CatalogueError, match="broken catalogue record"):
        result(cat.get("10.5555/x"))


def test_it_is_durable(tmp_path: Path, clock: Clock) -> None:
    s = SQLiteStore(tmp_path / "d.sqlite")
    s.migrate(MIGRATIONS)
    a = result(
        Catalogue(s, clock).add(
            parse_metadata(metadata()),
            publisher=CAROL,
            torrent=torrent(tmp_path, "10.5555/d"),
            tracker=TRACKER,
        )
    )
    s.close()
    s2 = SQLiteStore(tmp_path / "d.sqlite")
    assert s2.migrate(MIGRATIONS) == []
    assert result(Catalogue(s2, clock).get(a.doi)) == a
    s2.close()
