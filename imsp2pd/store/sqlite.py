"""The embedded store: one SQLite file in WAL mode, used from one thread.

Each collection is a table ``c_<name>(key TEXT PRIMARY KEY, doc TEXT)`` with
an expression index on ``json_extract(doc, '$.<field>')`` per declared field.
Migrations are recorded in ``schema_migrations``. Transactions run on a
single worker thread (so the reactor thread never waits on the disk) with
``BEGIN IMMEDIATE`` and ``synchronous=FULL``: a commit is on disk before the
Deferred fires, so an acknowledged write survives ``kill -9``. The worker
commits in groups: the transactions queued while one commit is on its way
to the disk share the next commit, each in its own savepoint; and while
commits carry more than one transaction (a busy store), the worker waits
``gather`` seconds (2 ms) after the first transaction of the next batch
before it begins: fewer, larger commits in a burst of registrations, at a
few milliseconds of latency only under load.

Without a reactor (unit tests, command-line tools) transactions run inline
and :meth:`SQLiteStore.transact` returns an already-fired Deferred.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from imsp2pd.store.interface import Collection, Conflict, Doc, Migration, StoreError

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY, indexes TEXT NOT NULL);
"""


#: what json.dumps(doc, separators=(",", ":"), sort_keys=True, allow_nan=False)
#: builds for each call, made once
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False)


def _dumps(doc: Doc) -> str:
    if not isinstance(doc, dict):
        raise StoreError(f"a document must be a dict, not {type(doc).__name__}")
    return _ENCODER.encode(doc)


class _SQLiteTxn:
    """The :class:`~imsp2pd.store.interface.Txn` of a transaction, or of a
    batch of them: its statements run on one cursor (``conn.execute`` makes
    one per statement); each method takes what its statement returns before
    it returns, so the next statement may reset the cursor."""

    def __init__(self, conn: sqlite3.Connection, known: dict[str, tuple[str, ...]]) -> None:
        self._c = conn.cursor()
        self._known = known
        #: the put statement of each collection, made once
        self._puts: dict[str, str] = {}

    def _table(self, collection: str) -> str:
        if collection not in self._known:
            raise StoreError(f"unknown collection {collection!r} (declare it in a Migration)")
        return f"c_{collection}"

    def execute(self, sql: str) -> None:
        """A statement without parameters or rows (BEGIN, SAVEPOINT, COMMIT, ...)."""
        self._c.execute(sql)

    def _where(self, collection: str, eq: dict[str, Any]) -> tuple[str, list[Any]]:
        indexes = self._known[collection]
        clauses, args = [], []
        for name, value in eq.items():
            if name not in indexes:
                raise StoreError(f"{collection}.{name} is not an index of {collection!r}")
            if value is None:
                clauses.append(f"json_extract(doc, '$.{name}') IS NULL")
            else:
                clauses.append(f"json_extract(doc, '$.{name}') = ?")
                args.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def get(self, collection: str, key: str) -> Doc | None:
        row = self._c.execute(
            f"SELECT doc FROM {self._table(collection)} WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, collection: str, key: str, doc: Doc) -> None:
        sql = self._puts.get(collection)
        if sql is None:
            sql = f"INSERT OR REPLACE INTO {self._table(collection)} (key, doc) VALUES (?, ?)"
            self._puts[collection] = sql
        self._c.execute(sql, (key, _dumps(doc)))

    def insert(self, collection: str, key: str, doc: Doc) -> None:
        try:
            self._c.execute(
                f"INSERT INTO {self._table(collection)} (key, doc) VALUES (?, ?)",
                (key, _dumps(doc)),
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"{collection}/{key} exists") from None

    def delete(self, collection: str, key: str) -> bool:
        cur = self._c.execute(f"DELETE FROM {self._table(collection)} WHERE key = ?", (key,))
        return cur.rowcount > 0

    def find(self, collection: str, limit: int | None = None, **eq: Any) -> list[tuple[str, Doc]]:
        table = self._table(collection)
        where, args = self._where(collection, eq)
        sql = f"SELECT key, doc FROM {table}{where} ORDER BY key"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [(k, json.loads(d)) for k, d in self._c.execute(sql, args)]

    def scan(
        self, collection: str, prefix: str = "", after: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, Doc]]:
        table = self._table(collection)
        clauses, args = [], []
        if prefix:
            clauses.append("substr(key, 1, ?) = ?")
            args += [len(prefix), prefix]
        if after is not None:
            clauses.append("key > ?")
            args.append(after)
        sql = f"SELECT key, doc FROM {table}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY key"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        for k, d in self._c.execute(sql, args).fetchall():
            yield k, json.loads(d)

    def count(self, collection: str, **eq: Any) -> int:
        where, args = self._where(collection, eq)
        return int(
            self._c.execute(
                f"SELECT count(*) FROM {self._table(collection)}{where}", args
            ).fetchone()[0]
        )


@dataclass
class _Queued:
    """A transaction waiting for the worker: its function and its Deferred."""

    fn: Callable[[Any], Any]
    d: Deferred[Any]


#: One outcome per transaction of a batch: (succeeded, result or Failure).
_Outcome = tuple[bool, Any]


def _failed(n: int, why: str) -> list[_Outcome]:
    """``n`` outcomes, each failed with its own :class:`StoreError`."""
    return [(False, Failure(StoreError(why))) for _ in range(n)]


class SQLiteStore:
    """The SQLite implementation of :class:`imsp2pd.store.Store`.

    ``reactor`` given: transactions run on one worker thread, started by
    :meth:`start` (the daemon calls it) or lazily by the first transaction.
    The worker commits in groups: it takes every transaction queued (up to
    ``max_batch``) and runs them in one ``BEGIN IMMEDIATE``, each inside its
    own ``SAVEPOINT`` so that one which raises undoes only its own writes,
    then one ``COMMIT`` (one fsync) for all of them. Only after the commit
    are the results handed to the reactor, in submission order, with one
    ``callFromThread`` per batch. A transaction submitted while a batch is
    committing waits for the next one; a lone transaction commits at once.
    """

    def __init__(
        self, path: str | Path, reactor: Any = None, max_batch: int = 256, gather: float = 0.002
    ) -> None:
        if max_batch < 1:
            raise StoreError("store: max_batch must be at least 1")
        if gather < 0:
            raise StoreError("store: gather must not be negative")
        self.path = Path(path)
        self.max_batch = max_batch
        self.gather = gather
        self._reactor = reactor
        self._known: dict[str, tuple[str, ...]] = {}
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        #: Batches committed by the worker, and the transactions in them.
        self.commits = 0
        self.committed = 0
        self._orphans: list[sqlite3.Connection] = []
        self._fresh_state()

    def _fresh_state(self) -> None:
        # _lock serialises use of the connection (the worker's batches,
        # transact_now, migrate); _cond guards the queues below.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Queued] = deque()
        self._done: deque[list[tuple[Deferred[Any], _Outcome]]] = deque()
        self._worker: threading.Thread | None = None
        self._stopping = False

    def _check_fork(self) -> None:
        """In a forked child, forget the parent's thread, locks and connection."""
        if self._pid != os.getpid():
            if self._conn is not None:  # the parent's: never used, nor closed, here
                self._orphans.append(self._conn)
            self._conn = None
            self._fresh_state()

    def open(self) -> None:
        """Open the file (made if missing). Called lazily; never before a fork."""
        self._check_fork()
        if self._conn is not None:
            return
        try:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=30
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
            for name, indexes in conn.execute("SELECT name, indexes FROM collections"):
                self._known[name] = tuple(json.loads(indexes))
        except (sqlite3.DatabaseError, OSError) as e:
            raise StoreError(f"store: cannot open {self.path}: {e}") from None
        self._conn = conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.open()
        assert self._conn is not None
        return self._conn

    # -- transactions ---------------------------------------------------------

    def _run(self, fn: Callable[[_SQLiteTxn], T]) -> T:
        if self._closed:
            raise StoreError(f"store: {self.path} is closed")
        self._check_fork()
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(_SQLiteTxn(conn, self._known))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def transact_now(self, fn: Callable[[Any], T]) -> T:
        return self._run(fn)

    def transact(self, fn: Callable[[Any], T]) -> Deferred[T]:
        if self._reactor is None or self._closed:
            try:
                return succeed(self._run(fn))
            except Exception:
                return fail()
        self._check_fork()
        if self._worker is None:
            try:
                self.start()
            except StoreError:
                return fail()
        d: Deferred[T] = Deferred()
        with self._cond:
            self._queue.append(_Queued(fn, d))
            self._cond.notify()
        return d

    # -- the worker -----------------------------------------------------------

    def _work(self) -> None:
        """The worker thread: take what is queued, commit it as one batch, repeat."""
        busy = False  # the last batch held more than one transaction
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
            if busy and self.gather and not self._stopping:
                time.sleep(self.gather)  # let the batch fill (the GIL is released)
            with self._lock:
                with self._cond:
                    n = min(len(self._queue), self.max_batch)
                    batch = [self._queue.popleft() for _ in range(n)]
                busy = n > 1
                if not batch:  # close() took them
                    continue
                try:
                    outcomes = self._run_batch([q.fn for q in batch])
                except BaseException as e:  # a bug here must not kill the worker
                    self._rollback()
                    outcomes = _failed(len(batch), f"store: batch failed: {e!r}")
            with self._cond:
                self._done.append([(q.d, o) for q, o in zip(batch, outcomes, strict=True)])
            self._reactor.callFromThread(self._deliver)

    def _deliver(self) -> None:
        """In the reactor thread: fire the committed batches' Deferreds, in order."""
        while True:
            with self._cond:
                if not self._done:
                    return
                fired = self._done.popleft()
            for d, (ok, value) in fired:
                if d.called:  # cancelled by its caller: the result is dropped
                    continue
                if ok:
                    d.callback(value)
                else:
                    d.errback(value)

    def _rollback(self) -> None:
        conn = self._conn
        if conn is not None and conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _run_batch(self, fns: list[Callable[[Any], Any]]) -> list[_Outcome]:
        """Run ``fns`` in one transaction, each in a savepoint; one COMMIT.

        Should the transaction itself break (a savepoint that SQLite dropped,
        a failed COMMIT), what ran in it so far fails with :class:`StoreError`
        and the rest goes on in a new transaction.
        """
        conn = self.conn
        txn = _SQLiteTxn(conn, self._known)
        outcomes: list[_Outcome] = []
        while len(outcomes) < len(fns):
            first = len(outcomes)
            try:
                txn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                outcomes += _failed(len(fns) - first, f"store: cannot begin: {e}")
                break
            broken = False
            while len(outcomes) < len(fns) and not broken:
                ok, value, broken = self._one(conn, txn, fns[len(outcomes)])
                outcomes.append((ok, value))
            if broken:
                self._rollback()
                for i in range(first, len(outcomes) - 1):
                    if outcomes[i][0]:
                        outcomes[i] = _failed(1, "store: transaction aborted in its batch")[0]
                continue
            try:
                txn.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                outcomes[first:] = _failed(len(outcomes) - first, f"store: commit failed: {e}")
                continue
            self.commits += 1
            self.committed += len(outcomes) - first
        return outcomes

    @staticmethod
    def _one(
        conn: sqlite3.Connection, txn: _SQLiteTxn, fn: Callable[[Any], Any]
    ) -> tuple[bool, Any, bool]:
        """One transaction of a batch in its savepoint: (ok, result, transaction broken)."""
        try:
            txn.execute("SAVEPOINT txn")
        except sqlite3.Error as e:
            return False, Failure(StoreError(f"store: savepoint failed: {e}")), True
        ok: bool
        value: Any
        try:
            ok, value = True, fn(txn)
            ends: tuple[str, ...] = ("RELEASE txn",)
        except Exception:
            ok, value = False, Failure()
            ends = ("ROLLBACK TO txn", "RELEASE txn")
        try:
            for sql in ends:
                txn.execute(sql)
        except sqlite3.Error as e:
            if ok:
                ok, value = False, Failure(StoreError(f"store: transaction broken: {e}"))
            return ok, value, True
        return ok, value, not conn.in_transaction

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
        self._check_fork()
        self._closed = False
        self.open()
        if self._reactor is None or self._worker is not None:
            return
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="imsp2pd-store", daemon=True)
        self._worker.start()
        self._reactor.addSystemEventTrigger("during", "shutdown", self.close)

    def close(self) -> None:
        """Stop: finish the batch being committed, fail what is still queued.

        Call it in the reactor thread (as the shutdown trigger does): the
        Deferreds of the last batch fire here, in order, then the queued
        ones fail with :class:`StoreError`.
        """
        self._closed = True
        self._check_fork()
        worker, self._worker = self._worker, None
        with self._cond:
            self._stopping = True
            refused = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join()
        self._deliver()
        for q in refused:
            q.d.errback(Failure(StoreError(f"store: {self.path} closed before commit")))
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- schema ---------------------------------------------------------------

    def applied_migrations(self) -> list[str]:
        with self._lock:
            return [
                r[0]
                for r in self.conn.execute(
                    "SELECT id FROM schema_migrations ORDER BY applied_at, id"
                )
            ]

    def _create(self, txn: _SQLiteTxn, coll: Collection) -> None:
        table = f"c_{coll.name}"
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, doc TEXT NOT NULL) WITHOUT ROWID"
        )
        for ix in coll.indexes:
            self.conn.execute(
                f"CREATE INDEX IF NOT EXISTS ix_{coll.name}__{ix} ON {table} (json_extract(doc, '$.{ix}'))"
            )
        old = self._known.get(coll.name, ())
        merged = tuple(dict.fromkeys((*old, *coll.indexes)))
        self.conn.execute(
            "INSERT OR REPLACE INTO collections (name, indexes) VALUES (?, ?)",
            (coll.name, json.dumps(list(merged))),
        )
        self._known[coll.name] = merged

    def migrate(self, migrations: Sequence[Migration]) -> list[str]:
        ids = [m.id for m in migrations]
        if len(set(ids)) != len(ids):
            raise StoreError("store: duplicate migration ids")
        done = set(self.applied_migrations())
        applied = []
        for m in migrations:
            if m.id in done:
                continue

            def step(txn: _SQLiteTxn, m: Migration = m) -> None:
                for coll in m.collections:
                    self._create(txn, coll)
                if m.run is not None:
                    m.run(txn)
                self.conn.execute(
                    "INSERT INTO schema_migrations (id, applied_at) VALUES (?, ?)",
                    (m.id, time.time()),
                )

            known_before = dict(self._known)
            try:
                self._run(step)
            except BaseException:
                self._known = known_before
                raise
            applied.append(m.id)
        return applied


def open_store(path: str | Path, reactor: Any = None) -> SQLiteStore:
    return SQLiteStore(path, reactor)
