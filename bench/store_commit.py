"""Benchmark: durable store transactions per second with group commit.

K writers, each keeping one small ``put`` transaction in flight through
:class:`imsp2pd.store.SQLiteStore` with a real reactor (the next one is
submitted from the previous one's callback), for SECONDS. Beside it, from
the same run and on the same disk, the anchor: raw ``sqlite3`` single-row
commits (``BEGIN IMMEDIATE``, ``INSERT OR REPLACE``, ``COMMIT``) in WAL with
``synchronous=FULL`` in a loop, the ceiling of one commit per transaction.
Also shown: one writer (latency-bound: one transaction per commit and a
thread hop each way) and K writers with ``max_batch=1`` (the store as it was
before group commit). The store's group-commit figure is printed last, with
its ratio to the anchor and the mean number of transactions per commit.

    .venv/bin/python bench/store_commit.py [--seconds 3] [--writers 256] [--dir DIR]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer

from imsp2pd.store import Collection, Migration, SQLiteStore

MIGRATION = Migration("bench-0001", [Collection("things", ("owner",))])


def anchor(path: Path, seconds: float, keys: int) -> float:
    """Raw sqlite3: one single-row commit after another, WAL, synchronous=FULL."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (key TEXT PRIMARY KEY, doc TEXT NOT NULL) WITHOUT ROWID")
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT OR REPLACE INTO t (key, doc) VALUES (?, ?)",
            (f"w{n % keys}", f'{{"n":{n},"owner":"bench"}}'),
        )
        conn.execute("COMMIT")
        n += 1
    rate = n / (time.perf_counter() - start)
    conn.close()
    return rate


def writers(
    reactor: Any, store: SQLiteStore, k: int, seconds: float
) -> defer.Deferred[tuple[float, float]]:
    """K writers for SECONDS: (transactions per second, transactions per commit)."""
    done: defer.Deferred[tuple[float, float]] = defer.Deferred()
    commits0, committed0 = store.commits, store.committed
    count = [0]
    active = [k]
    start = time.perf_counter()
    end = start + seconds

    def put(i: int, n: int) -> Any:
        return lambda txn: txn.put("things", f"w{i}", {"n": n, "owner": "bench"})

    def one(i: int, n: int) -> None:
        if time.perf_counter() >= end:
            active[0] -= 1
            if active[0] == 0:
                elapsed = time.perf_counter() - start
                commits = store.commits - commits0
                batch = (store.committed - committed0) / commits if commits else 0.0
                done.callback((count[0] / elapsed, batch))
            return
        d = store.transact(put(i, n))
        d.addCallback(lambda _: (count.__setitem__(0, count[0] + 1), one(i, n + 1)))
        d.addErrback(lambda f: (print(f"writer {i}: {f.value!r}", file=sys.stderr), one(i, n + 1)))

    for i in range(k):
        one(i, 0)
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--writers", type=int, default=256)
    ap.add_argument("--dir", default=None, help="where the files go (default: a temporary dir)")
    args = ap.parse_args()

    from twisted.internet import reactor

    results: dict[str, Any] = {}

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="store-commit-") as tmp:
        base = Path(tmp)
        results["anchor"] = anchor(base / "anchor.sqlite", args.seconds, args.writers)

        @defer.inlineCallbacks
        def run() -> Generator[Any, Any, None]:
            try:
                for name, k, max_batch in (
                    ("one", 1, 256),
                    ("unbatched", args.writers, 1),
                    ("group", args.writers, 256),
                ):
                    store = SQLiteStore(base / f"{name}.sqlite", reactor, max_batch=max_batch)
                    store.migrate([MIGRATION])
                    store.start()
                    results[name] = yield writers(reactor, store, k, args.seconds)
                    store.close()
            finally:
                reactor.stop()  # type: ignore[attr-defined]

        reactor.callWhenRunning(run)  # type: ignore[attr-defined]
        reactor.run()  # type: ignore[attr-defined]

    a = results["anchor"]
    print(f"anchor: raw sqlite3 single-row commits, WAL, synchronous=FULL: {a:9.0f} commits/s")
    for name, label in (
        ("one", "store, 1 writer"),
        ("unbatched", f"store, {args.writers} writers, max_batch=1 (one commit each)"),
        ("group", f"store, {args.writers} writers, group commit"),
    ):
        rate, batch = results[name]
        print(
            f"{label}: {rate:9.0f} transactions/s ({batch:.1f} per commit, x{rate / a:.2f} anchor)"
        )


if __name__ == "__main__":
    main()
