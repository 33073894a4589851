"""Rights, license requests, licenses and the player's checks (security tests included)."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd import canonjson
from imsp2pd.drm import license as lic
from imsp2pd.drm.rights import PlayRefused, Rights, RightsError, Usage, parse_time
from imsp2pd.entitlement import b64url_decode, b64url_encode

SERVER = Ed25519PrivateKey.generate()
CONTENT_KEY = bytes(range(16))
NOW = 1_800_000_000
TOKEN = "payload.signature"


# -- rights ------------------------------------------------------------------------


def test_rights_from_offer() -> None:
    r = Rights.from_offer({"id": "o", "rights": {"plays": 3}, "devices": 2})
    assert (r.plays, r.devices, r.play_until) == (3, 2, None)
    r = Rights.from_offer({"rights": {"play_until": "2027-01-01T00:00:00Z"}})
    assert r.play_until == 1798761600 and r.devices == 1
    assert r.to_json() == {"play_until": 1798761600}


@pytest.mark.parametrize(
    "offer",
    [
        {},
        {"rights": {}},
        {"rights": {"plays": 0}},
        {"rights": {"plays": True}},
        {"rights": {"plays": "3"}},
        {"rights": {"play_seconds_from_first_use": -5}},
        {"rights": {"play_until": "tomorrow"}},
        {"rights": {"play_until": "2027-01-01"}},
        {"rights": {"play_until": "2027-01-01T00:00:00"}},  # no zone
        {"rights": {"forever": 1}},
        {"rights": {"plays": 1}, "devices": 0},
        {"rights": {"plays": 1}, "devices": 1000},
        {"rights": [1]},
        [],
    ],
)
def test_bad_rights(offer) -> None:
    with pytest.raises(RightsError):
        Rights.from_offer(offer)


def test_play_window_and_counts() -> None:
    r = Rights(play_seconds_from_first_use=100, plays=2)
    assert r.not_after(NOW) == NOW + 100
    assert not r.expired(NOW, NOW + 100)
    assert r.expired(NOW, NOW + 101)
    u = Usage().consume(r, r.not_after(NOW), NOW)
    u = u.consume(r, r.not_after(NOW), NOW + 50)
    with pytest.raises(PlayRefused) as e:
        u.consume(r, r.not_after(NOW), NOW + 60)
    assert e.value.reason == "plays-exhausted"
    with pytest.raises(PlayRefused) as e:
        Usage().check(r, r.not_after(NOW), NOW + 101)
    assert e.value.reason == "expired"
    both = Rights(play_seconds_from_first_use=100, play_until=NOW + 10)
    assert both.not_after(NOW) == NOW + 10
    assert Rights(plays=1).not_after(NOW) is None


def test_parse_time_forms() -> None:
    assert parse_time(5) == 5
    assert parse_time("1970-01-01T00:01:00+00:00") == 60
    with pytest.raises(RightsError):
        parse_time(-1)
    with pytest.raises(RightsError):
        parse_time(1.5)


# -- requests ----------------------------------------------------------------------------


def test_request_round_trip() -> None:
    dev = lic.DeviceKeys.generate()
    nonce = os.urandom(16)
    req = lic.open_request(lic.make_request(dev, TOKEN, nonce))
    assert req.token == TOKEN
    assert req.ed25519 == dev.ed25519_public and req.x25519 == dev.x25519_public
    assert req.fingerprint == dev.fingerprint
    assert b64url_decode(req.nonce) == nonce


def _payload(blob: str) -> dict:
    return canonjson.loads(b64url_decode(blob.split(".")[0]))


def _resign(payload: dict, key: Ed25519PrivateKey) -> str:
    return lic.sign_blob(key, payload)


def test_token_without_the_device_signature_gets_nothing() -> None:
    dev = lic.DeviceKeys.generate()
    blob = lic.make_request(dev, TOKEN, os.urandom(16))
    payload = _payload(blob)
    # an unsigned request, a request signed by another key, a swapped device key
    with pytest.raises(lic.LicenseError):
        lic.open_request(blob.split(".")[0] + ".")
    with pytest.raises(lic.TamperedLicense):
        lic.open_request(_resign(payload, Ed25519PrivateKey.generate()))
    other = lic.DeviceKeys.generate()
    payload["device"]["x25519"] = b64url_encode(other.x25519_public)
    head = b64url_encode(canonjson.dumps(payload))
    with pytest.raises(lic.TamperedLicense):
        lic.open_request(head + "." + blob.split(".")[1])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=100), st.integers(), st.none()))
def test_open_request_fuzz(blob) -> None:
    try:
        lic.open_request(blob)
    except lic.LicenseError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["kind", "token", "device", "nonce", "x"]), st.text()))
def test_open_request_fuzz_signed_payloads(payload) -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(lic.LicenseError):
        lic.open_request(lic.sign_blob(key, payload))


# -- licenses ----------------------------------------------------------------------------


def issue(dev: lic.DeviceKeys, nonce: bytes, rights: Rights | None = None, **kw) -> str:
    req = lic.open_request(lic.make_request(dev, TOKEN, nonce))
    return lic.issue_license(
        SERVER,
        req,
        license_id=kw.get("license_id", "L1"),
        doi="10.5555/film",
        key_id="k1",
        impu="sip:alice@ims.example.org",
        rights=rights or Rights(play_seconds_from_first_use=3600, plays=2),
        first_use=kw.get("first_use", NOW),
        content_key=CONTENT_KEY,
        server_time=kw.get("server_time", NOW),
    )


def test_license_unwraps_only_on_its_device() -> None:
    dev, other = lic.DeviceKeys.generate(), lic.DeviceKeys.generate()
    blob = issue(dev, os.urandom(16))
    parsed = lic.License.parse(blob, SERVER.public_key())
    assert parsed.unwrap(dev) == CONTENT_KEY
    assert parsed.device == dev.fingerprint
    assert parsed.not_after == NOW + 3600
    with pytest.raises(lic.WrongDevice):
        parsed.unwrap(other)


def test_another_device_cannot_open_even_with_a_forged_fingerprint() -> None:
    """A device that rewrites the fingerprint (which breaks the signature anyway)
    still cannot unwrap: the key was wrapped to the first device's X25519 key."""
    dev, other = lic.DeviceKeys.generate(), lic.DeviceKeys.generate()
    parsed = lic.License.parse(issue(dev, os.urandom(16)), SERVER.public_key())
    forged = lic.License(**{**parsed.__dict__, "device": other.fingerprint})
    with pytest.raises(lic.WrongDevice):
        forged.unwrap(other)


def test_wrapped_key_is_fresh_every_time() -> None:
    dev = lic.DeviceKeys.generate()
    a = lic.License.parse(issue(dev, os.urandom(16)), SERVER.public_key())
    b = lic.License.parse(issue(dev, os.urandom(16)), SERVER.public_key())
    assert a.epk != b.epk and a.wrapped_key != b.wrapped_key
    assert CONTENT_KEY not in base64.urlsafe_b64decode(a.blob.split(".")[0] + "==")


@pytest.mark.parametrize("member", ["doi", "impu", "rights", "not_after", "server_time", "key"])
def test_tampered_license_refused(member: str) -> None:
    dev = lic.DeviceKeys.generate()
    blob = issue(dev, os.urandom(16))
    payload = _payload(blob)
    payload[member] = {"rights": {"plays": 99}, "key": {"alg": "x"}}.get(member, 12345)
    head = b64url_encode(canonjson.dumps(payload))
    with pytest.raises(lic.TamperedLicense):
        lic.License.parse(head + "." + blob.split(".")[1], SERVER.public_key())


def test_license_signed_by_someone_else_refused() -> None:
    dev = lic.DeviceKeys.generate()
    payload = _payload(issue(dev, os.urandom(16)))
    with pytest.raises(lic.TamperedLicense):
        lic.License.parse(_resign(payload, Ed25519PrivateKey.generate()), SERVER.public_key())


def test_flipped_signature_bit_refused() -> None:
    blob = issue(lic.DeviceKeys.generate(), os.urandom(16))
    head, sig = blob.split(".")
    raw = bytearray(b64url_decode(sig))
    raw[0] ^= 1
    with pytest.raises(lic.TamperedLicense):
        lic.License.parse(head + "." + b64url_encode(bytes(raw)), SERVER.public_key())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_license_parse_fuzz(blob: str) -> None:
    try:
        lic.License.parse(blob, SERVER.public_key())
    except lic.LicenseError:
        pass


def test_wrongly_shaped_but_signed_license_is_malformed() -> None:
    blob = issue(lic.DeviceKeys.generate(), os.urandom(16))
    payload = _payload(blob)
    payload["not_after"] = NOW + 10**6  # signed, but does not follow from the rights
    with pytest.raises(lic.BadLicense):
        lic.License.parse(_resign(payload, SERVER), SERVER.public_key())
    del payload["nonce"]
    with pytest.raises(lic.BadLicense):
        lic.License.parse(_resign(payload, SERVER), SERVER.public_key())


# -- the player's guard -----------------------------------------------------------------------


@pytest.fixture
def device() -> lic.DeviceKeys:
    return lic.DeviceKeys.generate()


@pytest.fixture
def guard(device) -> lic.LicenseGuard:
    return lic.LicenseGuard(SERVER.public_key(), device)


def test_accept_then_play_counts(guard, device) -> None:
    nonce = os.urandom(16)
    blob = issue(device, nonce)
    parsed, key, state = guard.accept(blob, lic.PlayerState(), NOW + 1, nonce)
    assert key == CONTENT_KEY and state.high_water == NOW + 1
    _, key, state = guard.authorize_play(blob, state, NOW + 2)
    _, key, state = guard.authorize_play(blob, state, NOW + 3)
    assert state.seen[parsed.license_id] == (NOW, 2)
    with pytest.raises(lic.PlaysExhausted):
        guard.authorize_play(blob, state, NOW + 4)


def test_replayed_answer_refused(guard, device) -> None:
    old = issue(device, os.urandom(16))
    with pytest.raises(lic.ReplayedLicense):
        guard.accept(old, lic.PlayerState(), NOW, os.urandom(16))


def test_older_copy_of_a_license_refused_after_a_newer_one(guard, device) -> None:
    n1, n2 = os.urandom(16), os.urandom(16)
    first = issue(device, n1, server_time=NOW)
    second = issue(device, n2, server_time=NOW + 100)
    _, _, state = guard.accept(second, lic.PlayerState(), NOW + 100, n2)
    with pytest.raises(lic.ReplayedLicense):
        guard.authorize_play(first, state, NOW + 200)


def test_expired_license_refused(guard, device) -> None:
    nonce = os.urandom(16)
    blob = issue(device, nonce)
    _, _, state = guard.accept(blob, lic.PlayerState(), NOW, nonce)
    with pytest.raises(lic.LicenseExpired):
        guard.authorize_play(blob, state, NOW + 3601)


def test_rolled_back_clock_is_caught(guard, device) -> None:
    nonce = os.urandom(16)
    blob = issue(device, nonce)
    _, _, state = guard.accept(blob, lic.PlayerState(), NOW, nonce)
    _, _, state = guard.authorize_play(blob, state, NOW + 3000)  # time moves on
    with pytest.raises(lic.ClockRolledBack):
        guard.authorize_play(blob, state, NOW + 10)  # clock set back to "before expiry"
    # after expiry, rolling the clock back cannot revive the license
    state2 = lic.PlayerState(high_water=NOW + 4000, seen=state.seen)
    with pytest.raises(lic.ClockRolledBack):
        guard.authorize_play(blob, state2, NOW + 100)
    with pytest.raises(lic.LicenseExpired):
        guard.authorize_play(blob, state2, NOW + 4000 - 200)  # within tolerance: HWM used


def test_clock_behind_the_server_is_caught(guard, device) -> None:
    nonce = os.urandom(16)
    blob = issue(device, nonce, server_time=NOW)
    with pytest.raises(lic.ClockRolledBack):
        guard.accept(blob, lic.PlayerState(), NOW - 10_000, nonce)


def test_license_for_another_device_refused_by_guard(device) -> None:
    other_guard = lic.LicenseGuard(SERVER.public_key(), lic.DeviceKeys.generate())
    nonce = os.urandom(16)
    with pytest.raises(lic.WrongDevice):
        other_guard.accept(issue(device, nonce), lic.PlayerState(), NOW, nonce)


def test_player_state_json_round_trip() -> None:
    state = lic.PlayerState(high_water=5, seen={"a": (1, 2)})
    assert lic.PlayerState.from_json(canonjson.loads(canonjson.dumps(state.to_json()))) == state
    with pytest.raises(lic.BadLicense):
        lic.PlayerState.from_json({"seen": 1})


def test_device_keys_raw_round_trip() -> None:
    dev = lic.DeviceKeys.generate()
    again = lic.DeviceKeys.from_raw(*dev.private_raw())
    assert again.fingerprint == dev.fingerprint
    assert again.x25519_public == dev.x25519_public
    assert len(dev.fingerprint) == 64


def test_observe_records_time_and_catches_rollback() -> None:
    state = lic.observe(lic.PlayerState(), NOW)
    assert state.high_water == NOW
    assert lic.observe(state, NOW - 100).high_water == NOW  # within tolerance: kept
    with pytest.raises(lic.ClockRolledBack):
        lic.observe(state, NOW - lic.CLOCK_TOLERANCE - 1)
    assert lic.observe(state, NOW + 5).high_water == NOW + 5
