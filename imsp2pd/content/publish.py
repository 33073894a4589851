"""The Application Server's content injection (DESIGN.md §2, "Content injection").

Transport-free, like :mod:`imsp2pd.content.purchase`: the SIP side hands over
the asserted publisher and the PUBLISH body, and answers with the status of
a :class:`PublishError` or sends the provider its seeding token. Back ends
are injected: the catalogue, the DRM server (:class:`ContentRegistry`), the
trackers (:class:`Swarms`) and the token issuer.

A publication is checked whole before anything changes (trusted publisher,
multipart body, metadata and offers, private .torrent with the DOI inside),
then each step is idempotent so that a PUBLISH re-sent after a failure
completes it: the DRM server binds the same info-hash again as a no-op, the
tracker registers the same swarm again as a no-op, and the catalogue takes
the same asset from the same publisher again as the same publication.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from imsp2pd.content import multipart
from imsp2pd.content.catalogue import (
    Asset,
    AssetExists,
    AssetMetadata,
    AssetState,
    Catalogue,
    CatalogueError,
    UnknownAsset,
    new_asset,
    parse_metadata,
)
from imsp2pd.content.purchase import NotAllowed, ServiceError, UnknownContent
from imsp2pd.entitlement import Issuer, TrackerRole

log = Logger()

TORRENT_TYPE = "application/x-bittorrent"
METADATA_TYPE = "application/json"
PUBLISHER_TOKEN_REQUEST_TYPE = "application/vnd.imsp2p.publisher-token-request+json"
PUBLISHER_TOKEN_TYPE = "application/vnd.imsp2p.publisher-token+json"
SEEDING_TOKEN_TYPE = "application/vnd.imsp2p.seeding-token+json"
EVENT_PACKAGE = "imsp2p-content"


class BadPublication(ServiceError):
    status = 400


class ContentRegistry(Protocol):
    """The DRM server, as the AS uses it."""

    def content(self, doi: str) -> Deferred[dict[str, Any] | None]:
        """``GET /content/{doi}``: owner, key id, info-hash, state; None when unknown."""

    def bind(self, doi: str, info_hash: str) -> Deferred[None]:
        """``PUT /content/{doi}/infohash``; NotAllowed when bound to another hash."""

    def revoke_doi(self, doi: str, reason: str) -> Deferred[None]:
        """Put the DOI on the revocation list: no more licenses."""


class Swarms(Protocol):
    """The operator's trackers, as the AS uses them."""

    def least_loaded(self) -> Deferred[str]:
        """The base URL of the tracker with the least load."""

    def register(self, tracker: str, info_hash: str, doi: str) -> Deferred[None]:
        """Register the swarm, muted."""

    def unmute(self, tracker: str, info_hash: str) -> Deferred[None]: ...

    def disable(self, tracker: str, info_hash: str) -> Deferred[None]: ...


@dataclass(frozen=True)
class Publication:
    """What the provider gets back in a MESSAGE once the PUBLISH is accepted."""

    doi: str
    info_hash: str
    announce_url: str
    seeding_token: str
    expires: int
    state: str

    def to_json(self) -> dict[str, Any]:
        return {
            "doi": self.doi,
            "info_hash": self.info_hash,
            "announce_url": self.announce_url,
            "seeding_token": self.seeding_token,
            "expires": self.expires,
            "state": self.state,
        }


def split_publication(content_type: str, body: bytes) -> tuple[bytes, AssetMetadata]:
    """The .torrent and the checked metadata of a PUBLISH body."""
    try:
        parts = multipart.parse(content_type, body)
    except multipart.MultipartError as e:
        raise BadPublication(str(e)) from None
    torrents = [p for p in parts if _base(p.content_type) == TORRENT_TYPE]
    metas = [p for p in parts if _base(p.content_type) == METADATA_TYPE]
    if len(torrents) != 1 or len(metas) != 1:
        raise BadPublication(
            f"a publication is one {TORRENT_TYPE} part and one {METADATA_TYPE} part"
        )
    try:
        raw = json.loads(metas[0].body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BadPublication(f"the metadata is not JSON: {type(e).__name__}") from None
    try:
        return torrents[0].body, parse_metadata(raw)
    except CatalogueError as e:
        raise BadPublication(str(e)) from None


def _base(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


class PublishDesk:
    def __init__(
        self,
        catalogue: Catalogue,
        registry: ContentRegistry,
        swarms: Swarms,
        issuer: Issuer,
        trusted: Iterable[str],
        clock: Callable[[], float],
        token_lifetime: int = 30 * 24 * 3600,
        on_listed: Callable[[Asset], None] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.registry = registry
        self.swarms = swarms
        self.issuer = issuer
        self.trusted = frozenset(trusted)
        self.clock = clock
        self.token_lifetime = token_lifetime
        self.on_listed = on_listed

    def is_trusted(self, impu: str) -> bool:
        return impu in self.trusted

    def publisher_token(self, impu: str) -> tuple[str, int]:
        """A publisher token for a trusted publisher; NotAllowed for anyone else."""
        if not self.is_trusted(impu):
            raise NotAllowed(f"{impu} is not a publisher the operator trusts")
        not_after = int(self.clock()) + self.token_lifetime
        return self.issuer.issue_publisher(impu, not_after), not_after

    def publish(self, impu: str, content_type: str, body: bytes) -> Deferred[Publication]:
        return Deferred.fromCoroutine(self._publish(impu, content_type, body))

    async def _publish(self, impu: str, content_type: str, body: bytes) -> Publication:
        if not self.is_trusted(impu):
            raise NotAllowed(f"{impu} is not a publisher the operator trusts")
        torrent, metadata = split_publication(content_type, body)
        try:  # every check of the asset, before anything changes
            draft = new_asset(
                metadata, publisher=impu, torrent=torrent, tracker="http://127.0.0.1/", now=0.0
            )
        except CatalogueError as e:
            raise BadPublication(str(e)) from None
        existing = await self.catalogue.get(draft.doi)
        if existing is not None:
            return await self._again(impu, existing, draft)
        content = await self.registry.content(draft.doi)
        if content is None:
            raise UnknownContent(f"{draft.doi} is not registered at the DRM server")
        if content.get("owner") != impu:
            raise NotAllowed(f"{draft.doi} belongs to another publisher")
        await self.registry.bind(draft.doi, draft.info_hash)
        tracker = await self.swarms.least_loaded()
        await self.swarms.register(tracker, draft.info_hash, draft.doi)
        try:
            asset = await self.catalogue.add(
                metadata, publisher=impu, torrent=torrent, tracker=tracker
            )
        except AssetExists:  # a concurrent PUBLISH of the same content won
            winner = await self.catalogue.get(draft.doi)
            assert winner is not None
            return await self._again(impu, winner, draft)
        except CatalogueError as e:
            raise BadPublication(str(e)) from None
        log.info(
            "publish: {impu} published {doi} on {tracker} (muted)",
            impu=impu,
            doi=asset.doi,
            tracker=tracker,
        )
        return self._publication(impu, asset)

    async def _again(self, impu: str, asset: Asset, draft: Asset) -> Publication:
        if asset.publisher != impu:
            raise NotAllowed(f"{asset.doi} belongs to another publisher")
        if asset.info_hash != draft.info_hash:
            raise NotAllowed(f"{asset.doi} is already published with another .torrent")
        if asset.state is AssetState.REMOVED:
            raise NotAllowed(f"{asset.doi} was taken down")
        # Make sure the earlier steps are all done (idempotent), then answer as before.
        await self.registry.bind(asset.doi, asset.info_hash)
        await self.swarms.register(asset.tracker, asset.info_hash, asset.doi)
        if asset.state is AssetState.LISTED:
            await self.swarms.unmute(asset.tracker, asset.info_hash)
        return self._publication(impu, asset)

    def _publication(self, impu: str, asset: Asset) -> Publication:
        not_after = int(self.clock()) + self.token_lifetime
        token = self.issuer.issue_tracker(
            impu, bytes.fromhex(asset.info_hash), TrackerRole.PROVIDER, not_after
        )
        return Publication(
            doi=asset.doi,
            info_hash=asset.info_hash,
            announce_url=_announce(asset.tracker, token),
            seeding_token=token,
            expires=not_after,
            state=asset.state.value,
        )

    def seeder_token(self, impu: str, info_hash: str) -> Deferred[str]:
        """A seeder token for the operator's seeder (in-process or through the admin API)."""

        def make(asset: Asset | None) -> str:
            if asset is None or asset.state is AssetState.REMOVED:
                raise UnknownContent(f"no swarm {info_hash}")
            not_after = int(self.clock()) + self.token_lifetime
            token = self.issuer.issue_tracker(
                impu, bytes.fromhex(asset.info_hash), TrackerRole.SEEDER, not_after
            )
            return _announce(asset.tracker, token)

        return self.catalogue.by_info_hash(info_hash).addCallback(make)

    def complete(self, info_hash: str) -> Deferred[Asset]:
        """The operator's seeder (or the provider) has the whole content: unmute, list."""
        return Deferred.fromCoroutine(self._complete(info_hash))

    async def _complete(self, info_hash: str) -> Asset:
        asset = await self.catalogue.by_info_hash(info_hash)
        if asset is None or asset.state is AssetState.REMOVED:
            raise UnknownContent(f"no swarm {info_hash}")
        await self.swarms.unmute(asset.tracker, asset.info_hash)
        if asset.state is AssetState.PENDING:
            asset = await self.catalogue.list_asset(asset.doi)
            log.info("publish: {doi} is complete at a seeder: listed", doi=asset.doi)
            if self.on_listed is not None:
                self.on_listed(asset)
        return asset

    def remove(self, doi: str, by: str | None) -> Deferred[Asset]:
        """Removal by its publisher (``by``) or takedown by the operator (``by`` None)."""
        return Deferred.fromCoroutine(self._remove(doi, by))

    async def _remove(self, doi: str, by: str | None) -> Asset:
        asset = await self.catalogue.get(doi)
        if asset is None:
            raise UnknownContent(f"no content {doi}")
        if by is not None and asset.publisher != by:
            raise NotAllowed(f"{doi} belongs to another publisher")
        await self.swarms.disable(asset.tracker, asset.info_hash)
        await self.registry.revoke_doi(doi, "removed by its publisher" if by else "taken down")
        try:
            asset = await self.catalogue.remove(doi)
        except UnknownAsset:
            raise UnknownContent(f"no content {doi}") from None
        log.info("publish: {doi} removed ({who})", doi=doi, who=by or "operator")
        return asset


def _announce(tracker: str, token: str) -> str:
    from urllib.parse import quote

    return f"{tracker.rstrip('/')}/announce?token={quote(token)}"
