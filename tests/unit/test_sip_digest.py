"""Digest authentication: RFC 2617, RFC 7616 vectors, RFC 3310 AKA and the
registrar's nonce book."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imsp2pd.sip import digest
from imsp2pd.sip.digest import (
    Credentials,
    NonceBook,
    NonceStatus,
    aka_nonce_parts,
    answer_challenge,
    challenge,
    compute_ha1,
    compute_response,
    nonce_extra,
    verify_credentials,
)
from imsp2pd.sip.headers import AuthHeader, parse_auth


def test_rfc2617_md5_vector() -> None:
    ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    resp = compute_response(
        ha1,
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert resp == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    ha1 = compute_ha1("Mufasa", "http-auth@example.org", "Circle of Life", algorithm)
    resp = compute_response(
        ha1,
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        method="GET",
        uri="/dir/index.html",
        algorithm=algorithm,
        qop="auth",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert resp == expected


def test_challenge_answer_verify_round_trip_through_headers() -> None:
    chal = challenge(realm="ims.example.org", nonce="abc", opaque="op")
    parsed = parse_auth(str(chal))
    assert parsed == chal
    auth = answer_challenge(
        parsed,
        method="REGISTER",
        uri="sip:ims.example.org",
        username="alice@ims.example.org",
        password="alice-pass",
        cnonce="cn",
    )
    creds = Credentials.from_header(parse_auth(str(auth)))
    assert creds.qop == "auth" and creds.nc == "00000001" and creds.opaque == "op"
    ha1 = compute_ha1("alice@ims.example.org", "ims.example.org", "alice-pass")
    assert verify_credentials(creds, method="REGISTER", ha1=ha1)
    assert not verify_credentials(creds, method="MESSAGE", ha1=ha1)
    wrong = compute_ha1("alice@ims.example.org", "ims.example.org", "wrong")
    assert not verify_credentials(creds, method="REGISTER", ha1=wrong)


def test_no_qop_and_sess_and_unknown_algorithm() -> None:
    chal = AuthHeader("Digest", (("realm", "r"), ("nonce", "n"), ("algorithm", "MD5-sess")))
    auth = answer_challenge(chal, method="M", uri="u", username="a", password="p", cnonce="c")
    creds = Credentials.from_header(auth)
    assert creds.qop is None
    assert verify_credentials(creds, method="M", ha1=compute_ha1("a", "r", "p"))
    bogus = Credentials(
        username="a", realm="r", nonce="n", uri="u", response="x", algorithm="ROT13"
    )
    assert not verify_credentials(bogus, method="M", ha1="00")
    with pytest.raises(ValueError):
        answer_challenge(AuthHeader("Basic", ()), method="M", uri="u", username="a", password="p")


@pytest.mark.parametrize(
    "header",
    [
        'Basic realm="x"',
        'Digest realm="r", nonce="n", uri="u", response="x"',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth-int, nc=00000001, cnonce="c"',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth, nc=zz, cnonce="c"',
    ],
)
def test_bad_credentials_are_value_errors(header: str) -> None:
    with pytest.raises(ValueError):
        Credentials.from_header(parse_auth(header))


def test_aka_v1_md5_password_is_res() -> None:
    rand, autn = bytes(range(16)), bytes(range(16, 32))
    book = NonceBook(b"k" * 32)
    nonce = book.issue(0.0, extra=rand + autn)
    assert aka_nonce_parts(nonce) == (rand, autn) and nonce_extra(nonce) == rand + autn
    res = bytes.fromhex("a54211d5e3ba50bf")
    chal = challenge(realm="ims.example.org", nonce=nonce, algorithm="AKAv1-MD5")
    auth = answer_challenge(
        chal,
        method="REGISTER",
        uri="sip:ims.example.org",
        username="alice@ims.example.org",
        password=res,
    )
    creds = Credentials.from_header(auth)
    xres_ha1 = compute_ha1("alice@ims.example.org", "ims.example.org", res, "AKAv1-MD5")
    assert verify_credentials(creds, method="REGISTER", ha1=xres_ha1)
    assert book.check(creds.nonce, creds.nc, 1.0) is NonceStatus.OK
    with pytest.raises(ValueError):
        aka_nonce_parts("!!notbase64")
    with pytest.raises(ValueError):
        aka_nonce_parts(base64.b64encode(b"short").decode())


def test_nonce_book_expiry_replay_and_forgery() -> None:
    book = NonceBook(b"s" * 32, lifetime=30.0, max_tracked=2)
    n1 = book.issue(100.0)
    assert book.check(n1, "00000001", 101.0) is NonceStatus.OK
    assert book.check(n1, "00000001", 102.0) is NonceStatus.REPLAY
    assert book.check(n1, "00000003", 103.0) is NonceStatus.OK
    assert book.check(n1, "00000002", 104.0) is NonceStatus.REPLAY
    assert book.check(n1, "00000004", 131.0) is NonceStatus.STALE
    assert NonceBook(b"other" * 8).check(book.issue(0.0), "00000001", 0.0) is NonceStatus.INVALID
    assert book.check("not base64!", "00000001", 0.0) is NonceStatus.INVALID
    # without qop a nonce is good once
    n2 = book.issue(200.0)
    assert book.check(n2, None, 200.0) is NonceStatus.OK
    assert book.check(n2, None, 200.0) is NonceStatus.REPLAY
    # bounded memory: the oldest nonces are forgotten
    old = book.issue(300.0)
    book.issue(300.0)
    book.issue(300.0)
    assert book.check(old, "00000001", 300.0) is NonceStatus.REPLAY


@given(st.text(max_size=80), st.one_of(st.none(), st.text(max_size=10)))
def test_nonce_book_check_never_raises(nonce: str, nc: str | None) -> None:
    book = NonceBook(b"x" * 32)
    assert book.check(nonce, nc, 0.0) in (NonceStatus.INVALID, NonceStatus.REPLAY)
    good = book.issue(0.0)
    assert book.check(good, nc, 0.0) in (NonceStatus.OK, NonceStatus.INVALID)


# The fast paths against the readings they replaced -----------------------------------

_NAMES = ["username", "USERNAME", "realm", "nonce", "uri", "response", "algorithm", "qop"]
_NAMES += ["nc", "cnonce", "opaque", "Nonce"]


def _careful_from_header(header: AuthHeader) -> digest.Credentials:
    """Credentials.from_header as it was: AuthHeader.get per field."""
    if header.scheme.lower() != "digest":
        raise ValueError("not Digest credentials")
    missing = [
        n for n in ("username", "realm", "nonce", "uri", "response") if header.get(n) is None
    ]
    if missing:
        raise ValueError(f"Digest credentials lack {', '.join(missing)}")
    qop, nc, cnonce = header.get("qop"), header.get("nc"), header.get("cnonce")
    if qop is not None:
        if qop.lower() != "auth":
            raise ValueError(f"unsupported qop {qop!r}")
        if nc is None or cnonce is None:
            raise ValueError("qop without nc and cnonce")
        if len(nc) != 8 or any(c not in "0123456789abcdefABCDEF" for c in nc):
            raise ValueError("bad nc")
    return digest.Credentials(
        username=header.get("username") or "",
        realm=header.get("realm") or "",
        nonce=header.get("nonce") or "",
        uri=header.get("uri") or "",
        response=header.get("response") or "",
        algorithm=header.get("algorithm") or "MD5",
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        opaque=header.get("opaque"),
    )


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ValueError as exc:
        return str(exc)


@given(
    scheme=st.sampled_from(["Digest", "digest", "Basic"]),
    params=st.lists(
        st.tuples(
            st.sampled_from(_NAMES),
            st.sampled_from(["", "auth", "auth-int", "00000001", "x", "MD5", "0000000g"]),
        ),
        max_size=14,
    ),
)
def test_from_header_reads_as_get_per_field(scheme: str, params: list[tuple[str, str]]) -> None:
    header = AuthHeader(scheme, tuple(params))
    assert _outcome(digest.Credentials.from_header, header) == _outcome(
        _careful_from_header, header
    )


@given(
    algorithm=st.sampled_from(
        ["MD5", "md5", "MD5-sess", "MD5-SESS", "AKAv1-MD5", "SHA-256", "sha-256-sess", "SHA-1"]
    ),
    data=st.binary(max_size=40),
)
def test_the_hash_of_each_algorithm_name_is_hashlib_new(algorithm: str, data: bytes) -> None:
    try:
        expected = hashlib.new(digest._hash_for(algorithm), data).hexdigest()
    except ValueError:
        with pytest.raises(ValueError):
            digest._h(algorithm, data)
        return
    assert digest._h(algorithm, data) == expected


def test_nonce_mac_is_hmac_sha256() -> None:
    book = digest.NonceBook(b"secret" * 4)
    nonce = book.issue(1000.0, extra=b"r" * 32)
    raw = base64.b64decode(nonce)
    body, mac = raw[:-16], raw[-16:]
    assert mac == hmac.new(b"secret" * 4, body, hashlib.sha256).digest()[:16]
    assert book.check(nonce, "00000001", 1001.0) is digest.NonceStatus.OK
