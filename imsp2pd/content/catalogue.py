"""The content catalogue: what the AS writes at PUBLISH and the index shows.

An *asset* is one piece of protected content, keyed by its DOI: title,
description, genre, series, the publisher's IMPU, its offers (DESIGN.md §3),
the info-hash and the .torrent, the tracker its swarm lives on, a state and
timestamps. Assets live in the store collection ``catalogue_assets`` (key:
the DOI); the .torrent bytes live apart in ``catalogue_torrents`` (key: the
info-hash in lower-case hex, the bytes base64), so listing never loads them.

States (:class:`AssetState`)::

    pending ──> listed ──> removed
       └──────────────────────^

``pending``: published, the swarm is muted while the operator's seeder (or
the provider) completes it; not shown on the index. ``listed``: on sale and
on the index. ``removed``: taken down by its publisher or the operator; kept
for the record, never shown, and its DOI and info-hash are never reused.

Everything that checks input is pure and raises a subclass of
:class:`CatalogueError` with one line naming the fault (:class:`OfferError`
for offers, :class:`AssetError` for the rest). The transaction helpers
(``*_txn``) run inside :meth:`imsp2pd.store.Store.transact`; :class:`Catalogue`
wraps them into the small Deferred API the AS and the index use. It also
provides :meth:`Catalogue.priced_offer`, the ``Offers`` back end of the AS's
:class:`imsp2pd.content.purchase.PurchaseDesk`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, fail

from imsp2pd.bittorrent.metainfo import MetainfoError, parse_metainfo
from imsp2pd.drm.rights import Rights, RightsError
from imsp2pd.store import Collection, Conflict, Migration, Store, Txn

__all__ = [
    "ASSETS",
    "MIGRATIONS",
    "TORRENTS",
    "Asset",
    "AssetError",
    "AssetExists",
    "AssetMetadata",
    "AssetState",
    "Catalogue",
    "CatalogueError",
    "Offer",
    "OfferError",
    "StateError",
    "UnknownAsset",
    "new_asset",
    "parse_metadata",
    "parse_offer",
    "parse_offers",
]

ASSETS = "catalogue_assets"
TORRENTS = "catalogue_torrents"

# Both the AS (which writes) and the index (which reads) declare these; the
# objects are hashable and equal, so a process running both applies them once.
MIGRATIONS = (
    Migration(
        "catalogue-0001-assets",
        (
            Collection(ASSETS, ("state", "genre", "series", "publisher", "info_hash")),
            Collection(TORRENTS, ("doi",)),
        ),
    ),
)

MAX_OFFERS = 16
MAX_TITLE = 200
MAX_DESCRIPTION = 10_000
MAX_LABEL = 64  # genre, series
MAX_PRICE = Decimal("1000000000")
MAX_PRICE_DECIMALS = 6

DOI_RE = re.compile(r"^10\.\d{4,9}/[^\s]{1,200}$")
OFFER_ID_RE = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
_PRICE_RE = re.compile(r"^(0|[1-9][0-9]*)(\.[0-9]+)?$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_IMPU_RE = re.compile(r"^sips?:[^\s<>\"]{1,250}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_OFFER_KEYS = frozenset({"id", "price", "currency", "rights", "devices"})
_METADATA_KEYS = frozenset({"title", "description", "genre", "series", "offers", "doi"})


# -- errors ------------------------------------------------------------------


class CatalogueError(ValueError):
    """Something wrong with an asset or a catalogue request; one line of text."""


class OfferError(CatalogueError):
    """An offer that is not well formed (price, currency, rights, id, devices)."""


class AssetError(CatalogueError):
    """An asset field (DOI, title, torrent, tracker, …) that is not well formed."""


class UnknownAsset(CatalogueError):
    """No asset with that DOI (or info-hash)."""


class AssetExists(CatalogueError):
    """The DOI or the info-hash is already in the catalogue."""


class StateError(CatalogueError):
    """A state change the life cycle does not allow (e.g. out of ``removed``)."""


class AssetState(enum.StrEnum):
    PENDING = "pending"  # swarm muted, waiting for a complete seeder
    LISTED = "listed"
    REMOVED = "removed"


_TRANSITIONS: Mapping[AssetState, frozenset[AssetState]] = {
    AssetState.PENDING: frozenset({AssetState.LISTED, AssetState.REMOVED}),
    AssetState.LISTED: frozenset({AssetState.REMOVED}),
    AssetState.REMOVED: frozenset(),
}


# -- offers ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Offer:
    """One offer of an asset (DESIGN.md §3). ``price`` is the decimal text as given."""

    id: str
    price: str
    currency: str
    rights: Rights

    @property
    def amount(self) -> Decimal:
        return Decimal(self.price)

    @property
    def devices(self) -> int:
        return self.rights.devices

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "price": self.price,
            "currency": self.currency,
            "rights": self.rights.to_json(),
            "devices": self.rights.devices,
        }


def _price(value: Any) -> str:
    if not isinstance(value, str) or not _PRICE_RE.match(value):
        raise OfferError(
            f'price must be a non-negative decimal string such as "4.50", not {value!r:.40}'
        )
    decimals = len(value.partition(".")[2])
    if decimals > MAX_PRICE_DECIMALS:
        raise OfferError(f"price {value!r} has more than {MAX_PRICE_DECIMALS} decimals")
    try:
        amount = Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern rules it out
        raise OfferError(f"price {value!r} is not a decimal number") from None
    if amount >= MAX_PRICE:
        raise OfferError(f"price {value!r} is too large")
    return value


def parse_offer(obj: Any) -> Offer:
    """Check one offer (a decoded JSON object); :class:`OfferError` names the fault."""
    if not isinstance(obj, dict):
        raise OfferError("an offer must be a JSON object")
    unknown = sorted(set(obj) - _OFFER_KEYS)
    if unknown:
        raise OfferError(
            f"unknown offer key {unknown[0]!r} (known: {', '.join(sorted(_OFFER_KEYS))})"
        )
    offer_id = obj.get("id")
    if not isinstance(offer_id, str) or not OFFER_ID_RE.match(offer_id):
        raise OfferError("offer id must be 1-64 characters of A-Z a-z 0-9 . _ ~ -")
    where = f"offer {offer_id!r}"
    if "price" not in obj:
        raise OfferError(f"{where}: price is missing")
    try:
        price = _price(obj["price"])
    except OfferError as e:
        raise OfferError(f"{where}: {e}") from None
    currency = obj.get("currency")
    if not isinstance(currency, str) or not _CURRENCY_RE.match(currency):
        raise OfferError(f"{where}: currency must be an ISO 4217 code such as EUR")
    if "rights" not in obj:
        raise OfferError(f"{where}: rights are missing")
    try:
        rights = Rights.from_json(obj["rights"], obj.get("devices", 1))
    except RightsError as e:
        raise OfferError(f"{where}: {e}") from None
    return Offer(offer_id, price, currency, rights)


def parse_offers(value: Any) -> tuple[Offer, ...]:
    """Check a list of offers: at least one, at most ``MAX_OFFERS``, ids unique."""
    if not isinstance(value, list) or not value:
        raise OfferError("offers must be a non-empty list")
    if len(value) > MAX_OFFERS:
        raise OfferError(f"at most {MAX_OFFERS} offers")
    offers = tuple(parse_offer(o) for o in value)
    seen: set[str] = set()
    for o in offers:
        if o.id in seen:
            raise OfferError(f"duplicate offer id {o.id!r}")
        seen.add(o.id)
    return offers


# -- assets ------------------------------------------------------------------


def _text(obj: Mapping[str, Any], name: str, limit: int, *, required: bool) -> str | None:
    value = obj.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise AssetError(f"{name} must be a string")
    value = value.replace("\r\n", "\n").strip()
    if required and not value:
        raise AssetError(f"{name} must not be empty")
    if len(value) > limit:
        raise AssetError(f"{name} is longer than {limit} characters")
    if not value.replace("\n", "").replace("\t", "").isprintable():
        raise AssetError(f"{name} holds control characters")
    return value or None


def _label(obj: Mapping[str, Any], name: str) -> str | None:
    value = _text(obj, name, MAX_LABEL, required=False)
    if value is not None and ("\n" in value or "\t" in value):
        raise AssetError(f"{name} must be one line")
    return value


def check_doi(doi: Any) -> str:
    if not isinstance(doi, str) or not DOI_RE.match(doi) or not doi.isprintable():
        raise AssetError(f"not a DOI (10.NNNN/suffix): {doi!r:.80}")
    return doi


def check_info_hash(value: Any) -> str:
    if not isinstance(value, str) or not _HEX40.match(value):
        raise AssetError("info-hash must be 40 lower-case hex digits")
    return value


def check_tracker(url: Any) -> str:
    if not isinstance(url, str) or len(url) > 2048:
        raise AssetError("tracker must be an http(s) URL")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise AssetError(f"tracker is not a URL: {url!r:.80}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise AssetError(f"tracker must be an http(s) URL without a query: {url!r:.80}")
    return url


def check_publisher(impu: Any) -> str:
    if not isinstance(impu, str) or not _IMPU_RE.match(impu):
        raise AssetError(f"publisher must be a sip: or sips: IMPU, not {impu!r:.80}")
    return impu


@dataclass(frozen=True, slots=True)
class AssetMetadata:
    """What the provider says about an asset (the JSON part of the PUBLISH)."""

    title: str
    description: str = ""
    genre: str | None = None
    series: str | None = None
    offers: tuple[Offer, ...] = ()
    doi: str | None = None  # optional; when given it must match the .torrent's


def parse_metadata(obj: Any) -> AssetMetadata:
    """Check the metadata JSON of a PUBLISH; :class:`CatalogueError` names the fault."""
    if not isinstance(obj, dict):
        raise AssetError("metadata must be a JSON object")
    unknown = sorted(set(obj) - _METADATA_KEYS)
    if unknown:
        raise AssetError(f"unknown metadata key {unknown[0]!r}")
    title = _text(obj, "title", MAX_TITLE, required=True)
    assert title is not None
    if "\n" in title:
        raise AssetError("title must be one line")
    description = _text(obj, "description", MAX_DESCRIPTION, required=False) or ""
    doi = None if obj.get("doi") is None else check_doi(obj["doi"])
    return AssetMetadata(
        title=title,
        description=description,
        genre=_label(obj, "genre"),
        series=_label(obj, "series"),
        offers=parse_offers(obj.get("offers")),
        doi=doi,
    )


@dataclass(frozen=True, slots=True)
class Asset:
    doi: str
    title: str
    description: str
    genre: str | None
    series: str | None
    publisher: str
    offers: tuple[Offer, ...]
    info_hash: str  # 40 lower-case hex digits
    tracker: str  # tracker base URL, e.g. http://127.0.0.1:6969
    state: AssetState
    created: float
    updated: float
    name: str = ""  # the torrent's name
    size: int = 0  # bytes of the (protected) content
    listed_at: float | None = None
    removed_at: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def offer(self, offer_id: str) -> Offer | None:
        for o in self.offers:
            if o.id == offer_id:
                return o
        return None

    def to_doc(self) -> dict[str, Any]:
        return {
            "doi": self.doi,
            "title": self.title,
            "description": self.description,
            "genre": self.genre,
            "series": self.series,
            "publisher": self.publisher,
            "offers": [o.to_json() for o in self.offers],
            "info_hash": self.info_hash,
            "tracker": self.tracker,
            "state": str(self.state),
            "created": self.created,
            "updated": self.updated,
            "name": self.name,
            "size": self.size,
            "listed_at": self.listed_at,
            "removed_at": self.removed_at,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Asset:
        try:
            return cls(
                doi=doc["doi"],
                title=doc["title"],
                description=doc.get("description", ""),
                genre=doc.get("genre"),
                series=doc.get("series"),
                publisher=doc["publisher"],
                offers=parse_offers(doc["offers"]),
                info_hash=doc["info_hash"],
                tracker=doc["tracker"],
                state=AssetState(doc["state"]),
                created=float(doc["created"]),
                updated=float(doc["updated"]),
                name=doc.get("name", ""),
                size=int(doc.get("size", 0)),
                listed_at=doc.get("listed_at"),
                removed_at=doc.get("removed_at"),
                extra=dict(doc.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CatalogueError(f"broken catalogue record {doc.get('doi')!r}: {e}") from None

    def to_json(self) -> dict[str, Any]:
        """The public view (JSON API, content lists): no internal fields."""
        doc = self.to_doc()
        doc.pop("extra")
        return doc


def new_asset(
    metadata: AssetMetadata,
    *,
    publisher: str,
    torrent: bytes,
    tracker: str,
    now: float,
    doi: str | None = None,
    state: AssetState = AssetState.PENDING,
) -> Asset:
    """Check everything and make a new asset from the provider's metadata and .torrent.

    The DOI is the one inside the torrent's info dictionary; ``doi`` and
    ``metadata.doi``, when given, must be the same. The torrent must be
    private (BEP 27).
    """
    try:
        meta = parse_metainfo(torrent)
    except MetainfoError as e:
        raise AssetError(f"the .torrent is not valid: {e}") from None
    if meta.doi is None:
        raise AssetError("the .torrent has no DOI in its info dictionary")
    check_doi(meta.doi)
    for given in (doi, metadata.doi):
        if given is not None and given != meta.doi:
            raise AssetError(f"DOI {given!r} is not the .torrent's ({meta.doi!r})")
    if not meta.private:
        raise AssetError("the .torrent must be private (BEP 27)")
    if len(meta.info_hash) != 20:
        raise AssetError("only v1 torrents (20-byte info-hash) are supported")
    if state is AssetState.REMOVED:
        raise StateError("a new asset cannot start removed")
    return Asset(
        doi=meta.doi,
        title=metadata.title,
        description=metadata.description,
        genre=metadata.genre,
        series=metadata.series,
        publisher=check_publisher(publisher),
        offers=metadata.offers if metadata.offers else parse_offers(list(metadata.offers)),
        info_hash=meta.info_hash.hex(),
        tracker=check_tracker(tracker),
        state=state,
        created=now,
        updated=now,
        name=meta.name,
        size=meta.total_length,
        listed_at=now if state is AssetState.LISTED else None,
    )


def transition(asset: Asset, state: AssetState, now: float) -> Asset:
    """The asset in ``state``; the same asset when already there."""
    if asset.state is state:
        return asset
    if state not in _TRANSITIONS[asset.state]:
        raise StateError(f"{asset.doi} cannot go from {asset.state} to {state}")
    changes: dict[str, Any] = {"state": state, "updated": now}
    if state is AssetState.LISTED:
        changes["listed_at"] = now
    elif state is AssetState.REMOVED:
        changes["removed_at"] = now
    return replace(asset, **changes)


def update_metadata(asset: Asset, metadata: AssetMetadata, now: float) -> Asset:
    """The asset with the provider's new title, description, genre, series and offers."""
    if asset.state is AssetState.REMOVED:
        raise StateError(f"{asset.doi} was removed")
    if metadata.doi is not None and metadata.doi != asset.doi:
        raise AssetError(f"DOI {metadata.doi!r} is not {asset.doi!r}")
    return replace(
        asset,
        title=metadata.title,
        description=metadata.description,
        genre=metadata.genre,
        series=metadata.series,
        offers=metadata.offers,
        updated=now,
    )


# -- transactions ------------------------------------------------------------


def _load(txn: Txn, doi: str) -> Asset:
    doc = txn.get(ASSETS, doi)
    if doc is None:
        raise UnknownAsset(f"no asset {doi}")
    return Asset.from_doc(doc)


def add_txn(txn: Txn, asset: Asset, torrent: bytes) -> Asset:
    """Insert a new asset and its .torrent; :class:`AssetExists` if DOI or info-hash is known."""
    if txn.get(ASSETS, asset.doi) is not None:
        raise AssetExists(f"{asset.doi} is already in the catalogue")
    if txn.get(TORRENTS, asset.info_hash) is not None:
        raise AssetExists(f"info-hash {asset.info_hash} is already in the catalogue")
    try:
        txn.insert(ASSETS, asset.doi, asset.to_doc())
        txn.insert(
            TORRENTS,
            asset.info_hash,
            {"doi": asset.doi, "torrent": base64.b64encode(torrent).decode("ascii")},
        )
    except Conflict:  # pragma: no cover - checked above in the same transaction
        raise AssetExists(f"{asset.doi} is already in the catalogue") from None
    return asset


def get_txn(txn: Txn, doi: str) -> Asset | None:
    doc = txn.get(ASSETS, doi)
    return None if doc is None else Asset.from_doc(doc)


def set_state_txn(txn: Txn, doi: str, state: AssetState, now: float) -> Asset:
    asset = transition(_load(txn, doi), state, now)
    txn.put(ASSETS, doi, asset.to_doc())
    return asset


def update_txn(txn: Txn, doi: str, metadata: AssetMetadata, now: float) -> Asset:
    asset = update_metadata(_load(txn, doi), metadata, now)
    txn.put(ASSETS, doi, asset.to_doc())
    return asset


def find_txn(txn: Txn, limit: int | None = None, **eq: Any) -> list[Asset]:
    """Assets whose indexed fields (state, genre, series, publisher, info_hash) match."""
    return [Asset.from_doc(d) for _, d in txn.find(ASSETS, limit=limit, **eq)]


def torrent_txn(txn: Txn, info_hash: str) -> bytes | None:
    doc = txn.get(TORRENTS, info_hash)
    if doc is None:
        return None
    try:
        return base64.b64decode(doc["torrent"], validate=True)
    except (KeyError, binascii.Error) as e:
        raise CatalogueError(f"broken .torrent record {info_hash}: {e}") from None


def _ordered(assets: Iterable[Asset]) -> list[Asset]:
    """Newest listed first, then by title: the order pages and lists show."""
    return sorted(assets, key=lambda a: (-(a.listed_at or a.created), a.title.casefold(), a.doi))


# -- the Deferred API ----------------------------------------------------------


class Catalogue:
    """The catalogue on a store. Every method returns a Deferred; ``clock`` gives Unix time."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    # writes (the AS)

    def add(
        self,
        metadata: AssetMetadata,
        *,
        publisher: str,
        torrent: bytes,
        tracker: str,
        doi: str | None = None,
        state: AssetState = AssetState.PENDING,
    ) -> Deferred[Asset]:
        """Check and store a new asset (pending by default) and its .torrent."""
        try:
            asset = new_asset(
                metadata,
                publisher=publisher,
                torrent=torrent,
                tracker=tracker,
                now=self.clock(),
                doi=doi,
                state=state,
            )
        except CatalogueError:
            return fail()
        return self.store.transact(lambda t: add_txn(t, asset, torrent))

    def set_state(self, doi: str, state: AssetState) -> Deferred[Asset]:
        now = self.clock()
        return self.store.transact(lambda t: set_state_txn(t, doi, state, now))

    def list_asset(self, doi: str) -> Deferred[Asset]:
        """The swarm is complete: show the asset and sell it."""
        return self.set_state(doi, AssetState.LISTED)

    def remove(self, doi: str) -> Deferred[Asset]:
        return self.set_state(doi, AssetState.REMOVED)

    def update(self, doi: str, metadata: AssetMetadata) -> Deferred[Asset]:
        now = self.clock()
        return self.store.transact(lambda t: update_txn(t, doi, metadata, now))

    # reads (the index, the AS)

    def get(self, doi: str) -> Deferred[Asset | None]:
        return self.store.transact(lambda t: get_txn(t, doi))

    def listed(self, genre: str | None = None, series: str | None = None) -> Deferred[list[Asset]]:
        """Listed assets, newest first, optionally of one genre and/or series."""
        eq: dict[str, Any] = {"state": str(AssetState.LISTED)}
        if genre is not None:
            eq["genre"] = genre
        if series is not None:
            eq["series"] = series
        return self.store.transact(lambda t: _ordered(find_txn(t, **eq)))

    def by_state(self, state: AssetState | None = None) -> Deferred[list[Asset]]:
        """Every asset (or those in ``state``), newest first: the operator's view."""

        def txn(t: Txn) -> list[Asset]:
            if state is None:
                return _ordered(Asset.from_doc(d) for _, d in t.scan(ASSETS))
            return _ordered(find_txn(t, state=str(state)))

        return self.store.transact(txn)

    def by_publisher(self, publisher: str) -> Deferred[list[Asset]]:
        return self.store.transact(lambda t: _ordered(find_txn(t, publisher=publisher)))

    def by_info_hash(self, info_hash: str) -> Deferred[Asset | None]:
        def txn(t: Txn) -> Asset | None:
            found = find_txn(t, limit=1, info_hash=info_hash.lower())
            return found[0] if found else None

        return self.store.transact(txn)

    def genres(self) -> Deferred[list[tuple[str, int]]]:
        """Genres of listed assets with their counts, by name."""

        def txn(t: Txn) -> list[tuple[str, int]]:
            counts: dict[str, int] = {}
            for a in find_txn(t, state=str(AssetState.LISTED)):
                if a.genre:
                    counts[a.genre] = counts.get(a.genre, 0) + 1
            return sorted(counts.items(), key=lambda kv: kv[0].casefold())

        return self.store.transact(txn)

    def count(self, state: AssetState = AssetState.LISTED) -> Deferred[int]:
        return self.store.transact(lambda t: t.count(ASSETS, state=str(state)))

    def torrent(self, info_hash: str) -> Deferred[bytes | None]:
        """The .torrent of a *listed* asset by info-hash; None otherwise."""

        def txn(t: Txn) -> bytes | None:
            doc = t.get(TORRENTS, info_hash)
            if doc is None:
                return None
            asset = get_txn(t, doc.get("doi", ""))
            if asset is None or asset.state is not AssetState.LISTED:
                return None
            return torrent_txn(t, info_hash)

        return self.store.transact(txn)

    def torrent_any_state(self, info_hash: str) -> Deferred[bytes | None]:
        """The .torrent whatever the state (the operator's seeder fetches muted swarms)."""
        return self.store.transact(lambda t: torrent_txn(t, info_hash))

    # the AS's purchase back end (imsp2pd.content.purchase.Offers)

    def priced_offer(self, doi: str, offer_id: str) -> Deferred[Any]:
        """The offer of a *listed* asset as a ``PricedOffer``, or None."""
        from imsp2pd.content.purchase import PricedOffer

        def found(asset: Asset | None) -> PricedOffer | None:
            if asset is None or asset.state is not AssetState.LISTED:
                return None
            offer = asset.offer(offer_id)
            if offer is None:
                return None
            return PricedOffer(
                doi=asset.doi,
                offer_id=offer.id,
                price=offer.amount,
                currency=offer.currency,
                rights=offer.rights.to_json(),
                devices=offer.devices,
                info_hash=asset.info_hash,
                tracker_url=asset.tracker,
            )

        return self.get(doi).addCallback(found)


def offers_json(offers: Sequence[Offer]) -> list[dict[str, Any]]:
    return [o.to_json() for o in offers]
