"""The sans-IO SIP core as a stateful proxy, UAS and UAC (RFC 3261 §16)."""

from __future__ import annotations

from imsp2pd.sip.message import Request, Response, make_response
from imsp2pd.sip.parser import parse_message
from imsp2pd.sip.proxy import (
    BranchFailed,
    BranchResponse,
    Cancelled,
    IncomingAck,
    IncomingRequest,
    LocalAddress,
    SipCore,
    Source,
    Target,
    Transmit,
    UacFailed,
    UacResponse,
    fit_transport,
)
from imsp2pd.sip.uri import parse_uri

UE = Source("UDP", "127.0.0.5", 40000)


def core(port: int = 4060, host: str = "127.0.0.1") -> SipCore:
    return SipCore(
        addresses=[LocalAddress("UDP", host, port), LocalAddress("TCP", host, port)],
        aliases=("pcscf.ims.example.org",),
    )


def request(
    method: str = "MESSAGE",
    uri: str = "sip:content@ims.example.org",
    extra: str = "Route: <sip:127.0.0.1:4060;lr>, <sip:127.0.0.1:6060;lr>\r\n",
    mf: str = "70",
    branch: str = "z9hG4bKue1",
    body: str = "",
) -> Request:
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.9.9.9:5060;branch={branch};rport\r\n"
        f"{extra}"
        "From: <sip:alice@ims.example.org>;tag=a1\r\n"
        "To: <sip:content@ims.example.org>\r\n"
        "Call-ID: cid-1\r\n"
        f"CSeq: 3 {method}\r\n"
        f"Max-Forwards: {mf}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def only(outputs: list, kind: type) -> list:  # type: ignore[type-arg]
    return [o for o in outputs if isinstance(o, kind)]


def receive_and_forward(c: SipCore, req: Request, now: float = 0.0, **kw) -> tuple[int, Transmit]:  # type: ignore[no-untyped-def]
    (event,) = c.receive(req, UE, now)
    assert isinstance(event, IncomingRequest)
    (tx,) = c.forward(event.ctx, event.request, now, **kw)
    assert isinstance(tx, Transmit)
    return event.ctx, tx


def test_forward_loose_route_record_route_via_and_max_forwards() -> None:
    c = core()
    ctx, out = receive_and_forward(c, request(), record_route=True)
    fwd = out.message
    assert isinstance(fwd, Request)
    assert out.target == Target("UDP", "127.0.0.1", 6060)
    assert fwd.get_all("Route") == ["<sip:127.0.0.1:6060;lr>"]  # our own entry removed
    assert fwd.max_forwards == 69
    assert fwd.get("Record-Route") == "<sip:127.0.0.1:4060;lr>"
    top = fwd.top_via
    assert top.host == "127.0.0.1" and top.port == 4060 and top.branch.startswith("z9hG4bK")
    # the UE's Via got received and rport (RFC 3581)
    ue_via = fwd.vias[1]
    assert ue_via.param("received") == "127.0.0.5" and ue_via.param("rport") == "40000"
    # the 200 goes back with our Via stripped to the UE's source address
    ok = make_response(fwd, 200, to_tag="t")
    (back,) = c.receive(ok, Source("UDP", "127.0.0.1", 6060), 0.1)
    assert isinstance(back, Transmit) and back.target == Target("UDP", "127.0.0.5", 40000)
    assert isinstance(back.message, Response) and back.message.status == 200
    assert (
        len(back.message.vias) == 1
        and back.message.get("Record-Route") == "<sip:127.0.0.1:4060;lr>"
    )
    # retransmitted request: the 200 again, nothing to the TU
    again = c.receive(request(), UE, 0.2)
    assert [o.message.status for o in only(again, Transmit)] == [200]
    assert not only(again, IncomingRequest)


def test_max_forwards_zero_is_483_and_loop_is_482() -> None:
    c = core()
    outs = c.receive(request(mf="0"), UE, 0.0)
    assert [o.message.status for o in only(outs, Transmit)] == [483]
    assert not only(outs, IncomingRequest)
    # a request that comes back to us unchanged has looped
    ctx, out = receive_and_forward(c, request(extra="", branch="z9hG4bKue2"), 0.0)
    looped = out.message
    back = c.receive(looped, Source("UDP", "127.0.0.1", 6060), 0.1)
    assert [o.message.status for o in only(back, Transmit)] == [482]


def test_spiral_with_new_request_uri_is_not_a_loop() -> None:
    c = core()
    _, out = receive_and_forward(c, request(extra=""), 0.0)
    fwd = out.message
    assert isinstance(fwd, Request)
    spiral = Request(
        fwd.headers, fwd.body, method=fwd.method, uri=parse_uri("sip:bob@ims.example.org")
    )
    events = c.receive(spiral, Source("UDP", "127.0.0.1", 7060), 0.1)
    assert only(events, IncomingRequest)


def test_no_answer_gives_408_after_timer_f_and_retransmits_meanwhile() -> None:
    c = core()
    receive_and_forward(c, request(), 0.0)
    sent = []
    now = 0.0
    while (d := c.next_deadline()) is not None and d <= 40:
        now = d
        sent += c.on_timer(now)
    statuses = [o.message.status for o in sent if isinstance(o.message, Response)]
    requests = [o for o in sent if isinstance(o.message, Request)]
    assert statuses == [408] and len(requests) >= 8
    assert c.pending <= 1  # the server transaction waits out Timer J


def test_transport_error_gives_500_and_503_becomes_500() -> None:
    c = core()
    _, out = receive_and_forward(c, request(), 0.0)
    outs = c.transport_error(out.tx, "connection refused", 0.1)
    assert [(o.message.status, o.message.reason) for o in outs] == [(500, "Next Hop Unreachable")]
    c2 = core()
    _, out2 = receive_and_forward(c2, request(), 0.0)
    unavailable = make_response(out2.message, 503, to_tag="x")
    (up,) = c2.receive(unavailable, Source("UDP", "127.0.0.1", 6060), 0.1)
    assert up.message.status == 500


def test_strict_next_hop_rewrites_request_uri() -> None:
    c = core()
    req = request(
        extra="Route: <sip:127.0.0.1:4060;lr>, <sip:strict.example.com:5070>, <sip:x.example.com;lr>\r\n"
    )
    _, out = receive_and_forward(c, req)
    fwd = out.message
    assert str(fwd.uri) == "sip:strict.example.com:5070"
    assert fwd.get_all("Route") == ["<sip:x.example.com;lr>", "<sip:content@ims.example.org>"]
    assert out.target == Target("UDP", "strict.example.com", 5070)


def test_previous_strict_router_put_our_record_route_in_the_request_uri() -> None:
    c = core()
    req = request(uri="sip:127.0.0.1:4060;lr", extra="Route: <sip:content@ims.example.org>\r\n")
    _, out = receive_and_forward(c, req)
    assert str(out.message.uri) == "sip:content@ims.example.org" and not out.message.get("Route")


def test_large_udp_request_goes_over_tcp() -> None:
    c = core()
    _, out = receive_and_forward(c, request(body="x" * 1400))
    assert out.target.transport == "TCP" and out.message.top_via.transport == "TCP"


def test_fit_transport_counts_bytes_over_1300_and_only_for_udp() -> None:
    udp = Target("UDP", "127.0.0.5", 5060)
    assert fit_transport(udp, 1300) == udp
    assert fit_transport(udp, 1301) == Target("TCP", "127.0.0.5", 5060)
    tls = Target("TLS", "127.0.0.5", 5061, flow=3)
    assert fit_transport(tls, 70000) == tls


def test_size_rule_applies_to_an_explicit_udp_target_too() -> None:
    """§18.1.1 whoever names the target: a role's Target("UDP", ...) for a
    big request becomes TCP to the same address, with a TCP Via; a small
    one stays on UDP."""
    c = core()
    udp = Target("UDP", "127.0.0.5", 5060)
    _, big = receive_and_forward(c, request(body="x" * 1400), target=udp)
    assert big.target == Target("TCP", "127.0.0.5", 5060)
    assert big.message.top_via.transport == "TCP" and len(big.message.encode()) > 1300
    _, small = receive_and_forward(c, request(branch="z9hG4bKue2"), target=udp)
    assert small.target == udp and small.message.top_via.transport == "UDP"
    # the threshold is on the whole request as it would go over UDP, our
    # Via included: 1300 bytes stay, one more byte of body goes over TCP
    sent = []
    for n in range(890, 930):
        _, out = receive_and_forward(c, request(branch=f"z9hG4bKe{n}", body="x" * n), target=udp)
        sent.append((len(out.message.encode()), out.target.transport))
    over_udp = [size for size, tp in sent if tp == "UDP"]
    assert max(over_udp) == 1300 and sent[len(over_udp)][1] == "TCP"
    assert all(tp == "TCP" for _, tp in sent[len(over_udp) :])


def test_size_rule_for_uac_requests_and_acks() -> None:
    c = core()
    req = request(extra="", branch="unused", body="y" * 1400).remove_header("Via")
    handle, outs = c.send_request(req, 0.0, target=Target("UDP", "127.0.0.5", 5060))
    (tx,) = outs
    assert tx.target.transport == "TCP" and tx.message.top_via.transport == "TCP"
    # TCP is reliable: no retransmission, Timer F fires and the UAC learns it
    assert c.transport_error(tx.tx, "connection refused", 0.1) == [
        UacFailed(handle, "transport: connection refused")
    ]
    ack = request("ACK", branch="z9hG4bKack", body="z" * 1400)
    (event,) = c.receive(ack, UE, 0.0)
    (out,) = c.forward_ack(event.request, event.source, 0.0)
    assert out.target.transport == "TCP" and out.message.top_via.transport == "TCP"


def test_responses_to_a_tcp_flow_use_the_flow() -> None:
    c = core()
    src = Source("TCP", "127.0.0.9", 51000, flow=7)
    (event,) = c.receive(request(), src, 0.0)
    (out,) = c.reply(event.ctx, 403, 0.0, "Forbidden")
    assert out.target == Target("TCP", "127.0.0.9", 51000, 7) and out.message.to.tag


def test_cancel_invite_branch() -> None:
    c = core()
    inv = request("INVITE")
    events = c.receive(inv, UE, 0.0)
    assert [o.message.status for o in only(events, Transmit)] == [100]
    ctx = only(events, IncomingRequest)[0].ctx
    (fwd,) = c.forward(ctx, only(events, IncomingRequest)[0].request, 0.0)
    cancel_text = (
        inv.encode().replace(b"INVITE sip:", b"CANCEL sip:").replace(b"3 INVITE", b"3 CANCEL")
    )
    cancel = parse_message(cancel_text)
    outs = c.receive(cancel, UE, 0.5)
    sent = [
        (o.message.status if isinstance(o.message, Response) else o.message.method)
        for o in only(outs, Transmit)
    ]
    assert sent == [200, "CANCEL", 487] and Cancelled(ctx) in outs
    down_cancel = [o.message for o in only(outs, Transmit) if isinstance(o.message, Request)][0]
    assert down_cancel.top_via == fwd.message.top_via
    # an unknown CANCEL is 481
    stray = parse_message(cancel_text.replace(b"z9hG4bKue1", b"z9hG4bKother"))
    assert [o.message.status for o in only(c.receive(stray, UE, 0.6), Transmit)] == [481]


def test_ack_of_2xx_is_handed_up_and_forwarded_statelessly() -> None:
    c = core()
    ack = request("ACK", branch="z9hG4bKack")
    (event,) = c.receive(ack, UE, 0.0)
    assert isinstance(event, IncomingAck)
    (out,) = c.forward_ack(event.request, event.source, 0.0)
    assert out.message.method == "ACK" and out.target.port == 6060 and len(out.message.vias) == 2


def test_intercepted_branch_reports_to_the_tu() -> None:
    c = core()
    ctx, out = receive_and_forward(c, request(), intercept=True)
    resp = make_response(out.message, 500, to_tag="as")
    (event,) = c.receive(resp, Source("UDP", "127.0.0.1", 6060), 0.1)
    assert event == BranchResponse(ctx, resp)
    c2 = core()
    ctx2, out2 = receive_and_forward(c2, request(), intercept=True)
    assert c2.transport_error(out2.tx, "refused", 0.1) == [BranchFailed(ctx2, "transport: refused")]
    # after a failure the TU may forward elsewhere
    (again,) = c2.forward(ctx2, c2.request_of(ctx2), 0.2, target=Target("TCP", "127.0.0.1", 7070))
    assert again.target.port == 7070


def test_uac_request_and_stray_response() -> None:
    c = core()
    req = request(extra="", branch="unused")
    req = req.remove_header("Via")
    handle, outs = c.send_request(req, 0.0, target=Target("TCP", "127.0.0.1", 7060))
    (tx,) = outs
    assert tx.message.top_via.transport == "TCP"
    resp = make_response(tx.message, 202, to_tag="z")
    assert c.receive(resp, Source("TCP", "127.0.0.1", 7060, 1), 0.1) == [UacResponse(handle, resp)]
    handle2, _ = c.send_request(req, 0.0, target=Target("UDP", "127.0.0.1", 7060))
    outs = []
    while (d := c.next_deadline()) is not None and d < 40:
        outs += c.on_timer(d)
    assert UacFailed(handle2, "timeout") in outs
    # a response matching no transaction is dropped, even with our Via on
    # top (RFC 6026 §8.5 updating RFC 3261 §16.7)
    assert (
        c.receive(resp.replace_header("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKzz"), UE, 1.0)
        == []
    )
    stray = resp.prepend_header("Via", "SIP/2.0/UDP 127.0.0.1:4060;branch=z9hG4bKgone")
    assert c.receive(stray, UE, 1.0) == []


def test_completed_non_invite_transactions_are_retired_to_bytes() -> None:
    """Over UDP a non-INVITE transaction with its final response is kept
    only as a key, a deadline and (server) the response's bytes: the
    retransmitted request still gets the same 200, a retransmitted 200 from
    downstream is absorbed, a late 200 after our own 408 is not relayed, and
    everything is gone after Timer J."""
    c = core()
    ctx, out = receive_and_forward(c, request(), 0.0)
    fwd = out.message
    assert isinstance(fwd, Request)
    ok = make_response(fwd, 200, to_tag="t")
    (back,) = c.receive(ok, Source("UDP", "127.0.0.1", 6060), 0.1)
    assert not c.table.servers and not c.table.clients  # both retired
    assert c.pending == 1  # the server's key and bytes, until Timer J
    # a retransmitted request gets the very same response again
    (again,) = c.receive(request(), UE, 1.0)
    assert isinstance(again, Transmit) and again.target == back.target
    assert again.message.encode() == back.message.encode()
    # the downstream 200 retransmitted: absorbed, not forwarded as a stray
    assert c.receive(ok, Source("UDP", "127.0.0.1", 6060), 1.0) == []
    # after Timer J the server's key goes too
    now = 0.1
    while (d := c.next_deadline()) is not None:
        now = d
        assert c.on_timer(now) == []
    assert c.pending == 0 and 30 < now < 40
    # a request after Timer J is a new transaction
    assert only(c.receive(request(), UE, now + 1), IncomingRequest)


def test_late_final_response_after_our_408_is_not_relayed() -> None:
    c = core()
    ctx, out = receive_and_forward(c, request(), 0.0, intercept=False)
    fwd = out.message
    assert isinstance(fwd, Request)
    now = 0.0
    sent = []
    while (d := c.next_deadline()) is not None and d <= 33:
        now = d
        sent += c.on_timer(now)
    assert [o.message.status for o in sent if isinstance(o.message, Response)] == [408]
    late = make_response(fwd, 200, to_tag="t")
    assert c.receive(late, Source("UDP", "127.0.0.1", 6060), now + 0.1) == []


def test_new_requests_beyond_the_in_progress_limit_get_503_without_a_transaction() -> None:
    c = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 4060)], max_in_progress=2)
    first, _ = receive_and_forward(c, request(branch="z9hG4bKo1"), 0.0)
    receive_and_forward(c, request(branch="z9hG4bKo2"), 0.0)
    (busy,) = c.receive(request(branch="z9hG4bKo3"), UE, 0.1)
    assert isinstance(busy, Transmit) and busy.target == Target("UDP", "127.0.0.5", 40000)
    assert busy.message.status == 503 and busy.message.get("Retry-After") == "1"
    assert c.overloaded == 1 and c.pending == 4  # two server and two client transactions
    # once one is answered there is room again
    c.reply(first, 200, 0.2)
    assert only(c.receive(request(branch="z9hG4bKo4"), UE, 0.3), IncomingRequest)
