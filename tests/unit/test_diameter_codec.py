"""The Diameter codec: AVP data types, messages, framing, total decoding, answers."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imsp2pd.diameter.avp import Avp, AvpType, decode_avps, encode_value
from imsp2pd.diameter.codes import (
    Application,
    AvpCode,
    Command,
    CxResult,
    Flag,
    ResultCode,
    TgppAvp,
    Vendor,
)
from imsp2pd.diameter.dictionary import AvpDef, default_dictionary
from imsp2pd.diameter.errors import DecodeError, DiameterError, EncodeError, FramingError
from imsp2pd.diameter.message import (
    Framer,
    Message,
    answer,
    decode_message,
    error_answer,
    request,
    session_id_of,
)

D = default_dictionary()


def cer(*extra: Avp) -> Message:
    return request(
        Command.CAPABILITIES_EXCHANGE,
        Application.COMMON,
        [
            D.make(AvpCode.ORIGIN_HOST, "hss.ims.example.org"),
            D.make(AvpCode.ORIGIN_REALM, "ims.example.org"),
            D.make(AvpCode.HOST_IP_ADDRESS, IPv4Address("127.0.0.1")),
            D.make(AvpCode.VENDOR_ID, 0),
            D.make(AvpCode.PRODUCT_NAME, "imsp2pd"),
            *extra,
        ],
        proxiable=False,
        hop_by_hop=0x11223344,
        end_to_end=0x55667788,
    )


def raw_avp(
    code: int, flags: int, payload: bytes, vendor: int | None = None, length: int | None = None
) -> bytes:
    header_len = 12 if vendor is not None else 8
    if length is None:
        length = header_len + len(payload)
    out = struct.pack("!II", code, (flags << 24) | length)
    if vendor is not None:
        out += struct.pack("!I", vendor)
    return out + payload + b"\0" * (-len(payload) % 4)


def raw_message(code: int, flags: int, body: bytes, app: int = 0) -> bytes:
    length = 20 + len(body)
    return struct.pack("!IIIII", (1 << 24) | length, (flags << 24) | code, app, 1, 2) + body


# Exact wire format --------------------------------------------------------------


def test_avp_wire_format_and_padding() -> None:
    avp = D.make(AvpCode.ORIGIN_HOST, "a.b")
    # code 264, flags M, length 8 + 3 = 11, then 1 byte of padding
    assert avp.encode() == bytes.fromhex("00000108 4000000b 612e6200".replace(" ", ""))


def test_vendor_avp_wire_format() -> None:
    avp = D.make(TgppAvp.PUBLIC_IDENTITY, "sip:a")
    assert avp.vendor == Vendor.TGPP
    wire = avp.encode()
    assert wire[:4] == (601).to_bytes(4, "big")
    assert wire[4] == 0xC0  # V and M
    assert int.from_bytes(wire[5:8], "big") == 12 + 5
    assert wire[8:12] == (10415).to_bytes(4, "big")
    assert wire[12:17] == b"sip:a" and wire[17:] == b"\0\0\0"


def test_message_header_wire_format() -> None:
    wire = cer().encode()
    assert wire[0] == 1
    assert int.from_bytes(wire[1:4], "big") == len(wire)
    assert wire[4] == 0x80
    assert int.from_bytes(wire[5:8], "big") == 257
    assert wire[12:16] == bytes.fromhex("11223344")
    assert wire[16:20] == bytes.fromhex("55667788")
    assert len(wire) % 4 == 0


@pytest.mark.parametrize(
    ("kind", "value", "payload"),
    [
        (AvpType.INTEGER32, -2, b"\xff\xff\xff\xfe"),
        (AvpType.INTEGER64, -1, b"\xff" * 8),
        (AvpType.UNSIGNED32, 2**32 - 1, b"\xff" * 4),
        (AvpType.UNSIGNED64, 1, b"\0" * 7 + b"\x01"),
        (AvpType.FLOAT32, 1.5, struct.pack("!f", 1.5)),
        (AvpType.FLOAT64, -0.25, struct.pack("!d", -0.25)),
        (AvpType.ADDRESS, IPv4Address("10.0.0.1"), b"\0\x01\x0a\0\0\x01"),
        (AvpType.ADDRESS, IPv6Address("::1"), b"\0\x02" + b"\0" * 15 + b"\x01"),
        (
            AvpType.TIME,
            datetime(1900, 1, 1, tzinfo=UTC) + timedelta(seconds=0x83AA7E80),
            bytes.fromhex("83aa7e80"),
        ),
        (AvpType.UTF8_STRING, "é", "é".encode()),
        (AvpType.ENUMERATED, 4, b"\0\0\0\x04"),
    ],
)
def test_value_encodings(kind: AvpType, value: object, payload: bytes) -> None:
    assert encode_value(kind, value) == payload  # type: ignore[arg-type]


def test_time_after_2036_uses_era_one() -> None:
    when = datetime(2040, 5, 6, 7, 8, 9, tzinfo=UTC)
    avp = D.make(AvpCode.EVENT_TIMESTAMP, when)
    (decoded,) = decode_avps(avp.encode(), D)
    assert decoded.value == when
    assert avp.encode()[8] < 0x80  # seconds wrapped past 2**32


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (AvpType.UNSIGNED32, -1),
        (AvpType.UNSIGNED32, 2**32),
        (AvpType.INTEGER32, 2**31),
        (AvpType.UTF8_STRING, b"bytes"),
        (AvpType.OCTET_STRING, "str"),
        (AvpType.TIME, datetime(2020, 1, 1)),  # naive
        (AvpType.ADDRESS, "127.0.0.1"),
        (AvpType.UNSIGNED32, True),
    ],
)
def test_encode_rejects_wrong_values(kind: AvpType, value: object) -> None:
    with pytest.raises(EncodeError):
        encode_value(kind, value)  # type: ignore[arg-type]


# Round trips ----------------------------------------------------------------------

_SCALAR_DEFS = [
    d for d in (D.lookup(c) for c in [*AvpCode, *TgppAvp]) if d.type is not AvpType.GROUPED
]
_GROUPED_DEFS = [
    d for d in (D.lookup(c) for c in [*AvpCode, *TgppAvp]) if d.type is AvpType.GROUPED
]


def _values(kind: AvpType) -> st.SearchStrategy[object]:
    ints = {
        AvpType.INTEGER32: (-(2**31), 2**31 - 1),
        AvpType.ENUMERATED: (-(2**31), 2**31 - 1),
        AvpType.INTEGER64: (-(2**63), 2**63 - 1),
        AvpType.UNSIGNED32: (0, 2**32 - 1),
        AvpType.UNSIGNED64: (0, 2**64 - 1),
    }
    if kind in ints:
        low, high = ints[kind]
        return st.integers(low, high)
    if kind is AvpType.OCTET_STRING:
        return st.binary(max_size=40)
    if kind is AvpType.FLOAT32:
        return st.floats(width=32, allow_nan=False)
    if kind is AvpType.FLOAT64:
        return st.floats(allow_nan=False)
    if kind is AvpType.ADDRESS:
        return st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))
    if kind is AvpType.TIME:
        return st.datetimes(
            min_value=datetime(1968, 1, 21), max_value=datetime(2104, 2, 6), timezones=st.just(UTC)
        ).map(lambda t: t.replace(microsecond=0))
    return st.text(max_size=30)


@st.composite
def scalar_avps(draw: st.DrawFn) -> Avp:
    d: AvpDef = draw(st.sampled_from(_SCALAR_DEFS))
    return Avp(
        d.code,
        draw(_values(d.type)),  # type: ignore[arg-type]
        d.type,
        d.vendor or None,
        draw(st.booleans()) if d.may_be_mandatory else False,
        draw(st.booleans()),
    )


def unknown_avps() -> st.SearchStrategy[Avp]:
    # Codes no dictionary entry uses; no M bit so that strict decoding accepts them.
    return st.builds(
        lambda code, vendor, data: Avp(code, data, AvpType.OCTET_STRING, vendor, False),
        st.integers(5000, 5999),
        st.one_of(st.none(), st.integers(1, 2**32 - 1).filter(lambda v: v != Vendor.TGPP)),
        st.binary(max_size=20),
    )


avps = st.recursive(
    st.one_of(scalar_avps(), unknown_avps()),
    lambda children: st.builds(
        lambda d, kids, m: Avp(d.code, tuple(kids), AvpType.GROUPED, d.vendor or None, m),
        st.sampled_from(_GROUPED_DEFS),
        st.lists(children, max_size=4),
        st.booleans(),
    ),
    max_leaves=12,
)


@given(avps)
def test_avp_round_trip(avp: Avp) -> None:
    wire = avp.encode()
    assert len(wire) % 4 == 0
    assert decode_avps(wire, D) == (avp,)


@given(
    st.integers(0, 2**24 - 1).filter(lambda c: D.command(c) is None),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0x80, 0xC0, 0x40, 0x00, 0x20, 0x60, 0x10]),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.lists(avps, max_size=6),
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_message_round_trip(
    code: int, app: int, flags: int, hbh: int, e2e: int, items: list[Avp]
) -> None:
    msg = Message(code, app, flags, hbh, e2e, tuple(items))
    assert decode_message(msg.encode(), D) == msg


# Total decoding: the fuzzers -------------------------------------------------------


@given(st.binary(min_size=20, max_size=300))
def test_decoder_never_raises_anything_but_diameter_errors(tail: bytes) -> None:
    data = struct.pack("!I", (1 << 24) | (len(tail) + 4)) + tail
    data = data[: len(data) - len(data) % 4] if len(data) % 4 else data
    try:
        decode_message(data, D)
    except DiameterError:
        pass


@given(st.data())
def test_mutated_valid_messages_fail_only_with_diameter_errors(data: st.DataObject) -> None:
    wire = bytearray(
        cer(
            D.group(AvpCode.VENDOR_SPECIFIC_APPLICATION_ID, D.make(AvpCode.VENDOR_ID, 10415))
        ).encode()
    )
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(4, len(wire) - 1))
        wire[pos] = data.draw(st.integers(0, 255))
    try:
        decode_message(bytes(wire), D)
    except DecodeError as exc:
        assert exc.header is not None
        assert exc.result_code in {r.value for r in ResultCode}
        # The error answer always encodes and decodes again.
        reply = error_answer(exc, "hss.ims.example.org", "ims.example.org")
        assert decode_message(reply.encode(), D).result_code == exc.result_code
    except FramingError:
        pass


@given(st.binary(max_size=200))
def test_framer_never_raises_anything_but_framing_errors(chunk: bytes) -> None:
    try:
        Framer().feed(chunk)
    except FramingError:
        pass


# Typed errors --------------------------------------------------------------------


def decode_error(data: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode_message(data, D)
    return info.value


def valid_cer_body() -> bytes:
    return b"".join(a.encode() for a in cer().avps)


def test_avp_length_beyond_message_is_5014() -> None:
    bad = raw_avp(AvpCode.SESSION_ID, 0x40, b"abcd", length=200)
    err = decode_error(raw_message(Command.DEVICE_WATCHDOG, 0x80, bad))
    assert err.result_code == ResultCode.INVALID_AVP_LENGTH
    assert err.failed_avp is not None and err.failed_avp.code == AvpCode.SESSION_ID
    assert err.header is not None and err.header.hop_by_hop == 1


def test_avp_length_below_header_is_5014() -> None:
    bad = raw_avp(AvpCode.ORIGIN_HOST, 0x40, b"abcd", length=5)
    assert decode_error(raw_message(280, 0x80, bad)).result_code == ResultCode.INVALID_AVP_LENGTH


def test_wrong_fixed_length_is_5014() -> None:
    bad = raw_avp(AvpCode.RESULT_CODE, 0x40, b"\0\0\x07")
    err = decode_error(raw_message(280, 0x00, bad))
    assert err.result_code == ResultCode.INVALID_AVP_LENGTH
    assert err.failed_avp == Avp(AvpCode.RESULT_CODE, b"\0\0\x07", mandatory=True)


def test_invalid_utf8_is_5004() -> None:
    bad = raw_avp(AvpCode.ORIGIN_HOST, 0x40, b"\xff\xfe")
    err = decode_error(raw_message(280, 0x80, bad))
    assert err.result_code == ResultCode.INVALID_AVP_VALUE


def test_unknown_address_family_is_5004() -> None:
    bad = raw_avp(AvpCode.HOST_IP_ADDRESS, 0x40, b"\0\x09abcd")
    assert decode_error(raw_message(280, 0x80, bad)).result_code == ResultCode.INVALID_AVP_VALUE


def test_unknown_mandatory_avp_in_request_is_5001() -> None:
    body = valid_cer_body() + raw_avp(9999, 0x40, b"xyz")
    err = decode_error(raw_message(257, 0x80, body))
    assert err.result_code == ResultCode.AVP_UNSUPPORTED
    assert err.failed_avp == Avp(9999, b"xyz", mandatory=True)


def test_unknown_mandatory_avp_in_answer_is_accepted() -> None:
    msg = decode_message(raw_message(257, 0x00, raw_avp(9999, 0x40, b"xyz")), D)
    assert msg.find(9999) == Avp(9999, b"xyz", mandatory=True)


def test_unknown_optional_avp_is_kept_as_octets() -> None:
    body = valid_cer_body() + raw_avp(9999, 0x80, b"xyz", vendor=42)
    msg = decode_message(raw_message(257, 0x80, body), D)
    assert msg.find(9999, 42) == Avp(9999, b"xyz", vendor=42)


def test_m_bit_on_avp_that_must_not_have_it_is_3009() -> None:
    body = valid_cer_body() + raw_avp(AvpCode.FIRMWARE_REVISION, 0x40, b"\0\0\0\x01")
    err = decode_error(raw_message(257, 0x80, body))
    assert err.result_code == ResultCode.INVALID_AVP_BITS


def test_error_bit_on_request_is_3008() -> None:
    err = decode_error(raw_message(280, 0xA0, b""))
    assert err.result_code == ResultCode.INVALID_HDR_BITS


def test_missing_required_avp_is_5005_with_the_missing_code() -> None:
    body = b"".join(a.encode() for a in cer().avps if a.code != AvpCode.PRODUCT_NAME)
    err = decode_error(raw_message(257, 0x80, body))
    assert err.result_code == ResultCode.MISSING_AVP
    assert err.failed_avp is not None and err.failed_avp.code == AvpCode.PRODUCT_NAME


def test_repeated_single_avp_is_5009() -> None:
    body = valid_cer_body() + D.make(AvpCode.ORIGIN_REALM, "other").encode()
    err = decode_error(raw_message(257, 0x80, body))
    assert err.result_code == ResultCode.AVP_OCCURS_TOO_MANY_TIMES
    assert err.failed_avp is not None and err.failed_avp.value == "other"


def test_error_inside_grouped_is_reported_inside_its_parent() -> None:
    inner = raw_avp(AvpCode.VENDOR_ID, 0x40, b"\0\0")
    outer = raw_avp(AvpCode.VENDOR_SPECIFIC_APPLICATION_ID, 0x40, inner)
    err = decode_error(raw_message(257, 0x80, valid_cer_body() + outer))
    assert err.result_code == ResultCode.INVALID_AVP_LENGTH
    assert err.failed_avp is not None
    assert err.failed_avp.code == AvpCode.VENDOR_SPECIFIC_APPLICATION_ID
    assert err.failed_avp.children() == (Avp(AvpCode.VENDOR_ID, b"\0\0", mandatory=True),)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x02\x00\x00\x14" + b"\0" * 16, ResultCode.UNSUPPORTED_VERSION),
        (b"\x01\x00\x00\x15" + b"\0" * 17, ResultCode.INVALID_MESSAGE_LENGTH),
        (b"\x01\x00\x00\x10" + b"\0" * 12, ResultCode.INVALID_MESSAGE_LENGTH),
    ],
)
def test_framing_errors(data: bytes, code: int) -> None:
    with pytest.raises(FramingError) as info:
        Framer().feed(data)
    assert info.value.result_code == code


def test_framer_splits_and_joins() -> None:
    one = cer().encode()
    two = request(
        280, 0, [D.make(AvpCode.ORIGIN_HOST, "x"), D.make(AvpCode.ORIGIN_REALM, "y")]
    ).encode()
    framer = Framer()
    stream = one + two + one
    frames: list[bytes] = []
    for i in range(0, len(stream), 7):
        frames += framer.feed(stream[i : i + 7])
    assert frames == [one, two, one]
    assert framer.buffered == 0


def test_framer_enforces_its_limit() -> None:
    with pytest.raises(FramingError):
        Framer(max_length=64).feed(cer().encode())


# Answers --------------------------------------------------------------------------


def test_answer_copies_identifiers_session_and_proxy_info() -> None:
    proxy = D.group(
        AvpCode.PROXY_INFO, D.make(AvpCode.PROXY_HOST, "p"), D.make(AvpCode.PROXY_STATE, b"s")
    )
    req = request(
        Command.LOCATION_INFO,
        Application.CX,
        [D.make(AvpCode.SESSION_ID, "s;1"), proxy],
        hop_by_hop=7,
        end_to_end=9,
    )
    ans = answer(req, "hss", "realm", experimental=(Vendor.TGPP, CxResult.UNREGISTERED_SERVICE))
    assert (ans.hop_by_hop, ans.end_to_end, ans.code, ans.application) == (
        7,
        9,
        302,
        Application.CX,
    )
    assert not ans.is_request and ans.is_proxiable and not ans.is_error
    assert ans.avps[0] == D.make(AvpCode.SESSION_ID, "s;1")
    assert ans.result_code == CxResult.UNREGISTERED_SERVICE
    assert ans.find(AvpCode.RESULT_CODE) is None
    assert ans.find(AvpCode.PROXY_INFO) == proxy


def test_error_answer_for_protocol_error_sets_e_bit_and_failed_avp() -> None:
    err = decode_error(raw_message(280, 0xA0, b""))
    ans = error_answer(err, "hss", "realm")
    assert ans.is_error and ans.result_code == ResultCode.INVALID_HDR_BITS
    assert ans.flags & Flag.REQUEST == 0
    again = decode_message(ans.encode(), D)
    assert again == ans


def test_error_answer_for_5xxx_has_no_e_bit_and_carries_failed_avp() -> None:
    body = valid_cer_body() + raw_avp(9999, 0x40, b"xyz")
    err = decode_error(raw_message(257, 0x80, body))
    ans = error_answer(err, "hss", "realm")
    assert not ans.is_error
    failed = ans.find(AvpCode.FAILED_AVP)
    assert failed is not None and failed.children() == (Avp(9999, b"xyz", mandatory=True),)
    assert decode_message(ans.encode(), D).find(AvpCode.FAILED_AVP) == failed


def test_session_id_of_raw_message() -> None:
    wire = request(
        272, 4, [D.make(AvpCode.SESSION_ID, "abc;1"), Avp(9999, b"x", mandatory=True)]
    ).encode()
    assert session_id_of(wire) == "abc;1"
    assert session_id_of(cer().encode()) is None


@given(st.data(), st.booleans())
def test_fast_decoder_agrees_with_the_careful_one(data: st.DataObject, strict: bool) -> None:
    """Whatever the fast path returns, the AVP-by-AVP decoder returns too (and
    where it gives up, decode_avps is the careful decoder's answer or error)."""
    from imsp2pd.diameter import cx
    from imsp2pd.diameter.avp import _decode_careful, _decode_fast, _Unusual

    origin = cx.Origin("scscf.ims.example.org", "ims.example.org")
    wire = bytearray(
        cx.mar(
            origin, "s;1;2", "ims.example.org", "alice@ims.example.org",
            "sip:alice@ims.example.org", "sip:scscf:6060",
        ).encode()
        + D.make(AvpCode.FAILED_AVP, (D.make(AvpCode.ORIGIN_STATE_ID, 7),)).encode()
        + Avp(99999, b"unknown", vendor=10415).encode()
    )  # fmt: skip
    for _ in range(data.draw(st.integers(0, 4))):
        pos = data.draw(st.integers(20, len(wire) - 1))
        wire[pos] = data.draw(st.integers(0, 255))
    raw = bytes(wire)

    def careful() -> object:
        try:
            return _decode_careful(raw, D, strict=strict, start=20, end=len(raw), lenient=False)
        except DecodeError as exc:
            return (exc.result_code, exc.failed_avp)

    memo: dict[bytes, Avp] = {}
    try:
        fast: object = _decode_fast(raw, D.codec_table, strict, 20, len(raw))
        # recurring AVPs kept by their bytes, then taken from the memo: the same AVPs
        assert _decode_fast(raw, D.codec_table, strict, 20, len(raw), memo) == fast
        assert _decode_fast(raw, D.codec_table, strict, 20, len(raw), memo) == fast
    except _Unusual:
        fast = None
    expected = careful()
    if fast is not None:
        assert fast == expected
    try:
        got: object = decode_avps(raw, D, strict=strict, start=20)
    except DecodeError as exc:
        got = (exc.result_code, exc.failed_avp)
    assert got == expected


def test_constant_avps_are_made_once_and_equal_to_make() -> None:
    d = default_dictionary().extend()
    host = d.constant(AvpCode.ORIGIN_HOST, "hss.ims.example.org")
    assert host == d.make(AvpCode.ORIGIN_HOST, "hss.ims.example.org")
    assert d.constant(AvpCode.ORIGIN_HOST, "hss.ims.example.org") is host
    # the value's type is part of the key: True is not 1
    assert d.constant(AvpCode.RESULT_CODE, 1).value == 1
    assert d.constant(AvpCode.RESULT_CODE, True).value is True
    # a 3GPP code and a base code with the same number stay apart
    assert d.constant(TgppAvp.SERVER_NAME, "sip:s").vendor == 10415


def test_kept_encodings_are_the_encodings() -> None:
    from imsp2pd.diameter.avp import keep_encoded

    group = D.group(AvpCode.PROXY_INFO, D.make(AvpCode.PROXY_HOST, "p.example.org"))
    fresh = D.group(AvpCode.PROXY_INFO, D.make(AvpCode.PROXY_HOST, "p.example.org"))
    assert keep_encoded(group).encode() == fresh.encode()
    # an AVP that does not encode still fails when its message is encoded
    bad = keep_encoded(Avp(1, True, AvpType.UNSIGNED32))
    with pytest.raises(EncodeError):
        Message(Command.DEVICE_WATCHDOG, 0, 0x80, avps=(bad,)).encode()


@given(st.lists(st.integers(1, 200), max_size=12))
def test_framer_frames_do_not_depend_on_how_the_stream_is_cut(cuts: list[int]) -> None:
    one = cer().encode()
    two = request(280, 0, [D.make(AvpCode.ORIGIN_HOST, "x")]).encode()
    stream = one + two + one + one
    framer, frames, pos = Framer(), [], 0
    for cut in cuts:
        frames += framer.feed(stream[pos : pos + cut])
        pos += cut
    frames += framer.feed(stream[pos:])
    assert frames == [one, two, one, one]
    assert all(type(f) is bytes for f in frames)
    assert framer.buffered == 0
