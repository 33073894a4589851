"""S-CSCF behaviour driven through its core with an explicit clock:
DefaultHandling when the AS fails or times out, the ISC return route, and
expiry of registrations."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest

from imsp2pd.diameter.message import Message
from imsp2pd.ims.profile import (
    ApplicationServer,
    DefaultHandling,
    IMSSubscription,
    InitialFilterCriteria,
    PublicIdentity,
    ServiceProfile,
    SessionCase,
    Spt,
    TriggerPoint,
    to_xml,
)
from imsp2pd.ims.scscf import Binding, Registration, Scscf, ScscfConfig
from imsp2pd.sip.message import Request, Response, make_response
from imsp2pd.sip.parser import parse_message
from imsp2pd.sip.proxy import LocalAddress, Output, SipCore, Source, Target, Transmit

AS = Target("TCP", "127.0.0.1", 7060)
ICSCF = Target("UDP", "127.0.0.1", 5060)
PCSCF = Source("UDP", "127.0.0.1", 4060)


def user_data(handling: DefaultHandling) -> bytes:
    ifc = InitialFilterCriteria(
        priority=0,
        application_server=ApplicationServer("sip:127.0.0.1:7060", handling),
        trigger=TriggerPoint(
            True,
            (
                Spt(group=(0,), method="MESSAGE"),
                Spt(group=(1,), session_case=SessionCase.ORIGINATING),
            ),
        ),
    )
    sp = ServiceProfile((PublicIdentity("sip:alice@ims.example.org"),), (ifc,))
    return to_xml(IMSSubscription("alice@ims.example.org", (sp,)))


def message(branch: str = "z9hG4bKm1") -> Request:
    text = (
        "MESSAGE sip:content@ims.example.org SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:4060;branch={branch}\r\n"
        "Route: <sip:orig@127.0.0.1:6060;lr>\r\n"
        "P-Asserted-Identity: <sip:alice@ims.example.org>\r\n"
        "From: <sip:alice@ims.example.org>;tag=a\r\nTo: <sip:content@ims.example.org>\r\n"
        "Call-ID: m1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


class Harness:
    def __init__(self, handling: DefaultHandling) -> None:
        self.now = 1000.0
        self.core = SipCore(
            addresses=[
                LocalAddress("UDP", "127.0.0.1", 6060),
                LocalAddress("TCP", "127.0.0.1", 6060),
            ]
        )
        self.cx: list[Message] = []
        self.scscf = Scscf(
            self.core, ScscfConfig(icscf=ICSCF), self.cx_request, clock=lambda: self.now
        )
        self.scscf.node = self
        self.sent: list[Transmit] = []
        reg = Registration(
            "sip:alice@ims.example.org", "alice@ims.example.org", ("sip:alice@ims.example.org",)
        )
        reg.user_data = user_data(handling)
        reg.bindings["sip:alice@127.0.0.5:5060"] = Binding(
            "sip:alice@127.0.0.5:5060", self.now + 60, ("<sip:term@127.0.0.1:4060;lr>",)
        )
        self.scscf.registrar.put(reg)

    def cx_request(self, msg: Message) -> Deferred[Message]:
        self.cx.append(msg)
        return Deferred()  # never answered here

    def submit(self, outputs: list[Output]) -> None:
        queue = list(outputs)
        while queue:
            item = queue.pop(0)
            if isinstance(item, Transmit):
                self.sent.append(item)
            else:
                queue.extend(self.scscf.on_event(item, self.now))

    def receive(self, msg: Any, source: Source = PCSCF) -> None:
        self.submit(self.core.receive(msg, source, self.now))

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while (d := self.core.next_deadline()) is not None and d <= end:
            self.now = d
            self.submit(self.core.on_timer(d))
        self.now = end

    def responses(self) -> list[Response]:
        return [t.message for t in self.sent if isinstance(t.message, Response)]

    def requests_to(self, target: Target) -> list[Request]:
        return [
            t.message
            for t in self.sent
            if isinstance(t.message, Request)
            and (t.target.host, t.target.port) == (target.host, target.port)
        ]


class ScscfTests(unittest.TestCase):
    def test_request_goes_to_the_as_with_a_return_route_and_comes_back(self) -> None:
        h = Harness(DefaultHandling.SESSION_CONTINUED)
        h.receive(message())
        (to_as,) = h.requests_to(AS)
        routes = to_as.get_all("Route")
        self.assertEqual(routes[0], "<sip:127.0.0.1:7060;lr>")
        self.assertTrue(
            routes[1].startswith("<sip:odi-") and routes[1].endswith("@127.0.0.1:6060;lr>")
        )
        # the AS (a proxy here) drops its Route and sends it back along the ODI route:
        # the walk goes on from the next priority, then terminating
        back = to_as.remove_first("Route").prepend_header(
            "Via", "SIP/2.0/TCP 127.0.0.1:7060;branch=z9hG4bKas1"
        )
        h.receive(back, Source("TCP", "127.0.0.1", 7060, flow=1))
        (to_icscf,) = h.requests_to(ICSCF)  # content@ is not registered here: on to the I-CSCF
        self.assertEqual(to_icscf.get_all("Route"), [])
        # the AS answering 200 goes back to the P-CSCF
        h.receive(make_response(to_as, 200, to_tag="as"), Source("TCP", "127.0.0.1", 7060, flow=1))
        self.assertIn(200, [r.status for r in h.responses()])

    def test_as_unreachable_session_terminated_gives_500(self) -> None:
        h = Harness(DefaultHandling.SESSION_TERMINATED)
        h.receive(message())
        tx = h.sent[-1].tx
        assert tx is not None
        h.submit(h.core.transport_error(tx, "connection refused", h.now))
        self.assertEqual(
            [(r.status, r.reason) for r in h.responses()], [(500, "Application Server Unreachable")]
        )

    def test_as_timeout_session_terminated_gives_408(self) -> None:
        h = Harness(DefaultHandling.SESSION_TERMINATED)
        h.receive(message())
        h.advance(40)
        self.assertEqual([r.status for r in h.responses()], [408])

    def test_as_unreachable_session_continued_goes_on(self) -> None:
        h = Harness(DefaultHandling.SESSION_CONTINUED)
        h.receive(message())
        tx = h.sent[-1].tx
        assert tx is not None
        h.submit(h.core.transport_error(tx, "connection refused", h.now))
        self.assertEqual(h.responses(), [])
        self.assertEqual(len(h.requests_to(ICSCF)), 1)

    def test_terminating_request_reaches_the_contact_through_path(self) -> None:
        h = Harness(DefaultHandling.SESSION_CONTINUED)
        grant = parse_message(
            b"MESSAGE sip:alice@ims.example.org SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:7060;branch=z9hG4bKg\r\n"
            b"From: <sip:content@ims.example.org>;tag=p\r\nTo: <sip:alice@ims.example.org>\r\nCall-ID: g\r\n"
            b"CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        h.receive(grant, Source("TCP", "127.0.0.1", 7060, flow=2))
        out = h.sent[-1]
        self.assertEqual((out.target.host, out.target.port), ("127.0.0.1", 4060))
        msg = out.message
        assert isinstance(msg, Request)
        self.assertEqual(str(msg.uri), "sip:alice@127.0.0.5:5060")
        self.assertEqual(msg.get_all("Route"), ["<sip:term@127.0.0.1:4060;lr>"])
        self.assertEqual(msg.get("P-Called-Party-ID"), "<sip:alice@ims.example.org>")

    def test_unregistered_served_user_is_403_and_expiry_sends_sar(self) -> None:
        h = Harness(DefaultHandling.SESSION_CONTINUED)
        h.advance(61)
        gone = h.scscf.expire(h.now)
        self.assertEqual([g.impu for g in gone], ["sip:alice@ims.example.org"])
        self.assertEqual(len(h.cx), 1)  # SAR TIMEOUT_DEREGISTRATION
        h.receive(message(branch="z9hG4bKm2"))
        self.assertEqual([r.status for r in h.responses()], [403])

    def test_rtr_deregisters(self) -> None:
        h = Harness(DefaultHandling.SESSION_CONTINUED)
        self.assertEqual(len(h.scscf.deregister("alice@ims.example.org", [])), 1)
        self.assertIsNone(h.scscf.registrar.find("sip:alice@ims.example.org"))
        self.assertEqual(succeed(None).result, None)
