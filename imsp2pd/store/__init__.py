"""The store: durable state of every role behind one small interface.

Roles see collections of JSON documents with string keys (:class:`Txn`), run
their reads and writes as atomic transactions off the reactor thread
(:meth:`Store.transact`), and declare their collections and indexes as
versioned :class:`Migration` steps. They never see SQL, so another backend
(PostgreSQL, say) can be added without touching them; SQLite is the embedded
default (:mod:`imsp2pd.store.sqlite`).
"""

from imsp2pd.store.interface import (
    Collection,
    Conflict,
    Migration,
    Store,
    StoreError,
    Txn,
)
from imsp2pd.store.sqlite import SQLiteStore, open_store

__all__ = [
    "Collection",
    "Conflict",
    "Migration",
    "SQLiteStore",
    "Store",
    "StoreError",
    "Txn",
    "open_store",
]
