import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imsp2pd.store import Collection, Conflict, Migration, SQLiteStore, StoreError

M1 = Migration("t-0001", [Collection("things", ("owner", "state"))])


def make(tmp_path: Path) -> SQLiteStore:
    s = SQLiteStore(tmp_path / "s.sqlite")
    assert s.migrate([M1]) == ["t-0001"]
    return s


def test_crud_and_queries(tmp_path: Path) -> None:
    s = make(tmp_path)

    def fill(txn) -> None:
        txn.put("things", "a", {"owner": "alice", "state": "new", "n": 1})
        txn.put("things", "b", {"owner": "bob", "state": "new", "n": 2})
        txn.insert("things", "c", {"owner": "alice", "state": "old", "n": 3})

    s.transact_now(fill)
    assert s.transact_now(lambda t: t.get("things", "a"))["n"] == 1
    assert s.transact_now(lambda t: t.get("things", "zz")) is None
    assert [k for k, _ in s.transact_now(lambda t: t.find("things", owner="alice"))] == ["a", "c"]
    assert s.transact_now(lambda t: t.count("things", state="new")) == 2
    assert s.transact_now(lambda t: t.count("things")) == 3
    assert [k for k, _ in s.transact_now(lambda t: list(t.scan("things", after="a")))] == ["b", "c"]
    assert [k for k, _ in s.transact_now(lambda t: list(t.scan("things", prefix="b")))] == ["b"]
    assert s.transact_now(lambda t: t.delete("things", "b")) is True
    assert s.transact_now(lambda t: t.delete("things", "b")) is False
    with pytest.raises(Conflict):
        s.transact_now(lambda t: t.insert("things", "a", {}))


def test_a_failing_transaction_changes_nothing(tmp_path: Path) -> None:
    s = make(tmp_path)

    def half(txn) -> None:
        txn.put("things", "x", {"owner": "o"})
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        s.transact_now(half)
    assert s.transact_now(lambda t: t.get("things", "x")) is None


def test_transact_without_reactor_gives_fired_deferreds(tmp_path: Path) -> None:
    s = make(tmp_path)
    results: list = []
    s.transact(lambda t: t.put("things", "k", {"owner": "o"})).addCallback(results.append)
    s.transact(lambda t: t.get("things", "nope")["x"]).addErrback(lambda f: results.append(f.type))
    assert results == [None, TypeError]


def test_durable_across_reopen_and_migrations_applied_once(tmp_path: Path) -> None:
    s = make(tmp_path)
    s.transact_now(lambda t: t.put("things", "k", {"owner": "o"}))
    s.close()
    s2 = SQLiteStore(tmp_path / "s.sqlite")
    assert s2.migrate([M1]) == []
    m2 = Migration("t-0002", [Collection("more")], run=lambda t: t.put("more", "seed", {"v": 1}))
    assert s2.migrate([M1, m2]) == ["t-0002"]
    assert s2.transact_now(lambda t: t.get("things", "k")) == {"owner": "o"}
    assert s2.transact_now(lambda t: t.get("more", "seed")) == {"v": 1}
    assert s2.applied_migrations() == ["t-0001", "t-0002"]


def test_misuse_is_a_store_error(tmp_path: Path) -> None:
    s = make(tmp_path)
    with pytest.raises(StoreError, match="unknown collection"):
        s.transact_now(lambda t: t.get("nothing", "k"))
    with pytest.raises(StoreError, match="not an index"):
        s.transact_now(lambda t: t.find("things", n=1))
    with pytest.raises(StoreError):
        Collection("bad name; drop table")
    with pytest.raises(StoreError, match="duplicate"):
        s.migrate([M1, M1])


def test_failed_migration_is_not_recorded(tmp_path: Path) -> None:
    s = make(tmp_path)

    def bad(txn) -> None:
        raise ValueError("no")

    with pytest.raises(ValueError):
        s.migrate([Migration("t-0003", [Collection("x")], run=bad)])
    assert "t-0003" not in s.applied_migrations()
    with pytest.raises(StoreError):
        s.transact_now(lambda t: t.get("x", "k"))


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "junk.sqlite"
    p.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        SQLiteStore(p).open()


def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    s = make(tmp_path)
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.transact_now(lambda t: t.get("things", "a"))
    errors: list = []
    s.transact(lambda t: t.get("things", "a")).addErrback(errors.append)
    assert errors[0].check(StoreError)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=4), _JSON, max_size=5))
def test_documents_are_written_as_json_dumps_writes_them(doc: dict[str, Any]) -> None:
    from imsp2pd.store.sqlite import _dumps

    def dumps(d: Any) -> Any:
        try:
            return json.dumps(d, separators=(",", ":"), sort_keys=True, allow_nan=False)
        except ValueError as exc:  # NaN and infinities are refused
            return type(exc)

    try:
        ours: Any = _dumps(doc)
    except ValueError as exc:
        ours = type(exc)
    assert ours == dumps(doc)
