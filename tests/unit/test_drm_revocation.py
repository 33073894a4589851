"""The revocation list (imsp2pd.drm.revocation) on a real SQLite store, no reactor."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd.drm import revocation as rv
from imsp2pd.drm.server import MIGRATIONS
from imsp2pd.store import SQLiteStore

FPR = "ab" * 32


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "db")
    s.migrate(MIGRATIONS)
    yield s
    s.close()


def test_add_find_and_since(store) -> None:
    entries = [
        rv.Revocation(rv.Kind.IMPU, "sip:alice@ims.example.org", 10.0, "fraud"),
        rv.Revocation(rv.Kind.DEVICE, FPR, 20.0),
        rv.Revocation(rv.Kind.DOI, "10.5555/x", 30.0),
        rv.Revocation(rv.Kind.TOKEN, "tok_1", 40.0),
    ]
    for e in entries:
        assert store.transact_now(lambda t, e=e: rv.add(t, e)) == e
    again = rv.Revocation(rv.Kind.DOI, "10.5555/x", 99.0)
    assert store.transact_now(lambda t: rv.add(t, again)).time == 30.0  # first time kept
    assert store.transact_now(lambda t: rv.find(t, device=FPR)) == entries[1]
    assert store.transact_now(lambda t: rv.find(t, impu="sip:bob@ims.example.org")) is None
    hit = store.transact_now(
        lambda t: rv.find(t, impu="sip:bob@ims.example.org", doi="10.5555/x", token="zzz")
    )
    assert hit == entries[2]
    assert store.transact_now(lambda t: rv.since(t, 0)) == entries
    assert store.transact_now(lambda t: rv.since(t, 30.0)) == entries[2:]
    assert store.transact_now(lambda t: rv.since(t, 41)) == []


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "user", "value": "sip:a@b"},
        {"kind": "impu", "value": "alice"},
        {"kind": "device", "value": "AB" * 32},
        {"kind": "token", "value": "a.b"},
        {"kind": "doi", "value": ""},
        {"kind": "doi", "value": "x\n"},
        {"kind": "doi", "value": "x", "time": -1},
        {"kind": "doi", "value": "x", "time": True},
        {"kind": "doi", "value": "x", "extra": 1},
        {"kind": "doi", "value": "x", "reason": 5},
        [],
    ],
)
def test_bad_entries(body) -> None:
    with pytest.raises(rv.RevocationError):
        rv.Revocation.from_json(body, now=1.0)


def test_json_round_trip() -> None:
    e = rv.Revocation(rv.Kind.DEVICE, FPR, 5.5, "lost")
    assert rv.Revocation.from_json(e.to_json()) == e
    assert rv.Revocation.from_json({"kind": "doi", "value": "d"}, now=7).time == 7.0


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["kind", "value", "time", "reason", "x"]),
        st.one_of(st.text(max_size=70), st.integers(), st.floats(), st.none()),
    )
)
def test_from_json_fuzz(body) -> None:
    try:
        rv.Revocation.from_json(body, now=1.0)
    except rv.RevocationError:
        pass
