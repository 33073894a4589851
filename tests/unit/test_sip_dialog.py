"""Dialogs (RFC 3261 §12) and NOTIFY headers (RFC 6665)."""

from __future__ import annotations

import pytest

from imsp2pd.sip.dialog import Dialog, SubscriptionState, event_package, notify_headers
from imsp2pd.sip.errors import SipParseError
from imsp2pd.sip.message import Request, make_response
from imsp2pd.sip.parser import parse_message


def subscribe(
    rr: str = "Record-Route: <sip:p1.example.org;lr>, <sip:p2.example.org;lr>\r\n",
    contact: bool = True,
) -> Request:
    text = (
        "SUBSCRIBE sip:alice@ims.example.org SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:4060;branch=z9hG4bKs\r\n"
        f"{rr}"
        "From: <sip:alice@ims.example.org>;tag=ue\r\nTo: <sip:alice@ims.example.org>\r\n"
        "Call-ID: sub1\r\nCSeq: 7 SUBSCRIBE\r\nEvent: reg;id=1\r\nExpires: 600\r\n"
        + ("Contact: <sip:alice@127.0.0.5:5060>\r\n" if contact else "")
        + "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def test_uas_dialog_and_notify() -> None:
    req = subscribe()
    ok = make_response(req, 200, to_tag="scscf", extra=(("Contact", "<sip:127.0.0.1:6060>"),))
    d = Dialog.as_uas(req, ok)
    assert d.id == ("sub1", "scscf", "ue") and d.remote_seq == 7
    d2, notify = d.next_request(
        "NOTIFY",
        body=b"<x/>",
        content_type="application/reginfo+xml",
        extra=notify_headers("reg", SubscriptionState.ACTIVE, expires=600),
    )
    assert d2.local_seq == 1 and notify.cseq.seq == 1 and notify.cseq.method == "NOTIFY"
    assert str(notify.uri) == "sip:alice@127.0.0.5:5060"
    assert notify.get_all("Route") == ["<sip:p1.example.org;lr>", "<sip:p2.example.org;lr>"]
    assert notify.from_.tag == "scscf" and notify.to.tag == "ue"
    assert notify.get("Subscription-State") == "active;expires=600" and notify.get("Event") == "reg"
    assert d2.next_request("NOTIFY")[1].cseq.seq == 2


def test_uac_dialog_reverses_route_set_and_strict_routing() -> None:
    req = subscribe(rr="")
    ok = make_response(req, 200, to_tag="n").append_header("Contact", "<sip:notifier@10.0.0.1>")
    ok = ok.append_header("Record-Route", "<sip:strict.example.org>").append_header(
        "Record-Route", "<sip:p1.example.org;lr>"
    )
    d = Dialog.as_uac(req, ok)
    assert d.route_set == ("<sip:p1.example.org;lr>", "<sip:strict.example.org>")
    _, r = d.next_request("SUBSCRIBE")
    assert str(r.uri) == "sip:notifier@10.0.0.1" and r.cseq.seq == 8
    # a strict first hop goes in the Request-URI, the remote target last
    strict = Dialog(
        "c",
        "l",
        "r",
        "<sip:a@x>",
        "<sip:b@y>",
        d.remote_target,
        ("<sip:strict.example.org>", "<sip:p1;lr>"),
    )
    _, r2 = strict.next_request("BYE")
    assert str(r2.uri) == "sip:strict.example.org"
    assert r2.get_all("Route") == ["<sip:p1;lr>", "<sip:notifier@10.0.0.1>"]


def test_incoming_order_and_target_refresh() -> None:
    req = subscribe()
    d = Dialog.as_uas(req, make_response(req, 200, to_tag="t"))
    again = req.replace_header("CSeq", "8 SUBSCRIBE").replace_header(
        "Contact", "<sip:alice@127.0.0.6:5070>"
    )
    d2, err = d.check_incoming(again)
    assert err is None and d2.remote_seq == 8
    assert d2.check_incoming(again)[1] == 500  # replayed CSeq
    notify = (
        req.__class__(req.headers, b"", method="NOTIFY", uri=req.uri)
        .replace_header("CSeq", "9 NOTIFY")
        .replace_header("Contact", "<sip:alice@127.0.0.7>")
    )
    d3, err = d2.check_incoming(notify)
    assert err is None and str(d3.remote_target) == "sip:alice@127.0.0.7"


def test_dialog_needs_tags_and_contact() -> None:
    req = subscribe(contact=False)
    with pytest.raises(SipParseError):
        Dialog.as_uas(req, make_response(req, 200, to_tag="t"))
    with pytest.raises(SipParseError):
        Dialog.as_uas(subscribe(), make_response(subscribe(), 200))


def test_notify_headers_and_event_package() -> None:
    assert notify_headers("reg", SubscriptionState.TERMINATED, expires=5, reason="noresource") == (
        ("Event", "reg"),
        ("Subscription-State", "terminated;reason=noresource"),
    )
    assert notify_headers("x", SubscriptionState.PENDING, expires=-3)[1][1] == "pending;expires=0"
    assert event_package(subscribe()) == "reg"
    assert event_package(subscribe().remove_header("Event")) is None
