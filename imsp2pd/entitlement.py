"""Entitlement tokens signed by the Application Server (DESIGN.md §3).

A token is ``base64url(payload) "." base64url(signature)`` (no padding), where
*payload* is the RFC 8785 canonical JSON of the claims (see
:mod:`imsp2pd.canonjson`) and *signature* is the Ed25519 signature of exactly
those payload bytes, made with the AS key.

Payloads (all members required, no others allowed):

``tracker``
    ``{"kind": "tracker", "impu": "sip:alice@ims.example.org",
    "info_hash": "<40 or 64 lower-case hex>", "role": "consumer" | "provider"
    | "seeder", "not_after": <int, Unix seconds>, "token_id": "<id>"}``
``license``
    ``{"kind": "license", "impu": …, "doi": "10.…/…", "offer": "<offer id>",
    "not_after": …, "token_id": …}``
``publisher``
    ``{"kind": "publisher", "impu": …, "role": "publisher", "not_after": …,
    "token_id": …}``

A token is valid while ``now <= not_after``. A token id is 1–64 characters
of the base64url alphabet; :class:`Issuer` makes 22-character random ids.

:class:`Verifier` is clock-free: ``verify(token, now)`` returns a frozen
:class:`TrackerToken`, :class:`LicenseToken` or :class:`PublisherToken`, or
raises a subclass of :class:`EntitlementError` whose ``reason`` says why
(:class:`Reason`). Successful verifications are cached by token id in a
bounded LRU; a cache hit requires the *identical* token string, so a forged
token that reuses a known id is still checked in full. Expiry is checked on
every call, hits included.

Key helpers: :func:`load_or_create_private_key` (PEM PKCS#8, file mode 0600,
made at first start under the keys directory), :func:`load_public_key` (a
config value: PEM text, a path to a PEM file, or the raw 32-byte key as
base64url or hex) and :func:`public_key_to_config` (the base64url form).
"""

from __future__ import annotations

import base64
import binascii
import enum
import os
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from imsp2pd import canonjson

__all__ = [
    "AS_KEY_FILENAME",
    "BadSignature",
    "EntitlementError",
    "Issuer",
    "KeyConfigError",
    "LicenseToken",
    "MalformedToken",
    "PublisherToken",
    "Reason",
    "Token",
    "TokenExpired",
    "TokenKind",
    "TrackerRole",
    "TrackerToken",
    "Verifier",
    "WrongKind",
    "WrongSubject",
    "b64url_decode",
    "b64url_encode",
    "load_or_create_private_key",
    "load_public_key",
    "public_key_to_config",
]

AS_KEY_FILENAME = "as_ed25519.pem"
MAX_TOKEN_LENGTH = 4096
_TOKEN_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
_HEX_HASH_RE = re.compile(r"(?:[0-9a-f]{40}|[0-9a-f]{64})")
_MAX_TEXT = 512


class TokenKind(enum.StrEnum):
    TRACKER = "tracker"
    LICENSE = "license"
    PUBLISHER = "publisher"


class TrackerRole(enum.StrEnum):
    CONSUMER = "consumer"
    PROVIDER = "provider"
    SEEDER = "seeder"


class Reason(enum.StrEnum):
    """Why a token was refused (also a stable code for logs and metrics)."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad-signature"
    EXPIRED = "expired"
    WRONG_KIND = "wrong-kind"
    WRONG_SUBJECT = "wrong-subject"


class EntitlementError(Exception):
    """A token was refused; ``reason`` says why, the message says more."""

    reason: Reason = Reason.MALFORMED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedToken(EntitlementError):
    reason = Reason.MALFORMED


class BadSignature(EntitlementError):
    reason = Reason.BAD_SIGNATURE


class TokenExpired(EntitlementError):
    reason = Reason.EXPIRED


class WrongKind(EntitlementError):
    reason = Reason.WRONG_KIND


class WrongSubject(EntitlementError):
    """A valid token of the right kind, but for another info-hash."""

    reason = Reason.WRONG_SUBJECT


class KeyConfigError(ValueError):
    """A key file or configured key cannot be used (one clear line)."""


@dataclass(frozen=True, slots=True)
class TrackerToken:
    impu: str
    info_hash: bytes
    role: TrackerRole
    not_after: int
    token_id: str
    kind: TokenKind = TokenKind.TRACKER

    @property
    def info_hash_hex(self) -> str:
        return self.info_hash.hex()


@dataclass(frozen=True, slots=True)
class LicenseToken:
    impu: str
    doi: str
    offer: str
    not_after: int
    token_id: str
    kind: TokenKind = TokenKind.LICENSE


@dataclass(frozen=True, slots=True)
class PublisherToken:
    impu: str
    not_after: int
    token_id: str
    role: str = "publisher"
    kind: TokenKind = TokenKind.PUBLISHER


Token = TrackerToken | LicenseToken | PublisherToken
_KIND_OF: dict[type, TokenKind] = {
    TrackerToken: TokenKind.TRACKER,
    LicenseToken: TokenKind.LICENSE,
    PublisherToken: TokenKind.PUBLISHER,
}
T = TypeVar("T", TrackerToken, LicenseToken, PublisherToken)


# -- base64url -------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict unpadded base64url; raises ``ValueError``."""
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(data) != text:  # non-zero trailing bits
        raise ValueError("non-canonical base64url")
    return data


# -- claims ----------------------------------------------------------------


def _text(claims: dict[str, Any], name: str) -> str:
    value = claims[name]
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise MalformedToken(f"{name} must be a non-empty string of at most {_MAX_TEXT} characters")
    if any(ord(c) < 0x20 or c.isspace() for c in value):
        raise MalformedToken(f"{name} contains whitespace or control characters")
    return value


def _impu(claims: dict[str, Any]) -> str:
    value = _text(claims, "impu")
    if not value.startswith(("sip:", "sips:", "tel:")):
        raise MalformedToken("impu must be a sip:, sips: or tel: URI")
    return value


def _common(claims: dict[str, Any]) -> tuple[int, str]:
    not_after = claims["not_after"]
    if type(not_after) is not int or not_after < 0:
        raise MalformedToken("not_after must be a non-negative integer")
    token_id = claims["token_id"]
    if not isinstance(token_id, str) or not _TOKEN_ID_RE.fullmatch(token_id):
        raise MalformedToken("token_id must be 1-64 base64url characters")
    return not_after, token_id


_FIELDS: dict[TokenKind, frozenset[str]] = {
    TokenKind.TRACKER: frozenset({"kind", "impu", "info_hash", "role", "not_after", "token_id"}),
    TokenKind.LICENSE: frozenset({"kind", "impu", "doi", "offer", "not_after", "token_id"}),
    TokenKind.PUBLISHER: frozenset({"kind", "impu", "role", "not_after", "token_id"}),
}


def _claims_to_token(claims: Any) -> Token:
    if not isinstance(claims, dict):
        raise MalformedToken("payload is not a JSON object")
    try:
        kind = TokenKind(str(claims.get("kind")))
    except ValueError:
        raise MalformedToken("unknown token kind") from None
    fields = set(claims)
    if fields != _FIELDS[kind]:
        missing = sorted(_FIELDS[kind] - fields)
        extra = sorted(fields - _FIELDS[kind])
        raise MalformedToken(f"{kind} token members wrong (missing {missing}, unexpected {extra})")
    impu = _impu(claims)
    not_after, token_id = _common(claims)
    if kind is TokenKind.TRACKER:
        info_hash = claims["info_hash"]
        if not isinstance(info_hash, str) or not _HEX_HASH_RE.fullmatch(info_hash):
            raise MalformedToken("info_hash must be 40 or 64 lower-case hex digits")
        try:
            role = TrackerRole(claims["role"])
        except ValueError:
            raise MalformedToken("role must be consumer, provider or seeder") from None
        return TrackerToken(impu, bytes.fromhex(info_hash), role, not_after, token_id)
    if kind is TokenKind.LICENSE:
        return LicenseToken(impu, _text(claims, "doi"), _text(claims, "offer"), not_after, token_id)
    if claims["role"] != "publisher":
        raise MalformedToken("a publisher token's role must be publisher")
    return PublisherToken(impu, not_after, token_id)


def _token_to_claims(token: Token) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "kind": str(token.kind),
        "impu": token.impu,
        "not_after": token.not_after,
        "token_id": token.token_id,
    }
    if isinstance(token, TrackerToken):
        claims["info_hash"] = token.info_hash.hex()
        claims["role"] = str(token.role)
    elif isinstance(token, LicenseToken):
        claims["doi"] = token.doi
        claims["offer"] = token.offer
    else:
        claims["role"] = "publisher"
    return claims


# -- issuing and verifying ---------------------------------------------------


def _new_token_id() -> str:
    return secrets.token_urlsafe(16)


class Issuer:
    """Signs tokens with the AS's Ed25519 private key."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        token_id_factory: Callable[[], str] = _new_token_id,
    ) -> None:
        self._key = private_key
        self._new_id = token_id_factory

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, token: Token) -> str:
        """Encode and sign *token*, checking it as a verifier would."""
        claims = _token_to_claims(token)
        if _claims_to_token(claims) != token:
            raise ValueError("token does not survive encoding")
        payload = canonjson.dumps(claims)
        return b64url_encode(payload) + "." + b64url_encode(self._key.sign(payload))

    def _id(self, token_id: str | None) -> str:
        return self._new_id() if token_id is None else token_id

    def issue_tracker(
        self,
        impu: str,
        info_hash: bytes,
        role: TrackerRole | str,
        not_after: int,
        token_id: str | None = None,
    ) -> str:
        if len(info_hash) not in (20, 32):
            raise ValueError("info_hash must be 20 (v1) or 32 (v2) bytes")
        token = TrackerToken(
            impu, bytes(info_hash), TrackerRole(role), int(not_after), self._id(token_id)
        )
        return self._checked(token)

    def issue_license(
        self, impu: str, doi: str, offer: str, not_after: int, token_id: str | None = None
    ) -> str:
        return self._checked(LicenseToken(impu, doi, offer, int(not_after), self._id(token_id)))

    def issue_publisher(self, impu: str, not_after: int, token_id: str | None = None) -> str:
        return self._checked(PublisherToken(impu, int(not_after), self._id(token_id)))

    def _checked(self, token: Token) -> str:
        try:
            return self.sign(token)
        except MalformedToken as exc:
            raise ValueError(f"cannot issue token: {exc.message}") from None


class Verifier:
    """Checks tokens against the AS's Ed25519 public key; clock-free."""

    def __init__(self, public_key: Ed25519PublicKey, cache_size: int = 65536) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        self._key = public_key
        self._cache_size = cache_size
        self._cache: OrderedDict[str, tuple[str, Token]] = OrderedDict()
        self._ids: dict[str, str] = {}  # token string -> token id, for the fast path
        self.hits = 0
        self.misses = 0

    def verify(self, token: str, now: float) -> Token:
        """Return the claims of *token* if it is valid at *now*, else raise."""
        claims = self._lookup(token)
        if now > claims.not_after:
            raise TokenExpired(f"token expired at {claims.not_after}")
        return claims

    def verify_tracker(
        self, token: str, now: float, info_hash: bytes | None = None
    ) -> TrackerToken:
        """Verify a tracker token, optionally for one info-hash."""
        claims = self._expect(self.verify(token, now), TrackerToken)
        if info_hash is not None and claims.info_hash != info_hash:
            raise WrongSubject("tracker token is for another info-hash")
        return claims

    def verify_license(self, token: str, now: float) -> LicenseToken:
        return self._expect(self.verify(token, now), LicenseToken)

    def verify_publisher(self, token: str, now: float) -> PublisherToken:
        return self._expect(self.verify(token, now), PublisherToken)

    @staticmethod
    def _expect(claims: Token, cls: type[T]) -> T:
        if not isinstance(claims, cls):
            raise WrongKind(f"expected a {_KIND_OF[cls]} token, got a {claims.kind} token")
        return claims

    def _lookup(self, token: str) -> Token:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise MalformedToken("token is not a string of sensible length")
        # Fast path: this exact token string was verified before.
        known_id = self._ids.get(token)
        if known_id is not None:
            cached = self._cache.get(known_id)
            if cached is not None and cached[0] == token:
                self._cache.move_to_end(known_id)
                self.hits += 1
                return cached[1]
        payload_b64, dot, sig_b64 = token.partition(".")
        if not dot or "." in sig_b64:
            raise MalformedToken("token must be two base64url parts joined by a dot")
        try:
            payload = b64url_decode(payload_b64)
            signature = b64url_decode(sig_b64)
        except ValueError:
            raise MalformedToken("token parts are not base64url") from None
        try:
            claims = _claims_to_token(canonjson.loads(payload, require_canonical=True))
        except canonjson.CanonicalJSONError as exc:
            raise MalformedToken(f"payload: {exc}") from None
        self.misses += 1
        if len(signature) != 64:
            raise BadSignature("signature must be 64 bytes")
        try:
            self._key.verify(signature, payload)
        except InvalidSignature:
            raise BadSignature("signature does not verify with the AS key") from None
        if self._cache_size:
            old = self._cache.pop(claims.token_id, None)
            if old is not None:
                self._ids.pop(old[0], None)
            self._cache[claims.token_id] = (token, claims)
            self._ids[token] = claims.token_id
            while len(self._cache) > self._cache_size:
                _, (old_token, _) = self._cache.popitem(last=False)
                self._ids.pop(old_token, None)
        return claims

    def forget(self, token_id: str) -> None:
        """Drop a token id from the cache (e.g. when it is revoked)."""
        old = self._cache.pop(token_id, None)
        if old is not None:
            self._ids.pop(old[0], None)


# -- keys ------------------------------------------------------------------


def load_or_create_private_key(
    keys_dir: str | os.PathLike[str], filename: str = AS_KEY_FILENAME
) -> Ed25519PrivateKey:
    """Load the Ed25519 key ``keys_dir/filename``, making it on first start.

    The directory is made with mode 0700 and the key file with mode 0600
    (created exclusively, so two starting processes never both write it).
    """
    directory = Path(keys_dir)
    path = directory / filename
    if not path.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # someone else made it meanwhile: load theirs
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            return key
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyConfigError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyConfigError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise KeyConfigError(f"{path} is not an Ed25519 key")
    return loaded


def public_key_to_config(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key as base64url: the form to put in a config."""
    return b64url_encode(
        key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def load_public_key(value: str) -> Ed25519PublicKey:
    """An Ed25519 public key from a config value.

    Accepted: PEM text (a public key, or a private key whose public half is
    used), a path to such a PEM file, or the raw 32-byte key as 43-character
    unpadded base64url or 64 hex digits.
    """
    if not isinstance(value, str) or not value.strip():
        raise KeyConfigError("public key config value is empty")
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return _public_from_pem(text.encode("ascii", "replace"), "the configured PEM")
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    if re.fullmatch(r"[A-Za-z0-9_-]{43}", text):
        try:
            return Ed25519PublicKey.from_public_bytes(b64url_decode(text))
        except ValueError:
            pass
    path = Path(text)
    if path.is_file():
        try:
            return _public_from_pem(path.read_bytes(), str(path))
        except OSError as exc:
            raise KeyConfigError(f"cannot read {path}: {exc.strerror}") from None
    raise KeyConfigError("public key must be PEM, a PEM file path, or 32 bytes as base64url or hex")


def _public_from_pem(data: bytes, where: str) -> Ed25519PublicKey:
    key: Any
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, binascii.Error):
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError, binascii.Error):
            raise KeyConfigError(f"{where} is not a PEM public or private key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyConfigError(f"{where} is not an Ed25519 key")
    return key
