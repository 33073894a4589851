"""Entitlement tokens: issue, verify, every refusal reason, the cache, key files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd import canonjson
from imsp2pd.entitlement import (
    AS_KEY_FILENAME,
    BadSignature,
    EntitlementError,
    Issuer,
    KeyConfigError,
    LicenseToken,
    MalformedToken,
    PublisherToken,
    Reason,
    TokenExpired,
    TrackerRole,
    TrackerToken,
    Verifier,
    WrongKind,
    WrongSubject,
    b64url_decode,
    b64url_encode,
    load_or_create_private_key,
    load_public_key,
    public_key_to_config,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
IH = bytes.fromhex("0123456789abcdef0123456789abcdef01234567")
ALICE = "sip:alice@ims.example.org"
NOW = 1_800_000_000


def _ids() -> object:
    n = iter(range(1_000_000))
    return lambda: f"id{next(n)}"


@pytest.fixture
def issuer() -> Issuer:
    return Issuer(KEY, token_id_factory=_ids())  # type: ignore[arg-type]


@pytest.fixture
def verifier() -> Verifier:
    return Verifier(KEY.public_key())


def _forge(claims: dict[str, object], key: Ed25519PrivateKey = KEY) -> str:
    payload = canonjson.dumps(claims)
    return b64url_encode(payload) + "." + b64url_encode(key.sign(payload))


def test_tracker_token_round_trip(issuer: Issuer, verifier: Verifier) -> None:
    token = issuer.issue_tracker(ALICE, IH, "consumer", NOW + 60, token_id="t1")
    got = verifier.verify(token, NOW)
    assert got == TrackerToken(ALICE, IH, TrackerRole.CONSUMER, NOW + 60, "t1")
    assert got.info_hash_hex == IH.hex()
    assert verifier.verify_tracker(token, NOW, IH) == got
    # The wire form is exactly what DESIGN.md §3 says.
    payload, sig = token.split(".")
    assert canonjson.loads(b64url_decode(payload)) == {
        "kind": "tracker",
        "impu": ALICE,
        "info_hash": IH.hex(),
        "role": "consumer",
        "not_after": NOW + 60,
        "token_id": "t1",
    }
    assert b64url_decode(payload) == (
        b'{"impu":"sip:alice@ims.example.org","info_hash":"0123456789abcdef0123456789abcdef01234567",'
        b'"kind":"tracker","not_after":1800000060,"role":"consumer","token_id":"t1"}'
    )
    KEY.public_key().verify(b64url_decode(sig), b64url_decode(payload))
    assert "=" not in token


def test_license_and_publisher_tokens(issuer: Issuer, verifier: Verifier) -> None:
    lic = issuer.issue_license(ALICE, "10.5555/imsp2p.1", "rent-48h", NOW + 5)
    pub = issuer.issue_publisher("sip:carol@ims.example.org", NOW + 5)
    got_lic = verifier.verify_license(lic, NOW)
    assert got_lic == LicenseToken(ALICE, "10.5555/imsp2p.1", "rent-48h", NOW + 5, got_lic.token_id)
    got_pub = verifier.verify_publisher(pub, NOW)
    assert got_pub == PublisherToken("sip:carol@ims.example.org", NOW + 5, got_pub.token_id)
    assert got_lic.token_id != got_pub.token_id


def test_v2_info_hash(issuer: Issuer, verifier: Verifier) -> None:
    ih2 = bytes(range(32))
    token = issuer.issue_tracker(ALICE, ih2, TrackerRole.SEEDER, NOW)
    assert verifier.verify_tracker(token, NOW, ih2).info_hash == ih2


def test_default_token_ids_are_random() -> None:
    issuer = Issuer(KEY)
    verifier = Verifier(KEY.public_key())
    a = verifier.verify(issuer.issue_publisher(ALICE, NOW), NOW)
    b = verifier.verify(issuer.issue_publisher(ALICE, NOW), NOW)
    assert a.token_id != b.token_id and len(a.token_id) >= 16


def test_expiry_is_inclusive_and_checked_on_cache_hits(issuer: Issuer, verifier: Verifier) -> None:
    token = issuer.issue_tracker(ALICE, IH, "provider", NOW)
    assert verifier.verify(token, NOW).not_after == NOW
    with pytest.raises(TokenExpired) as info:
        verifier.verify(token, NOW + 0.5)
    assert info.value.reason is Reason.EXPIRED
    # A fresh verifier (no cache) says the same.
    with pytest.raises(TokenExpired):
        Verifier(KEY.public_key()).verify(token, NOW + 1)


def test_wrong_kind_and_subject(issuer: Issuer, verifier: Verifier) -> None:
    lic = issuer.issue_license(ALICE, "10.1/x", "o", NOW + 5)
    with pytest.raises(WrongKind) as info:
        verifier.verify_tracker(lic, NOW)
    assert info.value.reason is Reason.WRONG_KIND
    assert "tracker" in str(info.value) and "license" in str(info.value)
    with pytest.raises(WrongKind):
        verifier.verify_publisher(lic, NOW)
    tr = issuer.issue_tracker(ALICE, IH, "consumer", NOW + 5)
    with pytest.raises(WrongKind):
        verifier.verify_license(tr, NOW)
    with pytest.raises(WrongSubject) as info2:
        verifier.verify_tracker(tr, NOW, b"\x00" * 20)
    assert info2.value.reason is Reason.WRONG_SUBJECT


def test_bad_signature(issuer: Issuer, verifier: Verifier) -> None:
    other = Issuer(OTHER_KEY).issue_tracker(ALICE, IH, "consumer", NOW + 5)
    with pytest.raises(BadSignature) as info:
        verifier.verify(other, NOW)
    assert info.value.reason is Reason.BAD_SIGNATURE
    good = issuer.issue_tracker(ALICE, IH, "consumer", NOW + 5)
    payload, sig = good.split(".")
    raw = bytearray(b64url_decode(sig))
    raw[0] ^= 1
    with pytest.raises(BadSignature):
        verifier.verify(payload + "." + b64url_encode(bytes(raw)), NOW)
    with pytest.raises(BadSignature):
        verifier.verify(payload + "." + b64url_encode(b"\x00" * 10), NOW)


def test_cache_hit_requires_identical_token(issuer: Issuer, verifier: Verifier) -> None:
    good = issuer.issue_tracker(ALICE, IH, "consumer", NOW + 5, token_id="same")
    verifier.verify(good, NOW)
    verifier.verify(good, NOW)
    assert (verifier.hits, verifier.misses) == (1, 1)
    # Same token id, different (upgraded) claims, signed by someone else: refused.
    forged = _forge(
        {
            "kind": "tracker",
            "impu": ALICE,
            "info_hash": IH.hex(),
            "role": "seeder",
            "not_after": NOW + 5,
            "token_id": "same",
        },
        OTHER_KEY,
    )
    with pytest.raises(BadSignature):
        verifier.verify(forged, NOW)


def test_cache_is_bounded() -> None:
    issuer = Issuer(KEY)
    verifier = Verifier(KEY.public_key(), cache_size=3)
    tokens = [issuer.issue_publisher(ALICE, NOW + 5) for _ in range(5)]
    for t in tokens:
        verifier.verify(t, NOW)
    assert len(verifier._cache) == 3
    verifier.verify(tokens[-1], NOW)
    verifier.verify(tokens[0], NOW)  # evicted: verified again
    assert (verifier.hits, verifier.misses) == (1, 6)
    uncached = Verifier(KEY.public_key(), cache_size=0)
    uncached.verify(tokens[0], NOW)
    uncached.verify(tokens[0], NOW)
    assert uncached.hits == 0


BASE = {
    "kind": "tracker",
    "impu": ALICE,
    "info_hash": IH.hex(),
    "role": "consumer",
    "not_after": NOW + 5,
    "token_id": "x",
}


@pytest.mark.parametrize(
    "claims",
    [
        {**BASE, "kind": "bogus"},
        {**BASE, "role": "publisher"},
        {**BASE, "role": "admin"},
        {**BASE, "info_hash": IH.hex().upper()},
        {**BASE, "info_hash": IH.hex()[:-2]},
        {**BASE, "not_after": 1.5},
        {**BASE, "not_after": True},
        {**BASE, "not_after": -1},
        {**BASE, "token_id": ""},
        {**BASE, "token_id": "a b"},
        {**BASE, "token_id": "x" * 65},
        {**BASE, "impu": "alice"},
        {**BASE, "impu": "sip:alice bob"},
        {**BASE, "impu": 7},
        {**BASE, "extra": 1},
        {k: v for k, v in BASE.items() if k != "role"},
        {
            "kind": "license",
            "impu": ALICE,
            "doi": "",
            "offer": "o",
            "not_after": 1,
            "token_id": "x",
        },
        {"kind": "publisher", "impu": ALICE, "role": "consumer", "not_after": 1, "token_id": "x"},
    ],
)
def test_malformed_claims_even_when_signed(claims: dict[str, object], verifier: Verifier) -> None:
    with pytest.raises(MalformedToken) as info:
        verifier.verify(_forge(claims), NOW)
    assert info.value.reason is Reason.MALFORMED


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b.c",
        "!!!.abc",
        "abc=.abc",
        b64url_encode(b"[1]") + "." + b64url_encode(b"x" * 64),
        b64url_encode(b'{"kind": "tracker"}') + "." + b64url_encode(b"x" * 64),
        b64url_encode(b"\xff\xfe") + "." + b64url_encode(b"x" * 64),
        "A" * 5000 + "." + "A",
    ],
)
def test_malformed_strings(token: str, verifier: Verifier) -> None:
    with pytest.raises(MalformedToken):
        verifier.verify(token, NOW)


def test_non_canonical_payload_is_refused(verifier: Verifier) -> None:
    payload = b'{"token_id":"x","kind":"tracker"}'
    with pytest.raises(MalformedToken, match="canonical"):
        verifier.verify(b64url_encode(payload) + "." + b64url_encode(KEY.sign(payload)), NOW)


def test_issuer_refuses_bad_claims(issuer: Issuer) -> None:
    with pytest.raises(ValueError):
        issuer.issue_tracker(ALICE, b"short", "consumer", NOW)
    with pytest.raises(ValueError):
        issuer.issue_tracker(ALICE, IH, "boss", NOW)
    with pytest.raises(ValueError):
        issuer.issue_license("alice", "10.1/x", "o", NOW)
    with pytest.raises(ValueError):
        issuer.issue_publisher(ALICE, NOW, token_id="bad id")


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_verify_never_raises_anything_else(token: str) -> None:
    try:
        Verifier(KEY.public_key()).verify(token, NOW)
    except EntitlementError:
        pass


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_signed_garbage_payloads_are_malformed(payload: bytes) -> None:
    token = b64url_encode(payload) + "." + b64url_encode(KEY.sign(payload))
    with pytest.raises(EntitlementError):
        Verifier(KEY.public_key()).verify(token, NOW)


@given(st.binary(max_size=100))
def test_b64url_round_trip(data: bytes) -> None:
    assert b64url_decode(b64url_encode(data)) == data


def test_b64url_refuses_non_canonical() -> None:
    with pytest.raises(ValueError):
        b64url_decode("AB")  # trailing bits set
    with pytest.raises(ValueError):
        b64url_decode("A")


# -- key files -------------------------------------------------------------


def test_key_made_at_first_start_then_loaded(tmp_path: Path) -> None:
    keys = tmp_path / "var" / "keys"
    key1 = load_or_create_private_key(keys)
    path = keys / AS_KEY_FILENAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    key2 = load_or_create_private_key(keys)
    raw = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key1.public_key().public_bytes(*raw) == key2.public_key().public_bytes(*raw)
    other = load_or_create_private_key(keys, "drm_ed25519.pem")
    assert other.public_key().public_bytes(*raw) != key1.public_key().public_bytes(*raw)


def test_bad_key_files(tmp_path: Path) -> None:
    (tmp_path / AS_KEY_FILENAME).write_bytes(b"junk")
    with pytest.raises(KeyConfigError, match="not an unencrypted PEM"):
        load_or_create_private_key(tmp_path)
    x = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "x.pem").write_bytes(x)
    with pytest.raises(KeyConfigError, match="not an Ed25519"):
        load_or_create_private_key(tmp_path, "x.pem")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_key_file(tmp_path: Path) -> None:
    load_or_create_private_key(tmp_path)
    (tmp_path / AS_KEY_FILENAME).chmod(0)
    with pytest.raises(KeyConfigError, match="cannot read"):
        load_or_create_private_key(tmp_path)


def test_public_key_config_forms(tmp_path: Path) -> None:
    priv = load_or_create_private_key(tmp_path)
    pub = priv.public_key()
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "pub.pem").write_bytes(pem)
    forms = [
        public_key_to_config(pub),
        raw.hex(),
        raw.hex().upper(),
        pem.decode(),
        str(tmp_path / "pub.pem"),
        str(tmp_path / AS_KEY_FILENAME),  # a private key file: its public half
        "  " + public_key_to_config(pub) + "\n",
    ]
    for form in forms:
        got = load_public_key(form)
        assert got.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw
    # And tokens verify with it.
    token = Issuer(priv).issue_publisher(ALICE, NOW)
    assert Verifier(load_public_key(public_key_to_config(pub))).verify(token, NOW).impu == ALICE


@pytest.mark.parametrize(
    "value", ["", "   ", "nope", "/no/such/file.pem", "-----BEGIN PUBLIC KEY-----\nxx\n"]
)
def test_public_key_config_errors(value: str) -> None:
    with pytest.raises(KeyConfigError):
        load_public_key(value)


def test_public_key_config_wrong_algorithm(tmp_path: Path) -> None:
    x = (
        X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyConfigError, match="not an Ed25519"):
        load_public_key(x.decode())


def test_forget_drops_a_cached_token(issuer: Issuer, verifier: Verifier) -> None:
    token = issuer.issue_tracker(ALICE, IH, "consumer", NOW + 5, token_id="gone")
    verifier.verify(token, NOW)
    verifier.forget("gone")
    verifier.forget("never-seen")
    verifier.verify(token, NOW)
    assert (verifier.hits, verifier.misses) == (0, 2)


def test_reissued_token_id_replaces_the_cache_entry(issuer: Issuer, verifier: Verifier) -> None:
    first = issuer.issue_tracker(ALICE, IH, "consumer", NOW + 5, token_id="same")
    second = issuer.issue_tracker(ALICE, IH, "consumer", NOW + 9, token_id="same")
    verifier.verify(first, NOW)
    assert verifier.verify(second, NOW).not_after == NOW + 9
    assert verifier.verify(first, NOW).not_after == NOW + 5  # verified again, not confused
    assert len(verifier._cache) == 1 and len(verifier._ids) == 1
