"""The embedded store: one SQLite file in WAL mode, used from one thread.

Each collection is a table ``c_<name>(key TEXT PRIMARY KEY, doc TEXT)`` with
an expression index on ``json_extract(doc, '$.<field>')`` per declared field.
Migrations are recorded in ``schema_migrations``. Transactions run on a
single worker thread (so the reactor thread never waits on the disk) with
``BEGIN IMMEDIATE`` and ``synchronous=FULL``: a commit is on disk before the
Deferred fires, so an acknowledged write survives ``kill -9``.

Without a reactor (unit tests, command-line tools) transactions run inline
and :meth:`SQLiteStore.transact` returns an already-fired Deferred.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from imsp2pd.store.interface import Collection, Conflict, Doc, Migration, StoreError

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY, indexes TEXT NOT NULL);
"""


def _dumps(doc: Doc) -> str:
    if not isinstance(doc, dict):
        raise StoreError(f"a document must be a dict, not {type(doc).__name__}")
    return json.dumps(doc, separators=(",", ":"), sort_keys=True, allow_nan=False)


class _SQLiteTxn:
    def __init__(self, conn: sqlite3.Connection, known: dict[str, tuple[str, ...]]) -> None:
        self._c = conn
        self._known = known

    def _table(self, collection: str) -> str:
        if collection not in self._known:
            raise StoreError(f"unknown collection {collection!r} (declare it in a Migration)")
        return f"c_{collection}"

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
        self._c.execute(
            f"INSERT OR REPLACE INTO {self._table(collection)} (key, doc) VALUES (?, ?)",
            (key, _dumps(doc)),
        )

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


class SQLiteStore:
    """The SQLite implementation of :class:`imsp2pd.store.Store`.

    ``reactor`` given: transactions run on one worker thread, started by
    :meth:`start` (the daemon calls it) or lazily by the first transaction.
    """

    def __init__(self, path: str | Path, reactor: Any = None) -> None:
        self.path = Path(path)
        self._reactor = reactor
        self._lock = threading.Lock()
        self._known: dict[str, tuple[str, ...]] = {}
        self._pool: ThreadPool | None = None
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def open(self) -> None:
        """Open the file (made if missing). Called lazily; never before a fork."""
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
        if self._pool is None:
            self.start()
        assert self._pool is not None
        return deferToThreadPool(self._reactor, self._pool, self._run, fn)

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
        self._closed = False
        self.open()
        if self._reactor is None or self._pool is not None:
            return
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="imsp2pd-store")
        self._pool.start()
        self._reactor.addSystemEventTrigger("during", "shutdown", self.close)

    def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()
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
