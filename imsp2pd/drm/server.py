"""The DRM server's logic: content, rights, licenses, revocations (DESIGN.md §3).

Pure: no reactor and no sockets. Every request is handled in two steps:

1. ``parse_*`` (or :meth:`DrmCore.prepare_license`) checks the body and the
   tokens and signatures it carries, on the caller's thread, raising
   :class:`DrmError` (a 4xx status, a stable code, one line) for anything
   wrong. Token verification is cached (:class:`~imsp2pd.entitlement.Verifier`),
   so it stays on one thread.
2. A method taking a :class:`~imsp2pd.store.Txn` does the reads and writes,
   run by the adapter as one store transaction, so what it answers is durable
   before the answer leaves.

The web services (bodies are JSON objects; errors ``{"error", "message"}``):

``POST /content`` ``{"publisher_token": T, "content_key": 32 hex}`` →
    201 ``{"doi", "key_id"}``. The DOI is ``PREFIX/imsp2p.<random>``; the key
    is stored sealed under the master key (:class:`MasterKey`), never in clear.
``GET /content/{doi}`` → ``{"doi", "owner", "key_id", "info_hash", "state"}``
    (state ``registered``, then ``bound`` once the swarm is bound).
``PUT /content/{doi}/infohash`` ``{"info_hash": 40 or 64 hex}`` → the content;
    binding the same hash again is a no-op, another hash is 409.
``POST /rights`` ``{"impu", "doi", "offer": OFFER, "purchase_id"}`` →
    ``{"grant_id", …}``. One grant per (user, DOI, offer id); the same
    purchase id again changes nothing; a new purchase id starts the grant
    afresh (new first use, devices and license ids).
``POST /license`` ``{"request": SIGNED}`` (see :mod:`imsp2pd.drm.license`)
    → ``{"license": SIGNED, "license_id", "server_time"}``.
``POST /revocations`` ``{"kind", "value", "reason"?}`` → the entry;
``GET /revocations?since=T`` → ``{"revocations": […], "server_time"}``.
``GET /key`` → ``{"ed25519": B64URL}``: the key licenses are signed with.

The routes that the AS (and the tracker, and the operator) use need the
service credential as a bearer token; ``POST /content`` carries a publisher
token and ``POST /license`` a license token signed by a device key instead.
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from imsp2pd import canonjson
from imsp2pd.drm import revocation
from imsp2pd.drm.license import (
    LicenseError,
    LicenseRequest,
    issue_license,
    open_request,
)
from imsp2pd.drm.rights import Rights, RightsError
from imsp2pd.entitlement import (
    BadSignature,
    EntitlementError,
    LicenseToken,
    TokenExpired,
    Verifier,
    WrongKind,
    b64url_decode,
    b64url_encode,
    public_key_to_config,
)
from imsp2pd.store.interface import Collection, Migration, Txn

__all__ = [
    "CONTENT",
    "GRANTS",
    "MIGRATIONS",
    "ContentState",
    "DrmCore",
    "DrmError",
    "MasterKey",
    "grant_id",
]

CONTENT = "drm_content"
GRANTS = "drm_grants"
MIGRATIONS = (
    Migration(
        "drm-0001-content-grants-revocations",
        (
            Collection(CONTENT, ("owner", "info_hash")),
            Collection(GRANTS, ("impu", "doi")),
            *revocation.COLLECTIONS,
        ),
    ),
)
_HEX_KEY = re.compile(r"[0-9a-fA-F]{32}")
_INFO_HASH = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_DOI_PREFIX = re.compile(r"10\.[0-9]{4,9}")
_MAX_TEXT = 512


class ContentState(enum.StrEnum):
    REGISTERED = "registered"
    BOUND = "bound"


class DrmError(Exception):
    """A request refused: answered with ``status`` and ``{"error": code, "message"}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _bad(message: str) -> DrmError:
    return DrmError(400, "bad_request", message)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise _bad(f"{name} must be a non-empty string of at most {_MAX_TEXT} characters")
    if any(ord(c) < 0x20 or c.isspace() or 0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise _bad(f"{name} contains whitespace, control characters or lone surrogates")
    return value


def _only(body: Any, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _bad(f"unknown members {unknown}")
    missing = sorted(required - set(body))
    if missing:
        raise _bad(f"missing members {missing}")
    return body


def _token_error(exc: EntitlementError) -> DrmError:
    if isinstance(exc, TokenExpired):
        return DrmError(403, "token_expired", f"the token has expired: {exc.message}")
    if isinstance(exc, BadSignature):
        return DrmError(403, "bad_token", "the token's signature does not verify")
    if isinstance(exc, WrongKind):
        return DrmError(403, "wrong_token", exc.message)
    return DrmError(400, "bad_token", f"the token is malformed: {exc.message}")


def grant_id(impu: str, doi: str, offer: str) -> str:
    """The key of the grant of ``offer`` of ``doi`` to ``impu``."""
    return hashlib.sha256(canonjson.dumps([impu, doi, offer])).hexdigest()


class MasterKey:
    """Seals content keys at rest: AES-256-GCM, a random nonce, bound to DOI and key id."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the master key is 32 bytes")
        self._aead = AESGCM(key)

    @staticmethod
    def _aad(doi: str, key_id: str) -> bytes:
        return canonjson.dumps({"doi": doi, "key_id": key_id, "use": "imsp2p content key"})

    def seal(self, doi: str, key_id: str, content_key: bytes) -> str:
        nonce = os.urandom(12)
        return b64url_encode(nonce + self._aead.encrypt(nonce, content_key, self._aad(doi, key_id)))

    def open(self, doi: str, key_id: str, sealed: str) -> bytes:
        raw = b64url_decode(sealed)
        try:
            return self._aead.decrypt(raw[:12], raw[12:], self._aad(doi, key_id))
        except InvalidTag:
            raise ValueError("a stored content key does not open with the master key") from None


# -- parsed requests --------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    owner: str
    content_key: bytes
    token_id: str


@dataclass(frozen=True)
class RightsRequest:
    impu: str
    doi: str
    offer_id: str
    rights: Rights
    purchase_id: str


@dataclass(frozen=True)
class PreparedLicense:
    request: LicenseRequest
    token: LicenseToken


class DrmCore:
    """The DRM server's decisions; see the module docstring for the services."""

    def __init__(
        self,
        *,
        signing_key: Ed25519PrivateKey,
        as_verifier: Verifier,
        master_key: MasterKey,
        doi_prefix: str = "10.5555",
        new_id: Callable[[], str] = lambda: secrets.token_urlsafe(16),
    ) -> None:
        if not _DOI_PREFIX.fullmatch(doi_prefix):
            raise ValueError("a DOI prefix is 10. followed by 4 to 9 digits")
        self._key = signing_key
        self._verifier = as_verifier
        self._master = master_key
        self._prefix = doi_prefix
        self._new_id = new_id

    @property
    def public_key_b64(self) -> str:
        return public_key_to_config(self._key.public_key())

    # -- content ------------------------------------------------------------

    def parse_registration(self, body: Any, now: float) -> Registration:
        body = _only(body, {"publisher_token", "content_key"}, {"publisher_token", "content_key"})
        key = body["content_key"]
        if not isinstance(key, str) or not _HEX_KEY.fullmatch(key):
            raise _bad("content_key must be 32 hex digits (a 128-bit key)")
        token = body["publisher_token"]
        try:
            claims = self._verifier.verify_publisher(token, now)
        except EntitlementError as exc:
            raise _token_error(exc) from None
        return Registration(
            owner=claims.impu, content_key=bytes.fromhex(key), token_id=claims.token_id
        )

    def register(self, txn: Txn, reg: Registration, now: float) -> dict[str, Any]:
        hit = revocation.find(txn, impu=reg.owner, token=reg.token_id)
        if hit is not None:
            raise DrmError(403, "revoked", f"{hit.kind} is revoked")
        doi = f"{self._prefix}/imsp2p.{secrets.token_hex(8)}"
        key_id = "k-" + secrets.token_hex(8)
        txn.insert(
            CONTENT,
            doi,
            {
                "doi": doi,
                "owner": reg.owner,
                "key_id": key_id,
                "sealed_key": self._master.seal(doi, key_id, reg.content_key),
                "info_hash": None,
                "state": str(ContentState.REGISTERED),
                "created": now,
            },
        )
        return {"doi": doi, "key_id": key_id}

    @staticmethod
    def _public(doc: dict[str, Any]) -> dict[str, Any]:
        return {k: doc[k] for k in ("doi", "owner", "key_id", "info_hash", "state")}

    def _content(self, txn: Txn, doi: str) -> dict[str, Any]:
        doc = txn.get(CONTENT, doi) if 0 < len(doi) <= _MAX_TEXT else None
        if doc is None:
            raise DrmError(404, "unknown_doi", "no content has this DOI")
        return doc

    def content_info(self, txn: Txn, doi: str) -> dict[str, Any]:
        return self._public(self._content(txn, doi))

    @staticmethod
    def parse_infohash(body: Any) -> str:
        body = _only(body, {"info_hash"}, {"info_hash"})
        value = body["info_hash"]
        if not isinstance(value, str) or not _INFO_HASH.fullmatch(value):
            raise _bad("info_hash must be 40 or 64 lower-case hex digits")
        return value

    def bind_infohash(self, txn: Txn, doi: str, info_hash: str) -> dict[str, Any]:
        doc = self._content(txn, doi)
        if doc["info_hash"] not in (None, info_hash):
            raise DrmError(409, "already_bound", "this DOI is bound to another info-hash")
        if txn.find(CONTENT, limit=1, info_hash=info_hash) and doc["info_hash"] != info_hash:
            raise DrmError(409, "infohash_in_use", "this info-hash is bound to another DOI")
        doc = {**doc, "info_hash": info_hash, "state": str(ContentState.BOUND)}
        txn.put(CONTENT, doi, doc)
        return self._public(doc)

    # -- rights -------------------------------------------------------------------

    @staticmethod
    def parse_rights(body: Any) -> RightsRequest:
        body = _only(
            body, {"impu", "doi", "offer", "purchase_id"}, {"impu", "doi", "offer", "purchase_id"}
        )
        impu = _text(body, "impu")
        if not impu.startswith(("sip:", "sips:", "tel:")):
            raise _bad("impu must be a sip:, sips: or tel: URI")
        offer = body["offer"]
        if not isinstance(offer, dict):
            raise _bad("offer must be a JSON object")
        unknown = sorted(set(offer) - {"id", "price", "currency", "rights", "devices"})
        if unknown:
            raise _bad(f"unknown offer members {unknown}")
        offer_id = _text(offer, "id")
        try:
            rights = Rights.from_offer(offer)
        except RightsError as exc:
            raise _bad(f"offer rights: {exc}") from None
        return RightsRequest(
            impu=impu,
            doi=_text(body, "doi"),
            offer_id=offer_id,
            rights=rights,
            purchase_id=_text(body, "purchase_id"),
        )

    def authorise(self, txn: Txn, req: RightsRequest, now: float) -> dict[str, Any]:
        self._content(txn, req.doi)
        gid = grant_id(req.impu, req.doi, req.offer_id)
        doc = txn.get(GRANTS, gid)
        if doc is None or doc["purchase_id"] != req.purchase_id:
            doc = {
                "impu": req.impu,
                "doi": req.doi,
                "offer": req.offer_id,
                "purchase_id": req.purchase_id,
                "rights": req.rights.to_json(),
                "devices_limit": req.rights.devices,
                "first_use": None,
                "devices": {},
                "created": now,
            }
            txn.put(GRANTS, gid, doc)
        return self._grant_public(gid, doc)

    @staticmethod
    def _grant_public(gid: str, doc: dict[str, Any]) -> dict[str, Any]:
        return {
            "grant_id": gid,
            "impu": doc["impu"],
            "doi": doc["doi"],
            "offer": doc["offer"],
            "purchase_id": doc["purchase_id"],
            "rights": doc["rights"],
            "devices": doc["devices_limit"],
            "devices_used": len(doc["devices"]),
            "first_use": doc["first_use"],
        }

    # -- licenses -----------------------------------------------------------------

    def prepare_license(self, body: Any, now: float) -> PreparedLicense:
        body = _only(body, {"request"}, {"request"})
        try:
            request = open_request(body["request"])
        except LicenseError as exc:
            status = 403 if exc.reason == "tampered" else 400
            raise DrmError(
                status, "bad_request_signature" if status == 403 else "bad_request", exc.message
            ) from None
        try:
            token = self._verifier.verify_license(request.token, now)
        except EntitlementError as exc:
            raise _token_error(exc) from None
        return PreparedLicense(request=request, token=token)

    def issue(self, txn: Txn, prepared: PreparedLicense, now: float) -> dict[str, Any]:
        token, request = prepared.token, prepared.request
        device = request.fingerprint
        hit = revocation.find(
            txn, impu=token.impu, device=device, doi=token.doi, token=token.token_id
        )
        if hit is not None:
            raise DrmError(403, "revoked", f"the {hit.kind} is revoked")
        content = self._content(txn, token.doi)
        gid = grant_id(token.impu, token.doi, token.offer)
        grant = txn.get(GRANTS, gid)
        if grant is None:
            raise DrmError(403, "no_rights", "no rights are authorised for this user and offer")
        rights = Rights.from_json(grant["rights"], grant["devices_limit"])
        first_use = grant["first_use"]
        if rights.expired(first_use, now):
            raise DrmError(403, "rights_expired", "the rights of this grant have run out")
        devices: dict[str, str] = dict(grant["devices"])
        license_id = devices.get(device)
        changed = False
        if license_id is None:
            if len(devices) >= rights.devices:
                raise DrmError(403, "device_limit", f"the offer allows {rights.devices} device(s)")
            license_id = self._new_id()
            devices[device] = license_id
            changed = True
        if first_use is None:
            first_use = int(now)
            changed = True
        if changed:
            txn.put(GRANTS, gid, {**grant, "devices": devices, "first_use": first_use})
        try:
            content_key = self._master.open(
                content["doi"], content["key_id"], content["sealed_key"]
            )
        except ValueError:
            raise DrmError(409, "key_unavailable", "the content key cannot be opened") from None
        blob = issue_license(
            self._key,
            request,
            license_id=license_id,
            doi=content["doi"],
            key_id=content["key_id"],
            impu=token.impu,
            rights=rights,
            first_use=first_use,
            content_key=content_key,
            server_time=int(now),
        )
        return {"license": blob, "license_id": license_id, "server_time": int(now)}

    # -- revocations --------------------------------------------------------------

    @staticmethod
    def parse_revocation(body: Any, now: float) -> revocation.Revocation:
        body = _only(body, {"kind", "value", "reason"}, {"kind", "value"})
        try:
            return revocation.Revocation.from_json(body, now)
        except revocation.RevocationError as exc:
            raise _bad(str(exc)) from None

    @staticmethod
    def revoke(txn: Txn, entry: revocation.Revocation) -> dict[str, Any]:
        return revocation.add(txn, entry).to_json()

    @staticmethod
    def parse_since(value: str | None) -> float:
        if value is None:
            return 0.0
        try:
            since = float(value)
        except ValueError:
            raise _bad("since must be Unix seconds") from None
        if not 0 <= since < 2**53:
            raise _bad("since must be Unix seconds")
        return since

    @staticmethod
    def revocations_since(txn: Txn, since: float, now: float) -> dict[str, Any]:
        return {
            "revocations": [e.to_json() for e in revocation.since(txn, since)],
            "server_time": now,
        }
