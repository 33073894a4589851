"""The Twisted SIP transports around the core, with a memory reactor, a
fake clock and string transports."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from imsp2pd.sip.message import Request, Response, make_response
from imsp2pd.sip.parser import parse_message
from imsp2pd.sip.proxy import IncomingRequest, LocalAddress, Output, SipCore, Target
from imsp2pd.sip.transport import SipNode
from imsp2pd.sip.ua import UserAgent, build_request


class Reactor(MemoryReactorClock):
    """MemoryReactorClock with a recording listenUDP."""

    def __init__(self) -> None:
        super().__init__()
        self.udpServers: list[tuple[int, Any]] = []

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> Any:
        self.udpServers.append((port, protocol))
        return self.listenTCP(port, None)  # a stoppable fake port


class FakeUDP:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.fail = False

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.fail:
            raise OSError("network unreachable")
        self.sent.append((data, addr))


class ForwardTU:
    """Forwards every request to one target (a minimal proxy TU)."""

    def __init__(self, core: SipCore, target: Target | None) -> None:
        self.core = core
        self.target = target
        self.events: list[Output] = []

    def on_event(self, event: Output, now: float) -> list[Output]:
        self.events.append(event)
        if isinstance(event, IncomingRequest):
            if self.target is None:
                return self.core.reply(event.ctx, 200, now)
            return self.core.forward(
                event.ctx, event.request, now, target=self.target, record_route=True
            )
        return []


def message(branch: str = "z9hG4bKp1", body: bytes = b"hi", extra: str = "") -> bytes:
    head = (
        "MESSAGE sip:content@ims.example.org SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.5:5099;branch={branch};rport\r\n"
        "From: <sip:alice@ims.example.org>;tag=a\r\n"
        "To: <sip:content@ims.example.org>\r\n"
        "Call-ID: cid@127.0.0.5\r\n"
        "CSeq: 1 MESSAGE\r\n"
        "Max-Forwards: 70\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class NodeTests(unittest.TestCase):
    def make(self, target: Target | None = None) -> tuple[SipNode, ForwardTU, Reactor, FakeUDP]:
        reactor = Reactor()
        core = SipCore(
            addresses=[
                LocalAddress("UDP", "127.0.0.1", 4060),
                LocalAddress("TCP", "127.0.0.1", 4060),
            ]
        )
        tu = ForwardTU(core, target)
        node = SipNode(reactor, core, tu, max_message=4096)
        node.listen_udp(4060)
        node.listen_tcp(4060)
        udp = FakeUDP()
        assert node._udp is not None
        node._udp.makeConnection(udp)  # type: ignore[arg-type]
        return node, tu, reactor, udp

    def tcp_client(
        self, reactor: MemoryReactorClock, port: int = 51000
    ) -> tuple[Any, StringTransport]:
        factory = reactor.tcpServers[1][1]
        proto = factory.buildProtocol(None)
        tr = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.9", port))
        proto.makeConnection(tr)
        return proto, tr

    def test_udp_request_answered_at_the_rport_address(self) -> None:
        node, tu, reactor, udp = self.make()
        node._udp.datagramReceived(message(), ("127.0.0.7", 40000))  # type: ignore[union-attr]
        ((data, addr),) = udp.sent
        resp = parse_message(data)
        assert isinstance(resp, Response)
        self.assertEqual((resp.status, addr), (200, ("127.0.0.7", 40000)))
        self.assertEqual(resp.top_via.param("received"), "127.0.0.7")

    def test_malformed_udp_request_gets_400_naming_the_fault(self) -> None:
        node, tu, reactor, udp = self.make()
        bad = message().replace(b"CSeq: 1 MESSAGE", b"CSeq: 1 INVITE")
        node._udp.datagramReceived(bad, ("127.0.0.7", 40000))  # type: ignore[union-attr]
        ((data, addr),) = udp.sent
        self.assertTrue(data.startswith(b"SIP/2.0 400 CSeq method does not match"))
        self.assertEqual(addr, ("127.0.0.7", 40000))
        node._udp.datagramReceived(b"\x00\x01junk", ("127.0.0.7", 40000))  # type: ignore[union-attr]
        self.assertEqual(len(udp.sent), 1)  # dropped
        self.assertEqual(node.stats["bad"], 2)
        self.assertEqual(tu.events, [])

    def test_tcp_framing_keepalive_oversize_and_pipelining(self) -> None:
        node, tu, reactor, udp = self.make()
        proto, tr = self.tcp_client(reactor)
        proto.dataReceived(b"\r\n\r\n")
        self.assertEqual(tr.value(), b"\r\n")
        tr.clear()
        big = message(branch="z9hG4bKbig", body=b"x" * 5000)
        proto.dataReceived(big + message(branch="z9hG4bKa") + message(branch="z9hG4bKb")[:50])
        out = tr.value()
        self.assertTrue(out.startswith(b"SIP/2.0 513 Message too large"))
        self.assertEqual(out.count(b"SIP/2.0 200 OK"), 1)
        proto.dataReceived(message(branch="z9hG4bKb")[50:])
        self.assertEqual(tr.value().count(b"SIP/2.0 200 OK"), 2)
        self.assertFalse(tr.disconnecting)

    def test_tcp_bad_framing_closes_after_400(self) -> None:
        node, tu, reactor, udp = self.make()
        proto, tr = self.tcp_client(reactor)
        proto.dataReceived(message().replace(b"Content-Length: 2", b"Content-Length: two"))
        self.assertTrue(tr.value().startswith(b"SIP/2.0 400 Bad Content-Length"))
        self.assertTrue(tr.disconnecting)

    def test_forward_over_new_tcp_connection_and_relay_response_on_flow(self) -> None:
        node, tu, reactor, udp = self.make(Target("TCP", "127.0.0.1", 6060))
        proto, ue = self.tcp_client(reactor)
        proto.dataReceived(message())
        host, port, factory, _, _ = reactor.tcpClients[0]
        self.assertEqual((host, port), ("127.0.0.1", 6060))
        down = factory.buildProtocol(None)
        down_tr = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 6060))
        down.makeConnection(down_tr)
        fwd = parse_message(down_tr.value(), stream=True)
        assert isinstance(fwd, Request)
        self.assertEqual(fwd.top_via.transport, "TCP")
        self.assertEqual(fwd.get("Record-Route"), "<sip:127.0.0.1:4060;transport=tcp;lr>")
        down.dataReceived(make_response(fwd, 202, to_tag="as").encode())
        self.assertTrue(ue.value().startswith(b"SIP/2.0 202 Accepted"))
        # a second request reuses the downstream connection
        proto.dataReceived(message(branch="z9hG4bKp2"))
        self.assertEqual(len(reactor.tcpClients), 1)
        self.assertEqual(down_tr.value().count(b"MESSAGE sip:"), 2)

    def test_connection_refused_gives_500_upstream(self) -> None:
        node, tu, reactor, udp = self.make(Target("TCP", "127.0.0.1", 6061))
        node._udp.datagramReceived(message(), ("127.0.0.7", 40000))  # type: ignore[union-attr]
        factory = reactor.tcpClients[0][2]
        from twisted.internet.error import ConnectionRefusedError
        from twisted.python.failure import Failure

        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        statuses = [parse_message(d).status for d, _ in udp.sent]  # type: ignore[union-attr]
        self.assertEqual(statuses, [500])

    def test_large_request_for_a_udp_target_goes_over_tcp(self) -> None:
        """§18.1.1 at the transport: a 2 kB request a role sends to a UDP
        address leaves over a new TCP connection to the same address, not a
        datagram; when nobody listens there, upstream learns of it (500)."""
        node, tu, reactor, udp = self.make(Target("UDP", "127.0.0.1", 6060))
        proto, ue = self.tcp_client(reactor)
        proto.dataReceived(message(body=b"x" * 2000))
        self.assertEqual(udp.sent, [])
        host, port, factory, _, _ = reactor.tcpClients[0]
        self.assertEqual((host, port), ("127.0.0.1", 6060))
        down = factory.buildProtocol(None)
        down_tr = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 6060))
        down.makeConnection(down_tr)
        fwd = parse_message(down_tr.value(), stream=True)
        assert isinstance(fwd, Request)
        self.assertEqual(fwd.top_via.transport, "TCP")
        down.dataReceived(make_response(fwd, 202, to_tag="as").encode())
        self.assertTrue(ue.value().startswith(b"SIP/2.0 202 Accepted"))
        # a small one still goes as a datagram
        proto.dataReceived(message(branch="z9hG4bKsmall"))
        self.assertEqual(len(udp.sent), 1)
        self.assertEqual(udp.sent[0][1], ("127.0.0.1", 6060))

    def test_large_request_to_a_udp_only_peer_is_a_transport_error(self) -> None:
        from twisted.internet.error import ConnectionRefusedError
        from twisted.python.failure import Failure

        node, tu, reactor, udp = self.make(Target("UDP", "127.0.0.1", 6062))
        proto, ue = self.tcp_client(reactor)
        proto.dataReceived(message(body=b"x" * 2000))
        factory = reactor.tcpClients[0][2]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertTrue(ue.value().startswith(b"SIP/2.0 500 Next Hop Unreachable"))
        self.assertEqual(udp.sent, [])

    def test_udp_retransmissions_then_408_driven_by_the_clock(self) -> None:
        node, tu, reactor, udp = self.make(Target("UDP", "127.0.0.1", 6060))
        node._udp.datagramReceived(message(), ("127.0.0.7", 40000))  # type: ignore[union-attr]
        self.assertEqual(len(udp.sent), 1)
        reactor.advance(0.5)
        self.assertEqual(len(udp.sent), 2)
        for _ in range(80):
            reactor.advance(0.5)
        to_ue = [parse_message(d) for d, a in udp.sent if a == ("127.0.0.7", 40000)]
        self.assertEqual([r.status for r in to_ue], [408])  # type: ignore[union-attr]
        self.assertGreaterEqual(len(udp.sent), 10)

    def test_udp_send_error_is_a_transport_error(self) -> None:
        node, tu, reactor, udp = self.make(Target("UDP", "127.0.0.1", 6060))
        udp.fail = True
        node._udp.datagramReceived(message(), ("127.0.0.7", 40000))  # type: ignore[union-attr]
        self.assertEqual(node.stats["dropped"], 2)  # the MESSAGE and then the 500 itself

    def test_tu_exception_becomes_500(self) -> None:
        node, tu, reactor, udp = self.make()

        def boom(event: Output, now: float) -> list[Output]:
            raise RuntimeError("bug")

        tu.on_event = boom  # type: ignore[method-assign]
        node._udp.datagramReceived(message(), ("127.0.0.7", 40000))  # type: ignore[union-attr]
        self.assertEqual(parse_message(udp.sent[0][0]).status, 500)  # type: ignore[union-attr]
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class UserAgentTests(unittest.TestCase):
    def test_digest_retry_and_handlers(self) -> None:
        reactor = Reactor()
        core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 5070)])
        ua = UserAgent(core)
        node = SipNode(reactor, core, ua)
        ua.node = node
        node.listen_udp(5070)
        udp = FakeUDP()
        node._udp.makeConnection(udp)  # type: ignore[union-attr,arg-type]
        req = build_request("REGISTER", "sip:ims.example.org", from_uri="sip:alice@ims.example.org")
        results: list[Response] = []
        ua.request(
            req,
            target=Target("UDP", "127.0.0.1", 4060),
            credentials=("alice@ims.example.org", "alice-pass"),
        ).addCallback(results.append)
        first = parse_message(udp.sent[0][0])
        assert isinstance(first, Request)
        chal = make_response(
            first,
            401,
            to_tag="r",
            extra=(
                (
                    "WWW-Authenticate",
                    'Digest realm="ims.example.org", nonce="abc", qop="auth", algorithm=MD5',
                ),
            ),
        )
        node._udp.datagramReceived(chal.encode(), ("127.0.0.1", 4060))  # type: ignore[union-attr]
        second = parse_message(udp.sent[-1][0])
        assert isinstance(second, Request)
        self.assertEqual(second.cseq.seq, 2)
        self.assertIn('username="alice@ims.example.org"', second.get("Authorization") or "")
        node._udp.datagramReceived(
            make_response(second, 200, to_tag="r").encode(), ("127.0.0.1", 4060)
        )  # type: ignore[union-attr]
        self.assertEqual([r.status for r in results], [200])
        # handlers: registered method gets the int status, others 405
        ua.on("MESSAGE", lambda request, source: 202)
        node._udp.datagramReceived(message(), ("127.0.0.7", 40000))  # type: ignore[union-attr]
        self.assertTrue(udp.sent[-1][0].startswith(b"SIP/2.0 202"))
        node._udp.datagramReceived(
            message(branch="z9hG4bKo").replace(b"MESSAGE", b"OPTIONS"), ("127.0.0.7", 40000)
        )  # type: ignore[union-attr]
        self.assertTrue(udp.sent[-1][0].startswith(b"SIP/2.0 405"))
        self.assertIn(b"Allow: MESSAGE", udp.sent[-1][0])
