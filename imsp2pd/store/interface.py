"""The storage interface that the roles program against.

A document is a JSON object (``dict`` of JSON values); a collection maps
string keys to documents. Equality lookups (:meth:`Txn.find`) are allowed on
the fields a collection declared as indexes. Every access happens inside a
transaction function ``fn(txn)`` that the store runs atomically: all of its
writes are durable before the Deferred returned by :meth:`Store.transact`
fires, and none of them happen if ``fn`` raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")
Doc = dict[str, Any]


class StoreError(Exception):
    """The store cannot do what was asked (bad collection, broken file, …)."""


class Conflict(StoreError):
    """:meth:`Txn.insert` found the key already there."""


@dataclass(frozen=True)
class Collection:
    """A collection and the document fields it can be searched by."""

    name: str
    indexes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for part in (self.name, *self.indexes):
            if not part.replace("_", "").isalnum() or not part[0].isalpha():
                raise StoreError(f"bad collection or index name {part!r}")


@dataclass(frozen=True)
class Migration:
    """One versioned schema step, applied once and recorded by its id.

    ``collections`` are created (with their indexes); ``run``, if given, is
    called inside the same transaction afterwards for data changes. Ids are
    namespaced by their owner, e.g. ``"hss-0001-subscribers"``.
    """

    id: str
    collections: Sequence[Collection] = field(default_factory=tuple)
    run: Callable[[Txn], None] | None = None


class Txn(Protocol):
    """Reads and writes inside one atomic transaction."""

    def get(self, collection: str, key: str) -> Doc | None: ...

    def put(self, collection: str, key: str, doc: Doc) -> None:
        """Insert or replace."""

    def insert(self, collection: str, key: str, doc: Doc) -> None:
        """Insert; :class:`Conflict` when the key exists."""

    def delete(self, collection: str, key: str) -> bool:
        """Remove; whether it was there."""

    def find(self, collection: str, limit: int | None = None, **eq: Any) -> list[tuple[str, Doc]]:
        """Documents whose indexed fields equal the given values, in key order."""

    def scan(
        self, collection: str, prefix: str = "", after: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, Doc]]:
        """Documents in key order, optionally under a key prefix or after a key."""

    def count(self, collection: str, **eq: Any) -> int: ...


class Store(Protocol):
    """A durable store. :meth:`transact` never blocks the reactor thread."""

    def transact(self, fn: Callable[[Txn], T]) -> Deferred[T]:
        """Run ``fn`` atomically off the reactor thread; fires with its result."""

    def transact_now(self, fn: Callable[[Txn], T]) -> T:
        """Run ``fn`` atomically in the calling thread (start-up and tools only)."""

    def migrate(self, migrations: Sequence[Migration]) -> list[str]:
        """Apply the migrations not yet applied; the ids applied now."""

    def start(self) -> None: ...

    def close(self) -> None: ...
