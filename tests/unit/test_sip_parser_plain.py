"""The one-pass parse of a plain head (imsp2pd.sip.parser._parse_plain)
against the careful way (_parse_header_lines then _build): the same
message, the same views kept, the same fault named."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd.sip import parser
from imsp2pd.sip.errors import SipParseError
from imsp2pd.sip.message import Request, SipMessage
from imsp2pd.sip.parser import parse_message

from .test_sip_parser import BASE, message_request
from .test_sip_strategies import requests, responses

#: the messages of the MESSAGE and REGISTER paths (as captured in the lab)
CAPTURED = [
    "MESSAGE sip:content@ims.example.org SIP/2.0\r\n"
    "Record-Route: <sip:127.0.0.1:4060;lr>\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:6060;branch=z9hG4bK863a03b92641d29e.f086f9e92;rport\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:4060;branch=z9hG4bKa972256fbd682b26.f086f9e91;rport=4060"
    ";received=127.0.0.1\r\n"
    "Via: SIP/2.0/UDP 127.0.0.5:5060;branch=z9hG4bK1\r\n"
    "From: <sip:alice@ims.example.org>;tag=a1\r\n"
    "To: <sip:content@ims.example.org>\r\n"
    "Call-ID: c1\r\n"
    "CSeq: 1 MESSAGE\r\n"
    "Max-Forwards: 68\r\n"
    "Content-Type: application/vnd.imsp2p.purchase+json\r\n"
    "P-Asserted-Identity: <sip:alice@ims.example.org>\r\n"
    "P-Charging-Vector: icid-value=d74388d7a356272a;icid-generated-at=127.0.0.1\r\n"
    "Route: <sip:127.0.0.1:7060;lr>\r\n"
    "Route: <sip:odi-026f29e0ac42a075@127.0.0.1:6060;lr>\r\n"
    "Content-Length: 20\r\n\r\n"
    '{"purchase_id": "x"}',
    "SIP/2.0 200 OK\r\n"
    "Record-Route: <sip:127.0.0.1:4060;lr>\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:4060;branch=z9hG4bKa972256fbd682b26.f086f9e91;rport=4060"
    ";received=127.0.0.1\r\n"
    "Via: SIP/2.0/UDP 127.0.0.5:5060;branch=z9hG4bK1\r\n"
    "From: <sip:alice@ims.example.org>;tag=a1\r\n"
    "To: <sip:content@ims.example.org>;tag=as\r\n"
    "Call-ID: c1\r\n"
    "CSeq: 1 MESSAGE\r\n"
    "Content-Length: 0\r\n\r\n",
    "REGISTER sip:ims.example.org SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1234-1-2\r\n"
    "From: <sip:user0001@ims.example.org>;tag=1234SIPpTag001\r\n"
    "To: <sip:user0001@ims.example.org>\r\n"
    "Call-ID: 1-1234@127.0.0.1\r\n"
    "CSeq: 2 REGISTER\r\n"
    "Contact: <sip:user0001@127.0.0.1:5070>\r\n"
    'Authorization: Digest username="user0001@ims.example.org",realm="ims.example.org"'
    ',nc=00000001,qop=auth,uri="sip:ims.example.org",nonce="b6e6",response="0123"\r\n'
    "Max-Forwards: 70\r\n"
    "Expires: 3600\r\n"
    "Content-Length: 0\r\n\r\n",
]


def careful(data: bytes, **kw: bool) -> SipMessage:
    """parse_message with the one-pass path turned away."""
    fast = parser._parse_plain
    parser._parse_plain = lambda *a: None  # type: ignore[assignment]
    try:
        return parse_message(data, **kw)
    finally:
        parser._parse_plain = fast


def outcome(parse, data: bytes, **kw: bool) -> object:  # type: ignore[no-untyped-def]
    """The message and every view it holds, or the fault and its context."""
    try:
        m = parse(data, **kw)
    except SipParseError as e:
        return ("fault", e.reason, e.status, e.method, e.headers, e.is_request)
    d = m.__dict__
    return (
        "ok",
        type(m),
        m,
        sorted(d),
        d["vias"],
        [str(v) for v in d["vias"]],
        d["top_via"],
        d["cseq"],
        d["from_"],
        d["to"],
        d["_index"],
        d["max_forwards"],
        m.headers,
        m.body,
    )


def same(data: bytes, **kw: bool) -> None:
    assert outcome(parse_message, data, **kw) == outcome(careful, data, **kw)


@pytest.mark.parametrize("text", CAPTURED)
def test_captured_messages_take_the_one_pass_path(text: str) -> None:
    data = text.encode()
    lines = data.partition(b"\r\n\r\n")[0].decode().split("\r\n")
    m = parser._parse_plain(lines, data.partition(b"\r\n\r\n")[2], True)
    assert m is not None
    same(data)
    assert m == careful(data)
    assert m.encode() == careful(data).encode()
    if isinstance(m, Request):
        assert m.uri == careful(data).uri  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "extra",
    [
        "Content-Length: 1\n",
        "To: <sip:other@example.com>\n",
        "From: <sip:other@example.com>\n",
        "CSeq: 2 MESSAGE\n",
        "Call-ID: again\n",
        "Content-Type: a/b\nContent-Type: a/b\n",
        "Expires: 1\nExpires: 2\n",
        "Max-Forwards: 1\n",
        "Expires: x\n",
        "Expires: ²\n",
        "Call-ID: a b\n",
        "Call-ID:\n",
        "Bad Name: x\n",
        "NoColon\n",
        ": x\n",
        "Via: SIP/2.0/UDP 192.0.2.10:bad\n",
        "Via: SIP/2.0/UDP 192.0.2.10;branch\n",
        "Via:\n",
        "Via: SIP/2.0/UDP a.example;branch=z9hG4bK1, SIP/2.0/TCP b.example:5061;branch=z9hG4bK2\n",
        'Via: SIP/2.0/UDP a.example;branch=z9hG4bK1;x="q, <r>"\n',
        "Via: SIP/2.0/UDP a.example;branch=z9hG4bK1;x=<r>\n",
        "Via: SIP/2.0/UDP a.example;branch=z9hG4bK1;x=a\\b\n",
        "Via: ,\n",
        "Route: ,\n",
        "Route: <sip:a;lr>>\n",
        "Route: <sip:a;lr\n",
        "Route: <sip:a;lr>, <sip:b\n",
        "Route: <sip:a;lr>, <sip:b;lr>,\n",
        "Record-Route: >sip:a<\n",
        'Contact: "a, b" <sip:a@b>, <sip:c@d>\n',
        "Contact: *\n",
        "Supported: a, b,,c\n",
        "X-Empty:\n",
        "v: SIP/2.0/TCP 192.0.2.11;branch=z9hG4bK2\n",
        "Via : SIP/2.0/UDP 192.0.2.12;branch=z9hG4bK3\n",
        "VIA: SIP/2.0/udp 192.0.2.12:70000;branch=z9hG4bK3\n",
    ],
)
def test_each_fault_and_oddity_is_read_as_the_careful_way_reads_it(extra: str) -> None:
    for data in (message_request(BASE + extra), message_request(extra + BASE)):
        same(data)


@pytest.mark.parametrize(
    "data",
    [
        message_request(body="short", cl=9999),
        message_request(cl=-1),
        message_request(body="longer than said", cl=3),
        message_request(BASE.replace("CSeq: 1 MESSAGE", "CSeq: 1 INVITE")),
        message_request(BASE.replace("CSeq: 1 MESSAGE", "CSeq: 4294967296 MESSAGE")),
        message_request(BASE.replace("Call-ID: c1@192.0.2.10\n", "")),
        message_request(BASE.replace("CSeq: 1 MESSAGE\n", "")),
        message_request(start="MESSAGE <sip:bob@ims.example.org> SIP/2.0"),
        message_request(start="MESSAGE sip:bob@ims.example.org; lr SIP/2.0"),
        message_request(start="MESSAGE  sip:bob@ims.example.org SIP/2.0"),
        message_request(start="MESSAGE sip:bob@ims.example.org SIP/3.0"),
        message_request(start="MESSAGE sip:bob@ims.example.org sip/2.0"),
        message_request(start="FOO sip:bob@ims.example.org SIP/2.0").replace(b"MESSAGE", b"FOO"),
        message_request(start="SIP/2.0 200 OK"),
        message_request(start="SIP/2.0 200"),
        message_request(start="SIP/2.0  200 OK"),
        message_request(start="SIP/2.0 099 OK"),
        message_request(start="SIP/2.0 ²00 OK"),
        message_request(start="sip/2.0 200 OK"),
        message_request(start="SIP/2.0 200 OK\tfine"),
        b"MESSAGE sip:a@b SIP/2.0\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
    ],
)
def test_start_lines_and_lengths_are_read_as_the_careful_way_reads_them(data: bytes) -> None:
    same(data)
    same(data, check_length=False)


@settings(max_examples=200, deadline=None)
@given(st.one_of(requests(), responses()))
def test_generated_messages_parse_alike(m) -> None:  # type: ignore[no-untyped-def]
    same(m.encode())


@settings(max_examples=300, deadline=None)
@given(st.one_of(requests(), responses()), st.data())
def test_mutated_messages_parse_or_fail_alike(m, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    raw = bytearray(m.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "line"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] = data.draw(st.sampled_from(b'\t :;,<>"\\@[]%/=\xff0aZ'))
        elif op == "delete" and raw:
            del raw[pos : pos + data.draw(st.integers(1, 8))]
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(max_size=6))
        else:
            # a whole header line more, copied from the message itself
            lines = bytes(raw).partition(b"\r\n\r\n")[0].split(b"\r\n")
            k = data.draw(st.integers(1, max(1, len(lines) - 1)))
            at = bytes(raw).find(b"\r\n") + 2
            raw[at:at] = lines[min(k, len(lines) - 1)] + b"\r\n"
    same(bytes(raw))


@pytest.mark.parametrize("text", CAPTURED)
def test_lines_met_before_are_read_alike(text: str) -> None:
    data = text.encode()
    parser._LINES.clear()
    first = outcome(parse_message, data)  # every line read
    again = outcome(parse_message, data)  # every line kept
    assert first == again == outcome(careful, data)
    a, b = parse_message(data), parse_message(data)
    assert a.vias is not b.vias and a._index is not b._index  # fresh lists per message
    assert a._index["via"] is not b._index["via"]


def test_the_lines_kept_are_bounded() -> None:
    parser._LINES.clear()
    for i in range(parser._LINES_MAX + 10):
        parse_message(message_request(BASE + f"X-N: {i}\n"))
    assert len(parser._LINES) <= parser._LINES_MAX
    long = "x" * (parser._LINE_KEPT_MAX + 1)
    parse_message(message_request(BASE + f"X-Long: {long}\n"))
    assert f"X-Long: {long}" not in parser._LINES
    same(message_request(BASE + f"X-Long: {long}\n"))


def _with(extra: bytes, at_end: bool = True) -> bytes:
    data = message_request()
    cut = data.index(b"Content-Length")
    return data[:cut] + extra + data[cut:] if at_end else data.replace(b"\r\n", b"\r\n" + extra, 1)


@pytest.mark.parametrize(
    "extra",
    [
        b"X-A: a\rb\r\nX-B: c\nd\r\n",  # a lone CR and a lone LF: as many as CRLFs
        b"X-A: a\r\r\nX-B: \nd\r\n",
        b"X-A: a\n\r\nX-B: b\r\r\n",
        b"Subject: folded\r\n more\r\n",
        b"Subject: folded\r\n\tmore\r\n",
        b"X-A: 1\r\n : 2\r\n",
        b"\tX-A: 1\r\n",
        b"X-A: tab\there\r\n",
        b"X-A: \x00\r\n",
        b"X-A: \x0b\x0c\r\n",
        b"X-A: \x7f\r\n",
        b"X-A: caf\xc3\xa9 \xff\xfe\r\n",
        b"X-A: \xe2\x80\xa8 \xc2\x85\r\n",
        b"X-A:\r\n\r\n",
    ],
)
def test_odd_line_ends_folds_and_bytes_are_read_as_the_careful_way_reads_them(
    extra: bytes,
) -> None:
    for data in (_with(extra), _with(extra, at_end=False)):
        same(data)
        same(b"\r\n\r\n" + data)
