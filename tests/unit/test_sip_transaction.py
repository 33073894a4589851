"""Transaction state machines (RFC 3261 §17, RFC 6026) driven by an
explicit clock."""

from __future__ import annotations

import pytest

from imsp2pd.sip.message import Request, Response, make_response
from imsp2pd.sip.parser import parse_message
from imsp2pd.sip.transaction import (
    ClientTransaction,
    Deliver,
    Send,
    ServerTransaction,
    State,
    Terminated,
    Timeout,
    TransactionTable,
    TransportFailed,
)


def request(method: str = "MESSAGE", branch: str = "z9hG4bK1") -> Request:
    text = (
        f"{method} sip:bob@ims.example.org SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n"
        "Route: <sip:pcscf.ims.example.org;lr>\r\n"
        "From: <sip:alice@ims.example.org>;tag=a\r\n"
        "To: <sip:bob@ims.example.org>\r\n"
        "Call-ID: call1\r\n"
        f"CSeq: 7 {method}\r\n"
        "Max-Forwards: 70\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def resp(req: Request, status: int) -> Response:
    return make_response(req, status, to_tag="bt")


def sends(actions: list) -> list:  # type: ignore[type-arg]
    return [a.message for a in actions if isinstance(a, Send)]


def run_until(tx, end: float) -> list[tuple[float, object]]:  # type: ignore[no-untyped-def]
    """Fire every deadline up to ``end``; return (time, action) pairs."""
    out = []
    while (d := tx.next_deadline()) is not None and d <= end:
        out += [(d, a) for a in tx.on_timer(d)]
    return out


def test_non_invite_client_retransmits_e_then_times_out_f() -> None:
    req = request()
    tx = ClientTransaction(req, reliable=False)
    assert sends(tx.start(0.0)) == [req]
    events = run_until(tx, 40.0)
    times = [t for t, a in events if isinstance(a, Send)]
    # E doubles from T1 up to T2: 0.5, 1.5, 3.5, 7.5, 11.5, ... until F = 32 s
    assert times[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert all(b - a == 4.0 for a, b in zip(times[3:], times[4:], strict=False))
    assert times[-1] < 32.0
    assert [a for t, a in events if not isinstance(a, Send)] == [Timeout("F"), Terminated()]
    assert events[-1][0] == 32.0 and tx.terminated


def test_non_invite_client_proceeding_retransmits_at_t2_and_completes_with_k() -> None:
    req = request()
    tx = ClientTransaction(req, reliable=False)
    tx.start(0.0)
    r100 = resp(req, 100)
    assert tx.receive(r100, 0.2) == [Deliver(r100)] and tx.state is State.PROCEEDING
    events = run_until(tx, 6.0)
    assert [t for t, _ in events] == [0.5, 4.5]  # E fires at T2 in Proceeding
    ok = resp(req, 200)
    assert tx.receive(ok, 6.0) == [Deliver(ok)] and tx.state is State.COMPLETED
    assert tx.receive(ok, 6.5) == []  # retransmission absorbed
    assert tx.next_deadline() == 11.0  # K = T4
    assert tx.on_timer(11.0) == [Terminated()]


def test_reliable_client_no_retransmission_and_k_zero() -> None:
    req = request()
    tx = ClientTransaction(req, reliable=True)
    tx.start(0.0)
    assert tx.next_deadline() == 32.0
    tx.receive(resp(req, 202), 1.0)
    assert tx.next_deadline() == 1.0
    assert tx.on_timer(1.0) == [Terminated()]


def test_invite_client_timer_a_and_b() -> None:
    req = request("INVITE")
    tx = ClientTransaction(req, reliable=False)
    tx.start(0.0)
    events = run_until(tx, 40.0)
    assert [t for t, a in events if isinstance(a, Send)] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert [a for _, a in events if not isinstance(a, Send)] == [Timeout("B"), Terminated()]


def test_invite_client_non_2xx_acks_and_waits_d() -> None:
    req = request("INVITE")
    tx = ClientTransaction(req, reliable=False)
    tx.start(0.0)
    tx.receive(resp(req, 180), 0.1)
    busy = resp(req, 486)
    actions = tx.receive(busy, 1.0)
    ack = sends(actions)[0]
    assert Deliver(busy) in actions and tx.state is State.COMPLETED
    assert ack.method == "ACK" and ack.cseq.seq == 7 and ack.cseq.method == "ACK"
    assert (
        ack.uri == req.uri and ack.to.tag == "bt" and ack.get_all("Route") == req.get_all("Route")
    )
    assert ack.top_via == req.top_via
    assert tx.receive(busy, 2.0) == [Send(ack)]  # retransmitted 486: ACK again, not passed up
    assert tx.next_deadline() == 33.0
    assert tx.on_timer(33.0) == [Terminated()]


def test_invite_client_2xx_accepted_state_rfc6026() -> None:
    req = request("INVITE")
    tx = ClientTransaction(req, reliable=True)
    tx.start(0.0)
    ok = resp(req, 200)
    assert tx.receive(ok, 1.0) == [Deliver(ok)] and tx.state is State.ACCEPTED
    assert tx.receive(ok, 2.0) == [Deliver(ok)]  # 2xx retransmissions reach the TU
    assert tx.next_deadline() == 33.0  # Timer M = 64*T1
    assert tx.on_timer(33.0) == [Terminated()]


def test_invite_server_sends_trying_and_retransmits_final_g_until_ack() -> None:
    req = request("INVITE")
    tx = ServerTransaction(req, reliable=False)
    actions = tx.start(0.0)
    assert sends(actions)[0].status == 100 and Deliver(req) in actions
    assert sends(tx.receive(req, 0.1))[0].status == 100  # retransmitted INVITE
    busy = resp(req, 486)
    assert tx.respond(busy, 1.0) == [Send(busy)]
    events = run_until(tx, 5.0)
    assert [t for t, _ in events] == [1.5, 2.5, 4.5]  # G: after T1, 2T1, 4T1 (capped at T2)
    assert tx.receive(req, 5.1) == [Send(busy)]
    ack = parse_message(
        ClientTransaction(req, reliable=False)
        .request.encode()
        .replace(b"INVITE sip", b"ACK sip")
        .replace(b"7 INVITE", b"7 ACK")
    )
    assert isinstance(ack, Request)
    assert tx.receive(ack, 5.2) == [] and tx.state is State.CONFIRMED
    assert tx.receive(ack, 5.3) == []  # absorbed
    assert tx.next_deadline() == pytest.approx(10.2)  # I = T4
    assert tx.on_timer(10.2) == [Terminated()]


def test_invite_server_no_ack_times_out_h() -> None:
    req = request("INVITE")
    tx = ServerTransaction(req, reliable=True)
    tx.start(0.0)
    tx.respond(resp(req, 404), 0.0)
    assert tx.next_deadline() == 32.0  # no G on a reliable transport
    assert tx.on_timer(32.0) == [Timeout("H"), Terminated()]


def test_invite_server_2xx_accepted_l() -> None:
    req = request("INVITE")
    tx = ServerTransaction(req, reliable=False, send_trying=False)
    assert tx.start(0.0) == [Deliver(req)]
    ok = resp(req, 200)
    assert tx.respond(ok, 0.5) == [Send(ok)] and tx.state is State.ACCEPTED
    assert tx.receive(req, 1.0) == []  # retransmitted INVITE absorbed (RFC 6026)
    assert tx.respond(resp(req, 500), 1.0) == []
    assert tx.on_timer(32.5) == [Terminated()]


def test_non_invite_server_absorbs_and_resends_then_j() -> None:
    req = request()
    tx = ServerTransaction(req, reliable=False)
    assert tx.start(0.0) == [Deliver(req)]
    assert tx.receive(req, 0.1) == []  # Trying: absorbed silently
    trying = resp(req, 100)
    tx.respond(trying, 0.2)
    assert tx.receive(req, 0.3) == [Send(trying)]
    ok = resp(req, 200)
    assert tx.respond(ok, 0.4) == [Send(ok)]
    assert tx.receive(req, 0.5) == [Send(ok)]
    assert tx.respond(resp(req, 500), 0.6) == []
    assert tx.next_deadline() == pytest.approx(32.4)
    assert tx.on_timer(32.4) == [Terminated()]


def test_transport_error_is_reported_once() -> None:
    tx = ClientTransaction(request(), reliable=True)
    tx.start(0.0)
    assert tx.transport_error("connection refused") == [
        TransportFailed("connection refused"),
        Terminated(),
    ]
    assert tx.transport_error("again") == [] and tx.next_deadline() is None


def test_ack_is_never_a_client_transaction() -> None:
    with pytest.raises(ValueError):
        ClientTransaction(request("ACK"), reliable=True)


def test_table_matching_and_single_deadline() -> None:
    table = TransactionTable()
    c1 = ClientTransaction(request(branch="z9hG4bKc1"), reliable=False)
    c1.start(0.0)
    table.add_client(c1)
    inv = request("INVITE", branch="z9hG4bKs1")
    s1 = ServerTransaction(inv, reliable=True)
    s1.start(0.0)
    table.add_server(s1)
    assert len(table) == 2
    assert table.match_response(resp(c1.request, 200)) is c1
    assert table.match_request(inv) is s1
    ack = inv.__class__(inv.headers, b"", method="ACK", uri=inv.uri).replace_header("CSeq", "7 ACK")
    assert table.match_request(ack) is s1
    cancel = inv.__class__(inv.headers, b"", method="CANCEL", uri=inv.uri).replace_header(
        "CSeq", "7 CANCEL"
    )
    assert table.match_request(cancel) is None and table.match_cancel_target(cancel) is s1
    assert table.next_deadline() == 0.5
    due = table.due(0.5)
    assert due == [c1]
    c1.on_timer(0.5)
    table.touch(c1)
    assert table.next_deadline() == 1.5
    # terminated transactions leave the table
    c1.receive(resp(c1.request, 200), 2.0)
    table.touch(c1)
    for tx in table.due(10.0):
        tx.on_timer(10.0)
        table.touch(tx)
    assert table.match_response(resp(c1.request, 200)) is None
    assert table.next_deadline() is None  # s1 in Proceeding runs no timer
    s1.respond(resp(inv, 603), 11.0)
    table.touch(s1)
    assert table.next_deadline() == 43.0  # Timer H
    assert len(table) == 1
