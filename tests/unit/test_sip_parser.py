"""The SIP message parser, serializer and stream framer (RFC 3261 §7,
§18.3), with messages written after the cases of RFC 4475."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd.sip.errors import SipParseError
from imsp2pd.sip.message import Request, Response, make_response
from imsp2pd.sip.parser import (
    FramedMessage,
    FrameError,
    KeepAlive,
    StreamFramer,
    error_response,
    head_error_response,
    parse_message,
)
from imsp2pd.sip.uri import SipURI

from .test_sip_strategies import requests, responses


def msg(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


BASE = """Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKabc
From: <sip:alice@ims.example.org>;tag=f1
To: <sip:bob@ims.example.org>
Call-ID: c1@192.0.2.10
CSeq: 1 MESSAGE
Max-Forwards: 70
"""


def message_request(
    headers: str = BASE,
    body: str = "",
    cl: int | None = None,
    start: str = "MESSAGE sip:bob@ims.example.org SIP/2.0",
) -> bytes:
    length = len(body.encode()) if cl is None else cl
    return msg(f"{start}\n{headers}Content-Length: {length}\n\n") + body.encode()


def test_tortuous_request_with_folding_compact_forms_and_lws() -> None:
    # RFC 4475 §3.1.1.1 kind: folding everywhere, compact names, odd case,
    # LWS around ':' '/' ';' '=', leading zeros, unknown headers
    data = msg(
        """INVITE sip:bob@biloxi.example.com;unknownparam SIP/2.0
TO :
 sip:bob@biloxi.example.com ;   tag    = 1918181833n
from   : "A \\\\\\"B\\"" <sip:alice@atlanta.example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
i: tortuous@192.0.2.1
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=z9hG4bK390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
c: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \\"\\"" <sip:alice@atlanta.example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33
l: 4

v=0
"""
    )
    req = parse_message(data)
    assert isinstance(req, Request)
    assert req.method == "INVITE" and req.max_forwards == 68 and req.cseq.seq == 9
    assert [v.host for v in req.vias] == ["192.0.2.2", "spindle.example.com", "192.168.255.111"]
    assert req.to.tag == "1918181833n" and req.from_.tag == "98asjd8"
    assert req.from_.display == 'A \\"B"'
    assert req.call_id == "tortuous@192.0.2.1" and req.get("Subject") == ""
    assert req.get("newfangledheader") == "newfangled value continued newfangled value"
    assert req.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert req.contacts[0].param("q") == "0.33" and req.contacts[0].display == 'Quoted string ""'
    assert req.body == b"v=0\r"  # l: 4 counts the CR of the body line
    assert parse_message(req.encode()) == req


def test_escapes_null_and_semicolons_in_uris() -> None:
    data = message_request(
        BASE.replace("<sip:bob@ims.example.org>", "<sip:null-%00-null@ims.example.org>"),
        start="MESSAGE sip:user;par=u%40example.net@ims.example.org SIP/2.0",
    )
    req = parse_message(data)
    assert isinstance(req, Request) and isinstance(req.uri, SipURI)
    assert req.uri.user == "user;par=u%40example.net" and req.uri.host == "ims.example.org"


def test_response_without_reason_and_utf8_reason() -> None:
    for start, reason in [
        ("SIP/2.0 100 ", ""),
        ("SIP/2.0 100", ""),
        ("SIP/2.0 200 Åkay fine", "Åkay fine"),
    ]:
        resp = parse_message(msg(start + "\n" + BASE + "Content-Length: 0\n\n"))
        assert isinstance(resp, Response) and resp.status in (100, 200) and resp.reason == reason


def test_datagram_body_longer_than_content_length_is_cut() -> None:
    req = parse_message(message_request(body="hello world", cl=5))
    assert req.body == b"hello"
    # no Content-Length on a datagram: the body is the rest
    req2 = parse_message(msg("MESSAGE sip:b@h SIP/2.0\n" + BASE + "\n") + b"rest")
    assert req2.body == b"rest"


def test_multi_value_headers_split_but_not_inside_quotes() -> None:
    headers = (
        BASE
        + 'Route: <sip:p1.example.com;lr>, "a, b" <sip:p2.example.com;lr>\nRoute: <sip:p3.example.com;lr>\n'
    )
    req = parse_message(message_request(headers))
    assert [str(r.uri) for r in req.routes] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
        "sip:p3.example.com;lr",
    ]
    assert req.routes[1].display == "a, b"


def bad(data: bytes) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    return info.value


@pytest.mark.parametrize(
    ("data", "fault"),
    [
        (message_request(body="short", cl=9999), "Content-Length larger than the body"),
        (message_request(cl=-1), "Bad Content-Length"),
        (message_request(BASE + "Content-Length: 1\n", body="a"), "Multiple Content-Length"),
        (
            message_request(BASE.replace("CSeq: 1 MESSAGE", "CSeq: 1 INVITE")),
            "CSeq method does not match",
        ),
        (
            message_request(BASE.replace("CSeq: 1 MESSAGE", "CSeq: 4294967296 MESSAGE")),
            "Bad CSeq number",
        ),
        (message_request(BASE + "To: <sip:other@example.com>\n"), "Multiple To"),
        (
            message_request(BASE.replace("Max-Forwards: 70", "Max-Forwards: 300")),
            "Bad Max-Forwards",
        ),
        (message_request(start="MESSAGE <sip:bob@ims.example.org> SIP/2.0"), "Bad Request-URI"),
        (
            message_request(start="MESSAGE sip:bob@ims.example.org; lr SIP/2.0"),
            "Malformed request line",
        ),
        (
            message_request(start="MESSAGE  sip:bob@ims.example.org SIP/2.0"),
            "Malformed request line",
        ),
        (
            message_request(
                BASE.replace(
                    "<sip:alice@ims.example.org>", '"unbalanced <sip:alice@ims.example.org>'
                )
            ),
            "Unterminated quoted string",
        ),
        (
            message_request(
                BASE.replace("<sip:bob@ims.example.org>", "sip:bob@ims.example.org?x=y")
            ),
            "Bad To header",
        ),
        (message_request(BASE + "X-Bad: a\x01b\n"), "Control character in X-Bad"),
        (message_request(BASE + "Bad Name: x\n"), "Bad header name"),
        (message_request(BASE + "NoColon\n"), "Header line without colon"),
        (message_request(BASE + "Via: SIP/2.0/UDP 192.0.2.10:bad\n"), "Bad Via sent-by"),
    ],
)
def test_malformed_requests_name_the_fault_and_get_a_400(data: bytes, fault: str) -> None:
    err = bad(data)
    assert fault in err.reason
    resp = error_response(err)
    assert resp is not None and resp.status == 400 and fault in resp.reason
    assert resp.get("Call-ID") is not None and resp.get("Via") is not None
    assert ";tag=" in (resp.get("To") or "")
    assert resp.encode().startswith(b"SIP/2.0 400 ")


def test_bad_version_gets_505() -> None:
    err = bad(message_request(start="MESSAGE sip:bob@ims.example.org SIP/7.0"))
    resp = error_response(err)
    assert err.status == 505 and resp is not None and resp.status == 505


def test_unanswerable_messages_are_dropped() -> None:
    # a broken response, a broken ACK, a request without Via, junk
    assert error_response(bad(msg("SIP/2.0 999 Nope\n" + BASE + "\n"))) is None
    ack = message_request(
        BASE.replace("CSeq: 1 MESSAGE", "CSeq: x ACK"), start="ACK sip:b@h SIP/2.0"
    )
    assert error_response(bad(ack)) is None
    assert (
        error_response(
            bad(
                message_request(
                    BASE.replace("Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKabc\n", ""), cl=7
                )
            )
        )
        is None
    )
    assert (
        error_response(bad(message_request(BASE.replace("Call-ID: c1@192.0.2.10\n", "")))) is None
    )
    assert error_response(bad(message_request(BASE.replace(":5060;", ":bad;")))) is None
    assert error_response(bad(b"\x00\xff\xfe garbage")) is None
    assert error_response(bad(b"")) is None
    assert error_response(bad(b"\r\n\r\n")) is None


def test_truncated_datagram() -> None:
    data = message_request(body="hello")
    for cut in (10, 60, len(data) - 3):
        err = bad(data[:cut])
        assert err.reason


def test_make_response_copies_the_right_headers() -> None:
    req = parse_message(
        message_request(BASE + "Record-Route: <sip:p.example.com;lr>\nX-Other: 1\n")
    )
    assert isinstance(req, Request)
    resp = make_response(req, 200, to_tag="tt")
    assert resp.reason == "OK" and resp.to.tag == "tt" and resp.get("Record-Route") is not None
    assert resp.get("X-Other") is None and resp.cseq == req.cseq
    trying = make_response(req, 100, to_tag="tt")
    assert trying.to.tag is None and trying.get("Record-Route") is None


def test_header_helpers() -> None:
    req = parse_message(message_request())
    r2 = req.prepend_header("Via", "SIP/2.0/TCP p.example.com;branch=z9hG4bKnew")
    assert r2.top_via.host == "p.example.com" and len(r2.vias) == 2
    assert r2.remove_first("Via").vias == req.vias
    r3 = req.replace_header("Max-Forwards", "69").append_header("X-A", "1").remove_header("x-a")
    assert r3.max_forwards == 69 and r3.get("X-A") is None
    assert req.prepend_header("Record-Route", "<sip:x;lr>").headers[0] == (
        "Record-Route",
        "<sip:x;lr>",
    )


@given(requests())
def test_request_round_trip(req: Request) -> None:
    assert parse_message(req.encode()) == req
    assert parse_message(req.encode(), stream=True) == req


@given(responses())
def test_response_round_trip(resp: Response) -> None:
    out = parse_message(resp.encode())
    assert out == resp


@settings(max_examples=150, deadline=None)
@given(requests(), st.data())
def test_mutated_messages_raise_only_our_error(req: Request, data: st.DataObject) -> None:
    raw = bytearray(req.encode())
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] = data.draw(st.sampled_from(b'\x00\r\n :;,<>"\\@[]%/\xff'))
        elif op == "delete" and raw:
            del raw[pos : pos + data.draw(st.integers(1, 8))]
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(max_size=8))
        else:
            del raw[pos:]
    try:
        parse_message(bytes(raw))
    except SipParseError as err:
        resp = error_response(err)
        if resp is not None:
            assert resp.encode().startswith(b"SIP/2.0 ")


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_our_error(raw: bytes) -> None:
    try:
        parse_message(raw)
    except SipParseError as err:
        error_response(err)


# -- stream framing ----------------------------------------------------


def test_framer_splits_pipelined_messages_in_any_chunking() -> None:
    a = message_request(body="first")
    b = message_request(body="second message")
    stream = b"\r\n" + a + b"\r\n\r\n" + b
    for size in (1, 2, 3, 7, 64, len(stream)):
        framer = StreamFramer()
        events = []
        for i in range(0, len(stream), size):
            events += framer.feed(stream[i : i + size])
        assert events == [FramedMessage(a), KeepAlive(), FramedMessage(b)]
        assert framer.buffered == 0
    assert parse_message(a, stream=True).body == b"first"


def test_framer_buffers_incomplete_messages() -> None:
    data = message_request(body="x" * 100)
    framer = StreamFramer()
    assert framer.feed(data[:-1]) == []
    assert framer.feed(data[-1:]) == [FramedMessage(data)]


def test_framer_rejects_oversize_with_513_and_resyncs() -> None:
    framer = StreamFramer(max_message=1024)
    big = message_request(body="x" * 2000)
    small = message_request(body="ok")
    events = framer.feed(big[:500]) + framer.feed(big[500:] + small)
    assert isinstance(events[0], FrameError) and events[0].status == 513 and not events[0].fatal
    assert events[1:] == [FramedMessage(small)]
    resp = head_error_response(events[0].head or b"", 513, events[0].reason)
    assert resp is not None and resp.status == 513 and resp.reason == "Message too large"


def test_framer_header_block_too_large_is_fatal() -> None:
    framer = StreamFramer(max_message=256)
    events = framer.feed(b"MESSAGE sip:a@b SIP/2.0\r\nX: " + b"y" * 400)
    assert events == [FrameError("Message header too large", 513, None, fatal=True)]
    assert framer.feed(b"more") == []


def test_framer_bad_content_length_is_fatal_but_answerable() -> None:
    framer = StreamFramer()
    events = framer.feed(message_request(cl=-5))
    assert len(events) == 1 and isinstance(events[0], FrameError) and events[0].fatal
    resp = head_error_response(events[0].head or b"", 400, events[0].reason)
    assert resp is not None and resp.status == 400


def test_framer_one_mib_default() -> None:
    framer = StreamFramer()
    body = "x" * (1 << 20 - 1) + "y" * ((1 << 19) - 2000)
    data = message_request(body=body)
    assert len(data) < 1 << 20
    assert framer.feed(data) == [FramedMessage(data)]


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_framer_never_raises(chunks: list[bytes]) -> None:
    framer = StreamFramer(max_message=512)
    for chunk in chunks:
        for event in framer.feed(chunk):
            if isinstance(event, FramedMessage):
                try:
                    parse_message(event.data, stream=True)
                except SipParseError:
                    pass
            elif isinstance(event, FrameError) and event.head is not None:
                head_error_response(event.head, event.status, event.reason)


# -- the fast path (CRLF heads) and the careful one (any other) agree ------


def lf(data: bytes) -> bytes:
    """The same message with LF line ends in its head: the careful path."""
    head, _, body = data.partition(b"\r\n\r\n")
    return head.replace(b"\r\n", b"\n") + b"\n\n" + body


def views(m):  # type: ignore[no-untyped-def]
    return (m, m.vias, m.top_via, m.cseq, m.from_, m.to, [str(v) for v in m.vias])


@given(st.one_of(requests(), responses()))
def test_lf_heads_parse_as_crlf_heads(m) -> None:  # type: ignore[no-untyped-def]
    data = m.encode()
    assert views(parse_message(data)) == views(parse_message(lf(data)))


@pytest.mark.parametrize(
    "extra",
    [
        "Content-Length: 1\n",
        "To: <sip:other@example.com>\n",
        "X-Bad: a\x01b\n",
        "X-Bad: a\x7fb\n",
        "X-Bad: a\rb\n",
        "Bad Name: x\n",
        "NoColon\n",
        "Via: SIP/2.0/UDP 192.0.2.10:bad\n",
        "Via: SIP/2.0/UDP 192.0.2.10;branch\n",
        "Route: <sip:a;lr>>\n",
        "Route: <sip:a;lr\n",
        "Route: <sip:a;lr>, <sip:b\n",
        "Record-Route: >sip:a<\n",
        "Max-Forwards: 1\n",
        "Expires: x\n",
        "Call-ID: a b\n",
    ],
)
def test_the_careful_path_names_the_same_fault(extra: str) -> None:
    for data in (message_request(BASE + extra), message_request(extra + BASE)):
        a, b = bad(data), bad(lf(data))
        assert (a.reason, a.status, a.method, a.headers, a.is_request) == (
            b.reason,
            b.status,
            b.method,
            b.headers,
            b.is_request,
        )


def test_incomplete_head_ending_in_crlf_is_the_empty_line_fault() -> None:
    data = message_request().partition(b"\r\n\r\n")[0] + b"\r\n"
    assert bad(data).reason == "Empty line inside headers"
    assert "Incomplete message" in bad(message_request().partition(b"\r\n\r\n")[0]).reason
