"""The Application Server's purchase logic (DESIGN.md §2, "Pay per download").

Transport-free: the SIP side hands :meth:`PurchaseDesk.purchase` the
asserted buyer, the icid and the MESSAGE body, and gets back a :class:`Grant`
(answer 200, then send the grant in a MESSAGE) or a :class:`ServiceError`
whose ``status`` is the SIP answer (400, 402, 403, 404, 500 with
``retry_after``). The back ends are injected: the catalogue (:class:`Offers`),
the online charging system (:class:`Charging`, Diameter Ro in the daemon),
the DRM server (:class:`Rights`) and the token :class:`~imsp2pd.entitlement.Issuer`.

A purchase is never half done, and one purchase id never charges twice:

- the purchase record is written (state ``charging``) before the debit, with
  the Ro Session-Id of the attempt; the OCS treats a second CCR with the same
  Session-Id as the same debit, so re-sending it after a crash or a lost
  answer charges at most once;
- a debit that failed without a clear answer (OCS down, timeout) leaves the
  record in ``charging`` and answers 500 with Retry-After; the client's retry
  with the same purchase id re-sends the same debit;
- a failure after the debit whose refund fails too leaves the record
  ``charged``; a retry with the same purchase id goes on from there without
  debiting again;
- a debit refused for credit ends the attempt (``declined``, 402);
- any failure after the debit refunds it (REFUND_ACCOUNT, its own
  Session-Id) and records ``refunded``; a later purchase with the same id is
  a new attempt with a new Session-Id;
- once ``granted``, the same purchase id (from the same buyer) gets the same
  grant again, without charging.

Concurrent duplicates in one process share the attempt in flight.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from imsp2pd.entitlement import Issuer, TrackerRole
from imsp2pd.store import Collection, Migration, Store

log = Logger()

PURCHASES = "purchases"
MIGRATIONS = [Migration("as-0001-purchases", [Collection(PURCHASES, ("impu", "state"))])]

PURCHASE_TYPE = "application/vnd.imsp2p.purchase+json"
GRANT_TYPE = "application/vnd.imsp2p.grant+json"

_OFFER_ID = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
_DOI = re.compile(r"^10\.\d{4,9}/[^\s]{1,200}$")


# -- errors ------------------------------------------------------------------


class ServiceError(Exception):
    """A request to the content service (purchase, publication, removal) that cannot
    go through, with the SIP status to answer."""

    status = 500
    retry_after: int | None = None

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadPurchase(ServiceError):
    status = 400


class NoCredit(ServiceError):
    status = 402


class NotAllowed(ServiceError):
    status = 403


class UnknownContent(ServiceError):
    status = 404


class BackendDown(ServiceError):
    status = 500
    retry_after = 5

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


# -- what the back ends take and give ------------------------------------------


@dataclass(frozen=True)
class PricedOffer:
    """An offer of a listed asset, as the catalogue gives it."""

    doi: str
    offer_id: str
    price: Decimal
    currency: str
    rights: dict[str, Any]
    devices: int
    info_hash: str  # hex
    tracker_url: str  # e.g. http://127.0.0.1:6969 (the AS appends /announce)


@dataclass(frozen=True)
class Charge:
    """One Ro CCR EVENT: a direct debit or its refund."""

    session_id: str
    impu: str
    amount: Decimal
    currency: str
    icid: str
    doi: str
    offer_id: str


class Offers(Protocol):
    def priced_offer(self, doi: str, offer_id: str) -> Deferred[PricedOffer | None]:
        """The offer of a listed asset, or None (unknown DOI, offer, or not listed)."""


class Charging(Protocol):
    def debit(self, charge: Charge) -> Deferred[None]:
        """Debit; fails with NoCredit, NotAllowed or BackendDown."""

    def refund(self, charge: Charge) -> Deferred[None]:
        """Give a debit back; fails with BackendDown."""


class Rights(Protocol):
    def authorise(self, purchase_id: str, impu: str, offer: PricedOffer) -> Deferred[None]:
        """Authorise the offer's rights for the buyer at the DRM server.

        Fails with NotAllowed, UnknownContent or BackendDown."""


@dataclass(frozen=True)
class PurchaseRequest:
    purchase_id: str
    doi: str
    offer_id: str

    @classmethod
    def from_json(cls, body: Any) -> PurchaseRequest:
        """Check a decoded MESSAGE body; :class:`BadPurchase` names the fault."""
        if not isinstance(body, dict):
            raise BadPurchase("purchase body must be a JSON object")
        extra = set(body) - {"purchase_id", "doi", "offer"}
        if extra:
            raise BadPurchase(f"unknown purchase field {sorted(extra)[0]!r}")
        pid, doi, offer = body.get("purchase_id"), body.get("doi"), body.get("offer")
        if not isinstance(pid, str):
            raise BadPurchase("purchase_id must be a UUID string")
        try:
            pid = str(uuid.UUID(pid))
        except ValueError:
            raise BadPurchase("purchase_id must be a UUID string") from None
        if not isinstance(doi, str) or not _DOI.match(doi):
            raise BadPurchase("doi must be a DOI string such as 10.5555/abc")
        if not isinstance(offer, str) or not _OFFER_ID.match(offer):
            raise BadPurchase("offer must be an offer id")
        return cls(pid, doi, offer)


@dataclass(frozen=True)
class Grant:
    """What the buyer receives in the grant MESSAGE (``GRANT_TYPE``)."""

    purchase_id: str
    doi: str
    offer: str
    torrent_url: str
    announce_url: str
    license_url: str
    license_token: str
    expires: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


@dataclass(frozen=True)
class DeskConfig:
    as_host: str  # Origin-Host of the AS, the first part of Session-Ids
    torrent_base_url: str  # index site: {base}/torrents/{infohash}.torrent
    license_url: str  # DRM server: {url}/license
    token_lifetime: int = 7 * 24 * 3600


class PurchaseDesk:
    def __init__(
        self,
        store: Store,
        offers: Offers,
        charging: Charging,
        rights: Rights,
        issuer: Issuer,
        config: DeskConfig,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.offers = offers
        self.charging = charging
        self.rights = rights
        self.issuer = issuer
        self.config = config
        self.clock = clock
        self._in_flight: dict[str, list[Deferred[Grant]]] = {}

    def purchase(self, impu: str, icid: str, request: PurchaseRequest) -> Deferred[Grant]:
        """Run (or join, or replay) the purchase; fires with the grant."""
        waiting = self._in_flight.get(request.purchase_id)
        if waiting is not None:
            d: Deferred[Grant] = Deferred()
            waiting.append(d)
            return d
        self._in_flight[request.purchase_id] = []
        result = Deferred.fromCoroutine(self._purchase(impu, icid, request))

        def done(outcome: Any) -> Any:
            for d in self._in_flight.pop(request.purchase_id, []):
                if isinstance(outcome, Failure):
                    d.errback(outcome)
                else:
                    d.callback(outcome)
            return outcome

        result.addBoth(done)
        return result

    async def _purchase(self, impu: str, icid: str, req: PurchaseRequest) -> Grant:
        record = await self.store.transact(lambda t: t.get(PURCHASES, req.purchase_id))
        if record is not None:
            if record["impu"] != impu:
                raise NotAllowed("this purchase id belongs to another user")
            if (record["doi"], record["offer"]) != (req.doi, req.offer_id):
                raise BadPurchase("this purchase id was used for another DOI or offer")
            if record["state"] == "granted":
                log.info(
                    "purchase {pid}: granted before, sending the same grant", pid=req.purchase_id
                )
                return Grant(**record["grant"])
        offer = await self.offers.priced_offer(req.doi, req.offer_id)
        if offer is None:
            raise UnknownContent(f"no offer {req.offer_id!r} for {req.doi}")
        record = await self._begin(impu, icid, req, offer, record)
        if record["state"] != "charged":  # "charged": debited before, neither granted nor refunded
            await self._debit(record, offer)
            await self._set_state(req.purchase_id, "charged")
        try:
            await self.rights.authorise(req.purchase_id, impu, offer)
            grant = self._grant(impu, req, offer)
            await self._set_state(req.purchase_id, "granted", grant=grant)
        except Exception as e:
            await self._refund(record, offer, e)
            if isinstance(e, ServiceError):
                raise
            log.failure("purchase {pid}: failed after the debit", pid=req.purchase_id)
            raise BackendDown("the purchase failed after charging and was refunded") from None
        log.info(
            "purchase {pid}: {impu} bought {doi} offer {offer}",
            pid=req.purchase_id,
            impu=impu,
            doi=req.doi,
            offer=req.offer_id,
        )
        return grant

    async def _debit(self, record: dict[str, Any], offer: PricedOffer) -> None:
        pid = record["purchase_id"]
        try:
            await self.charging.debit(self._charge(record, offer))
        except ServiceError as e:
            if not isinstance(e, BackendDown):  # a clear no: this attempt is over
                await self._set_state(pid, "declined", reason=e.reason)
            raise
        except Exception as e:
            log.failure("purchase {pid}: debit failed", pid=pid)
            raise BackendDown(f"charging failed: {e}") from None

    async def _begin(
        self, impu: str, icid: str, req: PurchaseRequest, offer: PricedOffer, record: Any
    ) -> dict[str, Any]:
        now = self.clock()

        def txn(t: Any) -> dict[str, Any]:
            rec = t.get(PURCHASES, req.purchase_id)
            if rec is not None and rec["state"] in ("charging", "charged"):
                # Resume: re-send the same debit (same Session-Id: the OCS will not charge
                # twice), or go on after a debit whose refund failed.
                return dict(rec)
            attempt = 1 if rec is None else rec["attempt"] + 1
            rec = {
                "purchase_id": req.purchase_id,
                "impu": impu,
                "doi": req.doi,
                "offer": req.offer_id,
                "price": str(offer.price),
                "currency": offer.currency,
                "icid": icid,
                "attempt": attempt,
                "session_id": f"{self.config.as_host};purchase;{req.purchase_id};{attempt}",
                "state": "charging",
                "created": rec["created"] if rec else now,
                "updated": now,
            }
            t.put(PURCHASES, req.purchase_id, rec)
            return rec

        return await self.store.transact(txn)

    def _charge(self, record: dict[str, Any], offer: PricedOffer, refund: bool = False) -> Charge:
        return Charge(
            session_id=record["session_id"] + (";refund" if refund else ""),
            impu=record["impu"],
            amount=Decimal(record["price"]),
            currency=record["currency"],
            icid=record["icid"],
            doi=offer.doi,
            offer_id=offer.offer_id,
        )

    async def _refund(self, record: dict[str, Any], offer: PricedOffer, cause: Exception) -> None:
        pid = record["purchase_id"]
        try:
            await self.charging.refund(self._charge(record, offer, refund=True))
        except Exception:
            # The debit stands and the record stays "charged": an operator sees it
            # (admin purchases list) and the client's retry resumes from here.
            log.failure("purchase {pid}: REFUND FAILED after {cause}", pid=pid, cause=str(cause))
            raise BackendDown("the purchase failed and its refund is pending") from None
        await self._set_state(pid, "refunded", reason=str(cause))

    async def _set_state(
        self, pid: str, state: str, grant: Grant | None = None, reason: str | None = None
    ) -> None:
        now = self.clock()

        def txn(t: Any) -> None:
            rec = t.get(PURCHASES, pid)
            rec["state"] = state
            rec["updated"] = now
            if grant is not None:
                rec["grant"] = asdict(grant)
            if reason is not None:
                rec["reason"] = reason
            t.put(PURCHASES, pid, rec)

        await self.store.transact(txn)

    def _grant(self, impu: str, req: PurchaseRequest, offer: PricedOffer) -> Grant:
        not_after = int(self.clock()) + self.config.token_lifetime
        tracker_token = self.issuer.issue_tracker(
            impu, bytes.fromhex(offer.info_hash), TrackerRole.CONSUMER, not_after
        )
        license_token = self.issuer.issue_license(impu, req.doi, req.offer_id, not_after)
        base = self.config.torrent_base_url.rstrip("/")
        return Grant(
            purchase_id=req.purchase_id,
            doi=req.doi,
            offer=req.offer_id,
            torrent_url=f"{base}/torrents/{offer.info_hash}.torrent",
            announce_url=f"{offer.tracker_url.rstrip('/')}/announce?token={quote(tracker_token)}",
            license_url=self.config.license_url,
            license_token=license_token,
            expires=not_after,
        )


__all__ = [
    "GRANT_TYPE",
    "MIGRATIONS",
    "PURCHASE_TYPE",
    "BackendDown",
    "BadPurchase",
    "Charge",
    "Charging",
    "DeskConfig",
    "Grant",
    "NoCredit",
    "NotAllowed",
    "Offers",
    "PricedOffer",
    "PurchaseDesk",
    "ServiceError",
    "PurchaseRequest",
    "Rights",
    "UnknownContent",
]
