"""Group commit in SQLiteStore: a real worker thread, a stand-in reactor.

The stand-in's ``callFromThread`` queues the call; the test thread plays
the reactor by running them (``pump``), so no reactor has to run.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from imsp2pd.store import Collection, Conflict, Migration, SQLiteStore, StoreError

M1 = Migration("t-0001", [Collection("things", ("owner",))])


class ThreadReactor:
    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()
        self.triggers: list[tuple[Any, ...]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.calls.put((f, args))

    def addSystemEventTrigger(self, *args: Any) -> None:
        self.triggers.append(args)

    def pump(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        while not done():
            f, args = self.calls.get(timeout=timeout)
            f(*args)


class Outcomes:
    """Collects what each Deferred fired with, in firing order."""

    def __init__(self) -> None:
        self.fired: list[tuple[str, Any]] = []

    def watch(self, d: Deferred[Any], name: str) -> None:
        d.addCallbacks(
            lambda r: self.fired.append((name, r)),
            lambda f: self.fired.append((name, f.value)),
        )

    def __len__(self) -> int:
        return len(self.fired)

    def of(self, name: str) -> Any:
        return dict(self.fired)[name]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[SQLiteStore, ThreadReactor, list[str]]]:
    reactor = ThreadReactor()
    s = SQLiteStore(tmp_path / "s.sqlite", reactor)
    s.migrate([M1])
    s.start()
    statements: list[str] = []
    s.conn.set_trace_callback(statements.append)
    yield s, reactor, statements
    s.close()


def blocker(s: SQLiteStore, out: Outcomes) -> threading.Event:
    """A transaction that holds the worker until the returned event is set
    (the next batch queues behind it); its outcome is watched as "blocker"."""
    running, release = threading.Event(), threading.Event()

    def fn(txn: Any) -> str:
        txn.put("things", "blocker", {"owner": "b"})
        running.set()
        assert release.wait(10)
        return "blocker"

    out.watch(s.transact(fn), "blocker")
    assert running.wait(10)
    return release


def put(key: str, value: Any = None) -> Callable[[Any], Any]:
    def fn(txn: Any) -> Any:
        txn.put("things", key, {"owner": key})
        return key if value is None else value

    return fn


def read(s: SQLiteStore, key: str) -> Any:
    return s.transact_now(lambda t: t.get("things", key))


def commits(statements: list[str]) -> int:
    return sum(1 for st in statements if st.strip().upper() == "COMMIT")


def test_a_lone_transaction_commits_at_once(store: Any) -> None:
    s, reactor, statements = store
    out = Outcomes()
    out.watch(s.transact(put("a")), "a")
    reactor.pump(lambda: len(out) == 1)
    assert out.fired == [("a", "a")]
    assert (s.commits, s.committed, commits(statements)) == (1, 1, 1)


def test_concurrent_transactions_share_one_commit(store: Any) -> None:
    s, reactor, statements = store
    out = Outcomes()
    release = blocker(s, out)
    names = [f"k{i:02d}" for i in range(40)]
    for name in names:
        out.watch(s.transact(put(name, value=name.upper())), name)
    release.set()
    reactor.pump(lambda: len(out) == 41)
    assert out.fired == [("blocker", "blocker")] + [(n, n.upper()) for n in names]
    assert (s.commits, s.committed) == (2, 41)
    assert commits(statements) == 2
    assert s.transact_now(lambda t: t.count("things")) == 41


def test_batches_are_bounded(tmp_path: Path) -> None:
    reactor = ThreadReactor()
    s = SQLiteStore(tmp_path / "s.sqlite", reactor, max_batch=4)
    s.migrate([M1])
    s.start()
    out = Outcomes()
    release = blocker(s, out)
    for i in range(10):
        out.watch(s.transact(put(f"k{i}")), f"k{i}")
    release.set()
    reactor.pump(lambda: len(out) == 11)
    assert [n for n, _ in out.fired] == ["blocker"] + [f"k{i}" for i in range(10)]
    assert (s.commits, s.committed) == (1 + 3, 11)
    s.close()
    with pytest.raises(StoreError):
        SQLiteStore(tmp_path / "x.sqlite", reactor, max_batch=0)


def test_a_busy_store_gathers_the_next_batch(tmp_path: Path) -> None:
    """After a commit of several transactions, the worker waits ``gather``
    before the next batch: transactions arriving apart share its commit; a
    store that committed one transaction alone commits the next at once."""
    reactor = ThreadReactor()
    s = SQLiteStore(tmp_path / "s.sqlite", reactor, gather=0.5)
    s.migrate([M1])
    s.start()
    out = Outcomes()
    release = blocker(s, out)  # a batch of one: not busy
    for name in ("a", "b"):
        out.watch(s.transact(put(name)), name)
    release.set()
    reactor.pump(lambda: len(out) == 3)
    assert (s.commits, s.committed) == (2, 3)  # the blocker, then a and b: busy
    out.watch(s.transact(put("c")), "c")
    time.sleep(0.1)  # well inside the gather
    out.watch(s.transact(put("d")), "d")
    reactor.pump(lambda: len(out) == 5)
    assert [n for n, _ in out.fired] == ["blocker", "a", "b", "c", "d"]
    assert (s.commits, s.committed) == (3, 5)  # c and d shared one commit
    # that was busy too; now one alone (after the gather), then one more at once
    out.watch(s.transact(put("e")), "e")
    reactor.pump(lambda: len(out) == 6)
    started = time.monotonic()
    out.watch(s.transact(put("f")), "f")
    reactor.pump(lambda: len(out) == 7)
    assert time.monotonic() - started < 0.4
    assert (s.commits, s.committed) == (5, 7)
    s.close()
    with pytest.raises(StoreError):
        SQLiteStore(tmp_path / "x.sqlite", reactor, gather=-1)


def test_a_failing_transaction_undoes_only_its_own_writes(store: Any) -> None:
    s, reactor, _ = store
    out = Outcomes()

    def half(txn: Any) -> None:
        txn.put("things", "half", {"owner": "h"})
        txn.delete("things", "blocker")
        raise RuntimeError("boom")

    release = blocker(s, out)
    out.watch(s.transact(put("before")), "before")
    out.watch(s.transact(half), "half")
    out.watch(s.transact(put("after")), "after")
    release.set()
    reactor.pump(lambda: len(out) == 4)
    assert [n for n, _ in out.fired] == ["blocker", "before", "half", "after"]
    assert isinstance(out.of("half"), RuntimeError)
    assert read(s, "half") is None
    assert read(s, "blocker") == {"owner": "b"}
    assert read(s, "before") == {"owner": "before"}
    assert read(s, "after") == {"owner": "after"}
    assert s.commits == 2


def test_a_conflict_in_a_batch_is_isolated(store: Any) -> None:
    s, reactor, _ = store
    s.transact_now(lambda t: t.put("things", "taken", {"owner": "first"}))
    out = Outcomes()

    def clash(txn: Any) -> None:
        txn.put("things", "side", {"owner": "clash"})
        txn.insert("things", "taken", {"owner": "second"})

    def fresh(txn: Any) -> str:
        txn.insert("things", "new", {"owner": "n"})
        return "ok"

    release = blocker(s, out)
    out.watch(s.transact(clash), "clash")
    out.watch(s.transact(fresh), "fresh")
    release.set()
    reactor.pump(lambda: len(out) == 3)
    assert isinstance(out.of("clash"), Conflict)
    assert out.of("fresh") == "ok"
    assert read(s, "taken") == {"owner": "first"}
    assert read(s, "side") is None
    assert read(s, "new") == {"owner": "n"}


def test_callbacks_fire_in_submission_order_across_batches(store: Any) -> None:
    s, reactor, _ = store
    out = Outcomes()
    names = [f"k{i:03d}" for i in range(300)]
    for i, name in enumerate(names):
        fn = put(name) if i % 7 else (lambda t: 1 / 0)
        out.watch(s.transact(fn), name)
    reactor.pump(lambda: len(out) == len(names))
    assert [n for n, _ in out.fired] == names
    assert s.committed == len(names)
    assert s.commits < len(names)


def test_committed_batches_survive_a_reopen(tmp_path: Path) -> None:
    reactor = ThreadReactor()
    s = SQLiteStore(tmp_path / "s.sqlite", reactor)
    s.migrate([M1])
    out = Outcomes()
    for i in range(50):
        out.watch(s.transact(put(f"k{i}")), f"k{i}")
    reactor.pump(lambda: len(out) == 50)
    s2 = SQLiteStore(tmp_path / "s.sqlite")  # a second connection sees it on disk
    assert s2.transact_now(lambda t: t.count("things")) == 50
    s2.close()
    s.close()
    s3 = SQLiteStore(tmp_path / "s.sqlite")
    assert s3.transact_now(lambda t: t.get("things", "k49")) == {"owner": "k49"}
    s3.close()


def test_close_finishes_the_running_batch_and_fails_the_queued(store: Any) -> None:
    s, reactor, _ = store
    out = Outcomes()
    release = blocker(s, out)
    for i in range(5):
        out.watch(s.transact(put(f"k{i}")), f"k{i}")
    threading.Timer(0.05, release.set).start()
    s.close()
    assert len(out) == 6  # all fired inside close(), in order
    assert out.fired[0] == ("blocker", "blocker")
    assert [n for n, _ in out.fired[1:]] == [f"k{i}" for i in range(5)]
    for _, value in out.fired[1:]:
        assert isinstance(value, StoreError) and "closed" in str(value)
    late = Outcomes()
    late.watch(s.transact(put("late")), "late")
    assert isinstance(late.of("late"), StoreError)
    with pytest.raises(StoreError, match="closed"):
        read(s, "blocker")
    reactor.pump(lambda: reactor.calls.empty(), timeout=0.1)
    s2 = SQLiteStore(s.path)
    assert s2.transact_now(lambda t: t.count("things")) == 1
    s2.close()


def test_transact_now_does_not_interleave_with_a_batch(store: Any) -> None:
    s, reactor, _ = store
    out = Outcomes()
    release = blocker(s, out)
    seen: list[Any] = []
    t = threading.Thread(target=lambda: seen.append(read(s, "blocker")))
    t.start()
    t.join(0.1)
    assert t.is_alive() and not seen  # waits for the batch's lock
    release.set()
    t.join(10)
    assert seen == [{"owner": "b"}]
    reactor.pump(lambda: len(out) == 1)


class FlakyConn:
    """Wraps a connection; the ``n``-th execution of ``sql`` raises."""

    def __init__(self, conn: sqlite3.Connection, sql: str, n: int = 1) -> None:
        self._conn, self._sql, self._left = conn, sql, n

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == self._sql:
            self._left -= 1
            if self._left == 0:
                raise sqlite3.OperationalError(f"injected failure of {sql}")
        return self._conn.execute(sql, *args)

    def cursor(self) -> FlakyConn:
        """A batch runs its statements on one cursor: they come here too."""
        return self

    def close(self) -> None:
        self._conn.close()


def test_a_failed_commit_fails_the_whole_batch_and_keeps_nothing(store: Any) -> None:
    s, reactor, _ = store
    out = Outcomes()
    release = blocker(s, out)
    for i in range(3):
        out.watch(s.transact(put(f"k{i}")), f"k{i}")
    # the blocker's batch holds the real connection: the next batch's COMMIT fails
    s._conn = FlakyConn(s._conn, "COMMIT")
    release.set()
    reactor.pump(lambda: len(out) == 4)
    assert out.of("blocker") == "blocker"
    for i in range(3):
        assert isinstance(out.of(f"k{i}"), StoreError)
        assert read(s, f"k{i}") is None
    s._conn = s._conn._conn


def test_a_broken_transaction_fails_its_batch_so_far_and_the_rest_goes_on(store: Any) -> None:
    s, reactor, _ = store
    out = Outcomes()
    release = blocker(s, out)
    for i in range(3):
        out.watch(s.transact(put(f"k{i}")), f"k{i}")
    # the blocker's batch holds the real connection: k1's RELEASE fails
    s._conn = FlakyConn(s._conn, "RELEASE txn", n=2)
    release.set()
    reactor.pump(lambda: len(out) == 4)
    s._conn = s._conn._conn
    assert out.of("blocker") == "blocker"
    assert isinstance(out.of("k0"), StoreError)
    assert isinstance(out.of("k1"), StoreError)
    assert out.of("k2") == "k2"
    assert [read(s, f"k{i}") is None for i in range(3)] == [True, True, False]


def test_a_cancelled_deferred_is_skipped(store: Any) -> None:
    s, reactor, _ = store
    out = Outcomes()
    release = blocker(s, out)
    d = s.transact(put("c"))
    d.addErrback(lambda f: None)
    d.cancel()
    out.watch(s.transact(put("after")), "after")
    release.set()
    reactor.pump(lambda: len(out) == 2)
    assert out.of("after") == "after"
    assert read(s, "c") == {"owner": "c"}  # committed all the same


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_worker_and_connection(store: Any) -> None:
    s, reactor, _ = store
    out = Outcomes()
    out.watch(s.transact(put("parent")), "parent")
    reactor.pump(lambda: len(out) == 1)
    pid = os.fork()
    if pid == 0:  # the child: the parent's worker thread is not here
        code = 1
        try:
            child = ThreadReactor()
            s._reactor = child
            mine = Outcomes()
            mine.watch(s.transact(put("child")), "child")
            child.pump(lambda: len(mine) == 1, timeout=5)
            code = 0 if mine.of("child") == "child" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert read(s, "child") == {"owner": "child"}
    out.watch(s.transact(put("again")), "again")
    reactor.pump(lambda: len(out) == 2)
    assert out.of("again") == "again"


def test_a_batch_reads_as_each_transaction_alone_would(tmp_path: Path) -> None:
    # The statements of a batch share one cursor: a read left unfinished (get
    # reads one row; scan is iterated while other statements run) must not
    # mix with the next statement, and a failed transaction's savepoint still
    # undoes only its own writes.
    def fn(txn: Any) -> Any:
        first = txn.get("things", "a")
        seen = []
        for key, doc in txn.scan("things"):
            seen.append((key, doc, txn.get("things", "b"), txn.count("things", owner="x")))
            txn.put("things", key + "!", {"owner": "y", "n": doc["n"]})
        found = txn.find("things", owner="y")
        gone = txn.delete("things", "b!")
        return first, seen, found, gone, txn.get("things", "b!"), txn.count("things")

    def fails(txn: Any) -> None:
        txn.put("things", "zzz", {"owner": "z", "n": 0})
        txn.insert("things", "a", {"owner": "x", "n": 9})  # Conflict: undone, zzz too

    def seed(txn: Any) -> None:
        txn.put("things", "a", {"owner": "x", "n": 1})
        txn.put("things", "b", {"owner": "x", "n": 2})

    results = []
    for batched in (False, True):
        s = SQLiteStore(tmp_path / f"{batched}.sqlite")
        s.migrate([M1])
        s.transact_now(seed)
        if batched:
            outcomes = s._run_batch([fails, fn, fails])
            assert [ok for ok, _ in outcomes] == [False, True, False]
            assert isinstance(outcomes[0][1].value, Conflict)
            results.append(outcomes[1][1])
        else:
            with pytest.raises(Conflict):
                s.transact_now(fails)
            results.append(s.transact_now(fn))
        assert s.transact_now(lambda txn: txn.get("things", "zzz")) is None
        s.close()
    assert results[0] == results[1]
    assert results[0][0] == {"owner": "x", "n": 1} and results[0][3] is True
