"""Device-bound licenses: the request a player signs, the license the server signs.

Signed blobs
============
Both directions use the encoding of the entitlement tokens:
``base64url(payload) "." base64url(signature)`` (no padding), where *payload*
is RFC 8785 canonical JSON (:mod:`imsp2pd.canonjson`) and *signature* is
Ed25519 over exactly those bytes.

License request (player → ``POST /license``), body
``{"request": SIGNED}``, signed with the device's Ed25519 key::

    {"kind": "license-request", "token": LICENSE-TOKEN,
     "device": {"ed25519": B64URL(32), "x25519": B64URL(32)},
     "nonce": B64URL(16..64 bytes)}

The server checks the signature against ``device.ed25519`` itself, so a
license token without its device's signature gets nothing.

License (server → player), ``{"license": SIGNED, "server_time": INT}``,
signed with the DRM server's Ed25519 key::

    {"kind": "license", "v": 1, "license_id": ID, "doi": …, "key_id": …,
     "impu": …, "device": FINGERPRINT, "rights": {…}, "first_use": INT,
     "not_after": INT | null, "server_time": INT, "nonce": (echoed),
     "key": {"alg": "X25519-HKDF-SHA256-A128GCM", "epk": B64URL(32),
             "ct": B64URL(32)}}

``FINGERPRINT`` is the lower-case hex SHA-256 of the device's raw Ed25519
public key: the device identity used for device limits and revocation.

Key wrapping (ephemeral-static ECDH): the server makes an ephemeral X25519
key ``e`` for every license, ``z = X25519(e, device x25519)``,
``kek = HKDF-SHA256(z, salt = epk || device x25519,
info = "imsp2p license key wrap v1", 16)``, and
``ct = AES-128-GCM(kek, nonce = 12 zero bytes, content key,
aad = canonical JSON {"device", "doi", "key_id", "license_id"})``. The KEK is
new with every ephemeral key, so the fixed nonce is never reused under it.

Player checks (:class:`LicenseGuard`, pure, ``now`` an argument): the server
signature; that the license is for this device (fingerprint, and the key
unwraps); at fetch, that it echoes the nonce just sent (a replayed answer is
refused); the play window against a trusted time that never goes below a
monotonic high-water mark of every server time and local time seen, so a
clock rolled back is caught; that a copy older than one already seen is not
accepted again; and the play count.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from imsp2pd import canonjson
from imsp2pd.drm.rights import PlayRefused, RefusalReason, Rights, RightsError, Usage
from imsp2pd.entitlement import b64url_decode, b64url_encode

__all__ = [
    "CLOCK_TOLERANCE",
    "WRAP_ALG",
    "BadLicense",
    "ClockRolledBack",
    "DeviceKeys",
    "License",
    "LicenseError",
    "LicenseExpired",
    "LicenseGuard",
    "LicenseReason",
    "LicenseRequest",
    "PlayerState",
    "PlaysExhausted",
    "ReplayedLicense",
    "TamperedLicense",
    "WrongDevice",
    "fingerprint",
    "issue_license",
    "make_request",
    "observe",
    "open_request",
    "sign_blob",
    "verify_blob",
]

WRAP_ALG = "X25519-HKDF-SHA256-A128GCM"
_WRAP_INFO = b"imsp2p license key wrap v1"
CLOCK_TOLERANCE = 300  # seconds of skew forgiven before a clock counts as rolled back
MAX_BLOB = 16384
_FPR_RE = re.compile(r"[0-9a-f]{64}")
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class LicenseReason(enum.StrEnum):
    MALFORMED = "malformed"
    TAMPERED = "tampered"
    WRONG_DEVICE = "wrong-device"
    REPLAYED = "replayed"
    EXPIRED = "expired"
    CLOCK_ROLLED_BACK = "clock-rolled-back"
    PLAYS_EXHAUSTED = "plays-exhausted"


class LicenseError(Exception):
    """A request or license was refused; ``reason`` is a stable code."""

    reason: LicenseReason = LicenseReason.MALFORMED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadLicense(LicenseError):
    reason = LicenseReason.MALFORMED


class TamperedLicense(LicenseError):
    reason = LicenseReason.TAMPERED


class WrongDevice(LicenseError):
    reason = LicenseReason.WRONG_DEVICE


class ReplayedLicense(LicenseError):
    reason = LicenseReason.REPLAYED


class LicenseExpired(LicenseError):
    reason = LicenseReason.EXPIRED


class ClockRolledBack(LicenseError):
    reason = LicenseReason.CLOCK_ROLLED_BACK


class PlaysExhausted(LicenseError):
    reason = LicenseReason.PLAYS_EXHAUSTED


# -- signed blobs ----------------------------------------------------------------


def sign_blob(key: Ed25519PrivateKey, payload: dict[str, Any]) -> str:
    data = canonjson.dumps(payload)
    return b64url_encode(data) + "." + b64url_encode(key.sign(data))


def _split_blob(blob: Any, error: type[LicenseError]) -> tuple[dict[str, Any], bytes, bytes]:
    if not isinstance(blob, str) or len(blob) > MAX_BLOB:
        raise error("not a signed blob of sensible length")
    head, dot, tail = blob.partition(".")
    if not dot or "." in tail:
        raise error("a signed blob is two base64url parts joined by a dot")
    try:
        data = b64url_decode(head)
        signature = b64url_decode(tail)
        payload = canonjson.loads(data, require_canonical=True)
    except ValueError:
        raise error("signed blob is not base64url of canonical JSON") from None
    if not isinstance(payload, dict):
        raise error("signed payload is not a JSON object")
    if len(signature) != 64:
        raise error("signature must be 64 bytes")
    return payload, data, signature


def verify_blob(
    blob: Any, key: Ed25519PublicKey, error: type[LicenseError] = TamperedLicense
) -> dict[str, Any]:
    """The payload of ``blob`` if ``key`` signed it; else raise ``error``."""
    payload, data, signature = _split_blob(blob, BadLicense)
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise error("signature does not verify") from None
    return payload


# -- device keys -----------------------------------------------------------------


def _raw_public(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(ed25519_public: bytes) -> str:
    """The device fingerprint: hex SHA-256 of the raw Ed25519 public key."""
    return hashlib.sha256(ed25519_public).hexdigest()


@dataclass(frozen=True)
class DeviceKeys:
    """A device's two key pairs (kept in the keystore)."""

    x25519: X25519PrivateKey
    ed25519: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> DeviceKeys:
        return cls(X25519PrivateKey.generate(), Ed25519PrivateKey.generate())

    @classmethod
    def from_raw(cls, x25519: bytes, ed25519: bytes) -> DeviceKeys:
        return cls(
            X25519PrivateKey.from_private_bytes(x25519),
            Ed25519PrivateKey.from_private_bytes(ed25519),
        )

    def private_raw(self) -> tuple[bytes, bytes]:
        raw = serialization.Encoding.Raw
        fmt = serialization.PrivateFormat.Raw
        none = serialization.NoEncryption()
        return (
            self.x25519.private_bytes(raw, fmt, none),
            self.ed25519.private_bytes(raw, fmt, none),
        )

    @property
    def x25519_public(self) -> bytes:
        return _raw_public(self.x25519.public_key())

    @property
    def ed25519_public(self) -> bytes:
        return _raw_public(self.ed25519.public_key())

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.ed25519_public)


# -- the request -----------------------------------------------------------------


@dataclass(frozen=True)
class LicenseRequest:
    """A verified license request (the device signature checked)."""

    token: str
    ed25519: bytes
    x25519: bytes
    nonce: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.ed25519)


def make_request(device: DeviceKeys, token: str, nonce: bytes) -> str:
    """The signed request body value for ``POST /license``."""
    if not 16 <= len(nonce) <= 64:
        raise ValueError("nonce must be 16 to 64 bytes")
    return sign_blob(
        device.ed25519,
        {
            "kind": "license-request",
            "token": token,
            "device": {
                "ed25519": b64url_encode(device.ed25519_public),
                "x25519": b64url_encode(device.x25519_public),
            },
            "nonce": b64url_encode(nonce),
        },
    )


def open_request(blob: Any) -> LicenseRequest:
    """Check a request's shape and its device signature; raise :class:`LicenseError`."""
    payload, data, signature = _split_blob(blob, BadLicense)
    if set(payload) != {"kind", "token", "device", "nonce"} or payload["kind"] != (
        "license-request"
    ):
        raise BadLicense("request must have exactly kind, token, device and nonce")
    device = payload["device"]
    if not isinstance(device, dict) or set(device) != {"ed25519", "x25519"}:
        raise BadLicense("device must have exactly ed25519 and x25519")
    try:
        ed = b64url_decode(device["ed25519"])
        x = b64url_decode(device["x25519"])
        nonce = b64url_decode(payload["nonce"])
    except (ValueError, TypeError):
        raise BadLicense("device keys and nonce must be base64url") from None
    if len(ed) != 32 or len(x) != 32:
        raise BadLicense("device keys must be 32 bytes each")
    if not 16 <= len(nonce) <= 64:
        raise BadLicense("nonce must be 16 to 64 bytes")
    token = payload["token"]
    if not isinstance(token, str) or not token:
        raise BadLicense("token must be a string")
    try:
        Ed25519PublicKey.from_public_bytes(ed).verify(signature, data)
    except (InvalidSignature, ValueError):
        raise TamperedLicense("the request is not signed by the device key it names") from None
    return LicenseRequest(token=token, ed25519=ed, x25519=x, nonce=payload["nonce"])


# -- the license -----------------------------------------------------------------


def _wrap_aad(license_id: str, doi: str, key_id: str, device: str) -> bytes:
    return canonjson.dumps(
        {"device": device, "doi": doi, "key_id": key_id, "license_id": license_id}
    )


def _kek(shared: bytes, epk: bytes, device_x: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=16, salt=epk + device_x, info=_WRAP_INFO).derive(
        shared
    )


def issue_license(
    server_key: Ed25519PrivateKey,
    request: LicenseRequest,
    *,
    license_id: str,
    doi: str,
    key_id: str,
    impu: str,
    rights: Rights,
    first_use: int,
    content_key: bytes,
    server_time: int,
) -> str:
    """Wrap ``content_key`` to the requesting device and sign the license."""
    try:
        device_x = X25519PublicKey.from_public_bytes(request.x25519)
        ephemeral = X25519PrivateKey.generate()
        shared = ephemeral.exchange(device_x)
    except ValueError:
        raise BadLicense("the device X25519 key is not usable") from None
    epk = _raw_public(ephemeral.public_key())
    device = request.fingerprint
    ct = AESGCM(_kek(shared, epk, request.x25519)).encrypt(
        bytes(12), content_key, _wrap_aad(license_id, doi, key_id, device)
    )
    payload = {
        "kind": "license",
        "v": 1,
        "license_id": license_id,
        "doi": doi,
        "key_id": key_id,
        "impu": impu,
        "device": device,
        "rights": rights.to_json(),
        "first_use": first_use,
        "not_after": rights.not_after(first_use),
        "server_time": server_time,
        "nonce": request.nonce,
        "key": {"alg": WRAP_ALG, "epk": b64url_encode(epk), "ct": b64url_encode(ct)},
    }
    return sign_blob(server_key, payload)


_LICENSE_FIELDS = frozenset(
    {
        "kind",
        "v",
        "license_id",
        "doi",
        "key_id",
        "impu",
        "device",
        "rights",
        "first_use",
        "not_after",
        "server_time",
        "nonce",
        "key",
    }
)


def _int(payload: dict[str, Any], name: str, optional: bool = False) -> int | None:
    value = payload[name]
    if value is None and optional:
        return None
    if type(value) is not int or value < 0:
        raise BadLicense(f"{name} must be a non-negative integer")
    return value


def _str(payload: dict[str, Any], name: str) -> str:
    value = payload[name]
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise BadLicense(f"{name} must be a non-empty string")
    return value


@dataclass(frozen=True)
class License:
    """A license whose server signature verified. ``blob`` is the signed text."""

    blob: str
    license_id: str
    doi: str
    key_id: str
    impu: str
    device: str
    rights: Rights
    first_use: int
    not_after: int | None
    server_time: int
    nonce: str
    epk: bytes
    wrapped_key: bytes

    @classmethod
    def parse(cls, blob: Any, server_public: Ed25519PublicKey) -> License:
        """Verify the server signature and the shape; raise :class:`LicenseError`."""
        payload = verify_blob(blob, server_public, TamperedLicense)
        if set(payload) != _LICENSE_FIELDS or payload["kind"] != "license" or payload["v"] != 1:
            raise BadLicense("not a version 1 license")
        license_id = _str(payload, "license_id")
        if not _ID_RE.fullmatch(license_id):
            raise BadLicense("license_id must be 1-64 base64url characters")
        device = _str(payload, "device")
        if not _FPR_RE.fullmatch(device):
            raise BadLicense("device must be a SHA-256 fingerprint in hex")
        key = payload["key"]
        if not isinstance(key, dict) or set(key) != {"alg", "epk", "ct"} or key["alg"] != WRAP_ALG:
            raise BadLicense(f"key must be wrapped with {WRAP_ALG}")
        try:
            epk = b64url_decode(key["epk"])
            ct = b64url_decode(key["ct"])
            rights = Rights.from_json(payload["rights"])
        except (ValueError, TypeError, RightsError) as exc:
            raise BadLicense(f"bad key or rights: {exc}") from None
        if len(epk) != 32 or len(ct) != 32:
            raise BadLicense("wrapped key has the wrong size")
        first_use = _int(payload, "first_use")
        assert first_use is not None
        not_after = _int(payload, "not_after", optional=True)
        if not_after != rights.not_after(first_use):
            raise BadLicense("not_after does not follow from the rights")
        server_time = _int(payload, "server_time")
        assert server_time is not None
        return cls(
            blob=blob,
            license_id=license_id,
            doi=_str(payload, "doi"),
            key_id=_str(payload, "key_id"),
            impu=_str(payload, "impu"),
            device=device,
            rights=rights,
            first_use=first_use,
            not_after=not_after,
            server_time=server_time,
            nonce=_str(payload, "nonce"),
            epk=epk,
            wrapped_key=ct,
        )

    def unwrap(self, device: DeviceKeys) -> bytes:
        """The content key, if this license is for ``device``; else :class:`WrongDevice`."""
        if self.device != device.fingerprint:
            raise WrongDevice("the license is for another device")
        try:
            shared = device.x25519.exchange(X25519PublicKey.from_public_bytes(self.epk))
            return AESGCM(_kek(shared, self.epk, device.x25519_public)).decrypt(
                bytes(12),
                self.wrapped_key,
                _wrap_aad(self.license_id, self.doi, self.key_id, self.device),
            )
        except (InvalidTag, ValueError):
            raise WrongDevice("the content key does not unwrap with this device's key") from None


# -- the player's guard ---------------------------------------------------------------


@dataclass(frozen=True)
class PlayerState:
    """What a player remembers between runs (kept sealed in the keystore).

    ``high_water`` is the latest time ever seen (server or local); ``seen``
    maps a license id to (the newest server time seen for it, plays used);
    ``trusted_keys`` are the DRM server keys learnt over verified TLS.
    """

    high_water: int = 0
    seen: dict[str, tuple[int, int]] = field(default_factory=dict)
    trusted_keys: tuple[str, ...] = ()  # DRM server public keys (base64url) licenses may use

    def to_json(self) -> dict[str, Any]:
        return {
            "high_water": self.high_water,
            "seen": {k: [t, n] for k, (t, n) in sorted(self.seen.items())},
            "trusted_keys": list(self.trusted_keys),
        }

    @classmethod
    def from_json(cls, data: Any) -> PlayerState:
        try:
            seen = {str(k): (int(v[0]), int(v[1])) for k, v in data["seen"].items()}
            trusted = tuple(str(k) for k in data.get("trusted_keys", ()))
            return cls(high_water=int(data["high_water"]), seen=seen, trusted_keys=trusted)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            raise BadLicense("player state is damaged") from None


def observe(state: PlayerState, now: float, tolerance: int = CLOCK_TOLERANCE) -> PlayerState:
    """Record the local time ``now`` in the high-water mark.

    Raises :class:`ClockRolledBack` when ``now`` is more than ``tolerance``
    seconds before a time already seen. A player calls this (and saves the
    state) on every attempt, refused ones included, so that a refusal for
    expiry cannot be undone by setting the clock back.
    """
    if now + tolerance < state.high_water:
        raise ClockRolledBack(
            f"the clock reads {int(now)}, but time {state.high_water} was already seen: "
            "it was set back"
        )
    return replace(state, high_water=max(int(now), state.high_water))


class LicenseGuard:
    """The player's license checks. Pure: every method takes ``now`` and a state
    and returns the new state; the caller persists it."""

    def __init__(
        self,
        server_public: Ed25519PublicKey,
        device: DeviceKeys,
        tolerance: int = CLOCK_TOLERANCE,
    ) -> None:
        self._server = server_public
        self._device = device
        self._tolerance = tolerance

    def _trusted_now(self, state: PlayerState, now: float) -> int:
        return observe(state, now, self._tolerance).high_water

    def accept(
        self, blob: str, state: PlayerState, now: float, expected_nonce: bytes
    ) -> tuple[License, bytes, PlayerState]:
        """Check a license just fetched in answer to a request with ``expected_nonce``."""
        lic = License.parse(blob, self._server)
        if lic.nonce != b64url_encode(expected_nonce):
            raise ReplayedLicense("the license does not echo the nonce just sent: a replay")
        key = lic.unwrap(self._device)
        if lic.server_time > now + self._tolerance:
            raise ClockRolledBack(
                f"the clock reads {int(now)}, the server's time is {lic.server_time}: "
                "the clock is behind"
            )
        state = self._see(lic, state, now)
        return lic, key, state

    def _see(self, lic: License, state: PlayerState, now: float) -> PlayerState:
        trusted = self._trusted_now(state, now)
        newest, plays = state.seen.get(lic.license_id, (0, 0))
        if lic.server_time < newest:
            raise ReplayedLicense(
                f"an older copy of license {lic.license_id} (time {lic.server_time}, "
                f"newer seen: {newest})"
            )
        seen = dict(state.seen)
        seen[lic.license_id] = (lic.server_time, plays)
        return replace(state, high_water=max(trusted, lic.server_time), seen=seen)

    def authorize_play(
        self, blob: str, state: PlayerState, now: float
    ) -> tuple[License, bytes, PlayerState]:
        """Check a stored license for one more play; count it. Returns the key."""
        lic = License.parse(blob, self._server)
        key = lic.unwrap(self._device)
        state = self._see(lic, state, now)
        trusted = max(int(now), state.high_water)
        _, plays = state.seen[lic.license_id]
        try:
            usage = Usage(plays_used=plays).consume(lic.rights, lic.not_after, trusted)
        except PlayRefused as refused:
            if refused.reason is RefusalReason.EXPIRED:
                raise LicenseExpired(f"the license expired at {lic.not_after}") from None
            raise PlaysExhausted(refused.message) from None
        seen = dict(state.seen)
        seen[lic.license_id] = (state.seen[lic.license_id][0], usage.plays_used)
        return lic, key, replace(state, seen=seen)
