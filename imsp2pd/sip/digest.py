"""HTTP Digest for SIP: RFC 2617 (MD5, qop=auth), RFC 7616 (SHA-256) and
RFC 3310 AKAv1-MD5 (the "password" is the AKA RES, the nonce carries RAND
and AUTN).

Both sides are here: :func:`answer_challenge` for a UAC,
:func:`verify_credentials` and :class:`NonceBook` (nonce issue, expiry and
replay protection by nonce-count, driven by ``now``) for a registrar.
Passwords are never stored by the registrar: it keeps HA1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum

from imsp2pd.sip.headers import AuthHeader


class Algorithm(StrEnum):
    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    AKAV1_MD5 = "AKAv1-MD5"


def _hash_for(algorithm: str) -> str:
    a = algorithm.upper()
    if a in ("MD5", "MD5-SESS", "AKAV1-MD5"):
        return "md5"
    if a in ("SHA-256", "SHA-256-SESS"):
        return "sha256"
    raise ValueError(f"unsupported digest algorithm {algorithm!r}")


#: The hash constructors of the algorithm names as they are usually written.
_HASHES = {
    a: hashlib.md5 if _hash_for(a) == "md5" else hashlib.sha256
    for a in ("MD5", "MD5-sess", "AKAv1-MD5", "SHA-256", "SHA-256-sess")
}


def _h(algorithm: str, data: bytes) -> str:
    fn = _HASHES.get(algorithm)
    if fn is not None:
        return fn(data).hexdigest()
    return hashlib.new(_hash_for(algorithm), data).hexdigest()


def supported(algorithm: str) -> bool:
    try:
        _hash_for(algorithm)
    except ValueError:
        return False
    return True


def compute_ha1(username: str, realm: str, password: str | bytes, algorithm: str = "MD5") -> str:
    """H(username:realm:password); for AKAv1-MD5 ``password`` is the RES
    (raw bytes, RFC 3310 §3.4)."""
    secret = password.encode() if isinstance(password, str) else password
    return _h(algorithm, f"{username}:{realm}:".encode() + secret)


def compute_response(
    ha1: str,
    *,
    nonce: str,
    method: str,
    uri: str,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The request-digest of RFC 2617 §3.2.2.1 (qop auth or none)."""
    if algorithm.upper().endswith("-SESS"):
        ha1 = _h(algorithm, f"{ha1}:{nonce}:{cnonce}".encode())
    ha2 = _h(algorithm, f"{method}:{uri}".encode())
    if qop:
        return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())
    return _h(algorithm, f"{ha1}:{nonce}:{ha2}".encode())


def challenge(
    *,
    realm: str,
    nonce: str,
    algorithm: str = "MD5",
    opaque: str | None = None,
    stale: bool = False,
    qop: str = "auth",
) -> AuthHeader:
    params = [("realm", realm), ("nonce", nonce)]
    if opaque is not None:
        params.append(("opaque", opaque))
    params.append(("algorithm", algorithm))
    if qop:
        params.append(("qop", qop))
    if stale:
        params.append(("stale", "TRUE"))
    return AuthHeader("Digest", tuple(params))


def answer_challenge(
    chal: AuthHeader,
    *,
    method: str,
    uri: str,
    username: str,
    password: str | bytes,
    cnonce: str | None = None,
    nc: int = 1,
) -> AuthHeader:
    """The Authorization (or Proxy-Authorization) value answering ``chal``.

    For AKAv1-MD5 pass the RES computed by the ISIM as ``password``."""
    if chal.scheme.lower() != "digest":
        raise ValueError(f"not a Digest challenge: {chal.scheme}")
    realm = chal.get("realm") or ""
    nonce = chal.get("nonce") or ""
    algorithm = chal.get("algorithm") or "MD5"
    qops = [q.strip() for q in (chal.get("qop") or "").split(",") if q.strip()]
    qop = "auth" if "auth" in qops else None
    cnonce = cnonce or os.urandom(8).hex()
    ncs = f"{nc:08x}"
    ha1 = compute_ha1(username, realm, password, algorithm)
    response = compute_response(
        ha1,
        nonce=nonce,
        method=method,
        uri=uri,
        algorithm=algorithm,
        qop=qop,
        nc=ncs if qop else None,
        cnonce=cnonce if qop else None,
    )
    params = [
        ("username", username),
        ("realm", realm),
        ("nonce", nonce),
        ("uri", uri),
        ("response", response),
        ("algorithm", algorithm),
    ]
    if qop:
        params += [("qop", qop), ("nc", ncs), ("cnonce", cnonce)]
    opaque = chal.get("opaque")
    if opaque is not None:
        params.append(("opaque", opaque))
    return AuthHeader("Digest", tuple(params))


@dataclass(frozen=True)
class Credentials:
    """The fields of a Digest Authorization header that a verifier needs."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    @classmethod
    def from_header(cls, header: AuthHeader) -> Credentials:
        """Raises ValueError naming what is missing or wrong."""
        if header.scheme.lower() != "digest":
            raise ValueError("not Digest credentials")
        params: dict[str, str] = {}  # the first of each name, as AuthHeader.get finds it
        for n, v in header.params:
            params.setdefault(n.lower(), v)
        get = params.get
        missing = [n for n in ("username", "realm", "nonce", "uri", "response") if get(n) is None]
        if missing:
            raise ValueError(f"Digest credentials lack {', '.join(missing)}")
        qop = get("qop")
        nc = get("nc")
        cnonce = get("cnonce")
        if qop is not None:
            if qop.lower() != "auth":
                raise ValueError(f"unsupported qop {qop!r}")
            if nc is None or cnonce is None:
                raise ValueError("qop without nc and cnonce")
            if len(nc) != 8 or any(c not in "0123456789abcdefABCDEF" for c in nc):
                raise ValueError("bad nc")
        return cls(
            username=get("username") or "",
            realm=get("realm") or "",
            nonce=get("nonce") or "",
            uri=get("uri") or "",
            response=get("response") or "",
            algorithm=get("algorithm") or "MD5",
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            opaque=get("opaque"),
        )


def verify_credentials(creds: Credentials, *, method: str, ha1: str) -> bool:
    """True when the response matches (constant-time comparison)."""
    if not supported(creds.algorithm):
        return False
    expected = compute_response(
        ha1,
        nonce=creds.nonce,
        method=method,
        uri=creds.uri,
        algorithm=creds.algorithm,
        qop=creds.qop,
        nc=creds.nc,
        cnonce=creds.cnonce,
    )
    return hmac.compare_digest(expected.lower(), creds.response.lower())


class NonceStatus(StrEnum):
    OK = "ok"
    STALE = "stale"  # expired: challenge again with stale=TRUE
    INVALID = "invalid"  # not ours, or tampered with
    REPLAY = "replay"  # nonce-count not increasing


class NonceBook:
    """Issues self-authenticating nonces (time, random, HMAC) and checks
    them: expiry after ``lifetime`` seconds and, with qop, a strictly
    increasing nonce-count per nonce.  Without qop a nonce is good once.
    Bounded: at most ``max_tracked`` nonces are remembered (the oldest are
    forgotten, which makes their later use a replay)."""

    def __init__(
        self, secret: bytes, *, lifetime: float = 300.0, max_tracked: int = 100_000
    ) -> None:
        self._secret = secret
        # keyed once: a copy per nonce MACs as hmac.digest(secret, body) does, in half the time
        self._keyed = hmac.new(secret, digestmod="sha256")
        self.lifetime = lifetime
        self.max_tracked = max_tracked
        self._seen: OrderedDict[str, int] = OrderedDict()

    def issue(self, now: float, extra: bytes = b"") -> str:
        """A fresh nonce; ``extra`` (e.g. AKA RAND‖AUTN) goes in front."""
        body = extra + struct.pack(">d", now) + os.urandom(8)
        mac = self._mac(body)
        nonce = base64.b64encode(body + mac).decode()
        self._seen[nonce] = 0
        self._trim()
        return nonce

    def _mac(self, body: bytes) -> bytes:
        """HMAC-SHA-256 of ``body`` under the secret, its first 16 bytes."""
        keyed = self._keyed.copy()
        keyed.update(body)
        return keyed.digest()[:16]

    def _trim(self) -> None:
        while len(self._seen) > self.max_tracked:
            self._seen.popitem(last=False)

    def check(self, nonce: str, nc: str | None, now: float) -> NonceStatus:
        try:
            raw = base64.b64decode(nonce.encode(), validate=True)
        except (ValueError, UnicodeEncodeError):
            return NonceStatus.INVALID
        if len(raw) < 32:
            return NonceStatus.INVALID
        body, mac = raw[:-16], raw[-16:]
        good = self._mac(body)
        if not hmac.compare_digest(mac, good):
            return NonceStatus.INVALID
        (issued,) = struct.unpack(">d", body[-16:-8])
        if now - issued > self.lifetime or issued - now > 60:
            self._seen.pop(nonce, None)
            return NonceStatus.STALE
        last = self._seen.get(nonce)
        if last is None:
            return NonceStatus.REPLAY
        if nc is not None and (len(nc) != 8 or any(c not in "0123456789abcdefABCDEF" for c in nc)):
            return NonceStatus.INVALID
        count = int(nc, 16) if nc is not None else -1
        if nc is None:
            del self._seen[nonce]  # single use
            return NonceStatus.OK
        if count <= last:
            return NonceStatus.REPLAY
        self._seen[nonce] = count
        return NonceStatus.OK

    def forget(self, nonce: str) -> None:
        self._seen.pop(nonce, None)


def nonce_extra(nonce: str) -> bytes:
    """The bytes put in front by :meth:`NonceBook.issue` (AKA RAND‖AUTN)."""
    raw = base64.b64decode(nonce.encode())
    return raw[:-32]


def aka_nonce_parts(nonce: str) -> tuple[bytes, bytes]:
    """(RAND, AUTN) from an AKAv1-MD5 nonce (RFC 3310 §3.2: base64 of
    RAND ‖ AUTN ‖ server data)."""
    try:
        raw = base64.b64decode(nonce.encode(), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError("AKA nonce is not base64") from exc
    if len(raw) < 32:
        raise ValueError("AKA nonce too short")
    return raw[:16], raw[16:32]
