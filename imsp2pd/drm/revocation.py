"""The revocation list (DESIGN.md §3): one list, owned by the DRM server.

An entry revokes a user (``impu``: an IMPU), a device (``device``: a device
key fingerprint, see :func:`imsp2pd.drm.license.fingerprint`), a DOI
(``doi``) or a token (``token``: a token id), from ``time`` (Unix seconds,
a number) on, with an optional human ``reason``. Entries live in the store
collection :data:`COLLECTION`, keyed ``KIND:VALUE``, so revoking the same
thing twice keeps the first time.

The DRM server refuses licenses on the list; the tracker refuses announces
and drops peers. In one process the tracker reads the same store with
:func:`find` inside its own transactions; across processes it pulls
``GET /revocations?since=T`` (entries whose time is at or after ``T``;
pass the answer's ``server_time`` back as the next ``since``).

Pure: no reactor, no I/O beyond the :class:`~imsp2pd.store.Txn` given.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from imsp2pd.store.interface import Collection, Txn

__all__ = [
    "COLLECTION",
    "COLLECTIONS",
    "Kind",
    "Revocation",
    "RevocationError",
    "add",
    "find",
    "since",
]

COLLECTION = "drm_revocations"
COLLECTIONS = (Collection(COLLECTION, ("kind",)),)
MAX_VALUE = 512
_FPR = re.compile(r"[0-9a-f]{64}")
_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SURROGATE = re.compile("[\ud800-\udfff]")


class Kind(enum.StrEnum):
    IMPU = "impu"
    DEVICE = "device"
    DOI = "doi"
    TOKEN = "token"


class RevocationError(ValueError):
    """A revocation entry that is not well formed; one line of text."""


@dataclass(frozen=True, slots=True)
class Revocation:
    kind: Kind
    value: str
    time: float
    reason: str = ""

    def __post_init__(self) -> None:
        v = self.value
        if not isinstance(v, str) or not v or len(v) > MAX_VALUE or any(ord(c) < 0x20 for c in v):
            raise RevocationError("value must be a non-empty string without control characters")
        if self.kind is Kind.IMPU and not v.startswith(("sip:", "sips:", "tel:")):
            raise RevocationError("an impu must be a sip:, sips: or tel: URI")
        if self.kind is Kind.DEVICE and not _FPR.fullmatch(v):
            raise RevocationError("a device is its key fingerprint: 64 lower-case hex digits")
        if self.kind is Kind.TOKEN and not _TOKEN_ID.fullmatch(v):
            raise RevocationError("a token is its token id: 1-64 base64url characters")
        if not isinstance(self.reason, str) or len(self.reason) > MAX_VALUE:
            raise RevocationError("reason must be a string of at most 512 characters")
        if _SURROGATE.search(v) or _SURROGATE.search(self.reason):
            raise RevocationError("value and reason must be valid Unicode (no lone surrogates)")

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.value}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "value": self.value,
            "time": self.time,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: Any, now: float | None = None) -> Revocation:
        """From a request body (``time`` defaults to ``now``) or a stored document."""
        if not isinstance(data, dict):
            raise RevocationError("a revocation is a JSON object")
        unknown = sorted(set(data) - {"kind", "value", "time", "reason"})
        if unknown:
            raise RevocationError(f"unknown members {unknown}")
        try:
            kind = Kind(str(data.get("kind")))
        except ValueError:
            raise RevocationError("kind must be impu, device, doi or token") from None
        when = data.get("time", now)
        if isinstance(when, bool) or not isinstance(when, int | float) or not 0 <= when < 2**53:
            raise RevocationError("time must be a non-negative number of Unix seconds")
        return cls(kind, data.get("value"), float(when), data.get("reason", ""))  # type: ignore[arg-type]


def add(txn: Txn, revocation: Revocation) -> Revocation:
    """Store ``revocation``; if the same thing is already revoked, keep (and return) that."""
    existing = txn.get(COLLECTION, revocation.key)
    if existing is not None:
        return Revocation.from_json(existing)
    txn.put(COLLECTION, revocation.key, revocation.to_json())
    return revocation


def find(
    txn: Txn,
    *,
    impu: str | None = None,
    device: str | None = None,
    doi: str | None = None,
    token: str | None = None,
) -> Revocation | None:
    """The first entry revoking any of the things given, or ``None``."""
    for kind, value in (
        (Kind.IMPU, impu),
        (Kind.DEVICE, device),
        (Kind.DOI, doi),
        (Kind.TOKEN, token),
    ):
        if value is None:
            continue
        doc = txn.get(COLLECTION, f"{kind}:{value}")
        if doc is not None:
            return Revocation.from_json(doc)
    return None


def since(txn: Txn, when: float) -> list[Revocation]:
    """Every entry whose time is at or after ``when``, oldest first."""
    entries = [Revocation.from_json(doc) for _, doc in txn.scan(COLLECTION)]
    return sorted((e for e in entries if e.time >= when), key=lambda e: (e.time, e.key))
