"""A UAC, a stateful proxy and a UAS on real loopback sockets."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from imsp2pd.sip.message import Request, Response
from imsp2pd.sip.proxy import IncomingRequest, LocalAddress, Output, SipCore, Source, Target
from imsp2pd.sip.transport import SipNode
from imsp2pd.sip.ua import SipRequestFailed, UserAgent, build_request
from tests.integration.labkit import listen_sip


class Proxy:
    def __init__(self, core: SipCore, downstream: Target) -> None:
        self.core = core
        self.downstream = downstream

    def on_event(self, event: Output, now: float) -> list[Output]:
        if isinstance(event, IncomingRequest):
            return self.core.forward(
                event.ctx, event.request, now, target=self.downstream, record_route=True
            )
        return []


class LoopbackTests(unittest.TestCase):
    def setUp(self) -> None:
        self.nodes: list[SipNode] = []
        # UAS
        self.uas_core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 0)])
        self.uas = UserAgent(self.uas_core)
        self.uas_node = self.start(self.uas_core, self.uas)
        self.received: list[tuple[Request, Source]] = []

        def on_message(request: Request, source: Source) -> int:
            self.received.append((request, source))
            return 200

        self.uas.on("MESSAGE", on_message)
        # proxy to the UAS
        self.proxy_core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 0)])
        self.proxy = Proxy(self.proxy_core, Target("TCP", "127.0.0.1", self.uas_port))
        self.proxy_node = self.start(self.proxy_core, self.proxy)
        # UAC
        self.uac_core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 0)])
        self.uac = UserAgent(self.uac_core)
        self.uac_node = self.start(self.uac_core, self.uac)

    def start(self, core: SipCore, tu: Any) -> SipNode:
        node = SipNode(reactor, core, tu)
        if isinstance(tu, UserAgent):
            tu.node = node
        port = listen_sip(node, core)
        if core is getattr(self, "uas_core", None):
            self.uas_port = port
        self.nodes.append(node)
        return node

    def tearDown(self) -> defer.Deferred[Any]:
        return defer.gatherResults([n.stop() for n in self.nodes])

    @defer.inlineCallbacks
    def test_message_through_proxy_udp_then_tcp_downstream(self) -> Any:
        proxy_port = self.proxy_core.addresses[0].port
        for transport, size in (("UDP", 10), ("TCP", 10), ("UDP", 5000)):
            req = build_request(
                "MESSAGE",
                "sip:content@ims.example.org",
                from_uri="sip:alice@ims.example.org",
                body=b"x" * size,
                content_type="text/plain",
            )
            resp = yield self.uac.request(req, target=Target(transport, "127.0.0.1", proxy_port))
            self.assertIsInstance(resp, Response)
            self.assertEqual(resp.status, 200)
            # §18.1.1: the 5000-byte request the UAC aimed at UDP went over TCP
            self.assertEqual(
                resp.get("Record-Route"),
                f"<sip:127.0.0.1:{proxy_port};lr>"
                if transport == "UDP" and size <= 1300
                else f"<sip:127.0.0.1:{proxy_port};transport=tcp;lr>",
            )
        self.assertEqual(len(self.received), 3)
        request, source = self.received[-1]
        self.assertEqual(source.transport, "TCP")
        self.assertEqual(len(request.body), 5000)
        self.assertEqual(len(request.vias), 2)
        self.assertEqual(request.max_forwards, 69)

    @defer.inlineCallbacks
    def test_unreachable_next_hop_is_500(self) -> Any:
        self.proxy.downstream = Target("TCP", "127.0.0.1", 1)  # nothing listens on port 1
        req = build_request(
            "MESSAGE", "sip:content@ims.example.org", from_uri="sip:alice@ims.example.org"
        )
        resp = yield self.uac.request(
            req, target=Target("TCP", "127.0.0.1", self.proxy_core.addresses[0].port)
        )
        self.assertEqual(resp.status, 500)

    @defer.inlineCallbacks
    def test_uac_to_a_dead_tcp_port_fails(self) -> Any:
        req = build_request("MESSAGE", "sip:x@127.0.0.1", from_uri="sip:alice@ims.example.org")
        with self.assertRaises(SipRequestFailed):
            yield self.uac.request(req, target=Target("TCP", "127.0.0.1", 1))

    @defer.inlineCallbacks
    def test_udp_to_a_host_name_fails_without_resolving_it(self) -> Any:
        # the node writes to its UDP socket itself; a name must not reach
        # sendto (which would resolve it, blocking the reactor)
        req = build_request("MESSAGE", "sip:x@127.0.0.1", from_uri="sip:alice@ims.example.org")
        with self.assertRaises(SipRequestFailed) as caught:
            yield self.uac.request(req, target=Target("UDP", "localhost", self.uas_port))
        self.assertIn("not an IP address", str(caught.exception))
        self.assertEqual(self.uac_node.counts["dropped"], 1)
        self.assertEqual(self.received, [])

    def test_udp_datagram_too_large_for_the_socket_is_dropped(self) -> None:
        # EMSGSIZE from sendto is counted as a drop, not raised into the reactor
        self.uac_node._send_udp(b"x" * 70000, "127.0.0.1", self.uas_port)
        self.uac_node._flush_udp()  # what the reactor does once it has read what was ready
        self.assertEqual(self.uac_node.counts["dropped"], 1)
