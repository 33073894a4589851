"""Two SIP nodes of one process on real loopback sockets, sharing one
LocalHops: what one sends the other still crosses the socket, and is taken
as sent instead of parsed again."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from imsp2pd.local_hops import LocalHops
from imsp2pd.sip.message import Message, Request, Response
from imsp2pd.sip.parser import parse_message
from imsp2pd.sip.proxy import LocalAddress, SipCore, Source, Target
from imsp2pd.sip.transport import SipNode
from imsp2pd.sip.ua import UserAgent, build_request
from tests.integration.labkit import listen_sip


class LocalHopsTests(unittest.TestCase):
    def setUp(self) -> None:
        self.hops: LocalHops[Message] = LocalHops(check=parse_message)
        self.nodes: list[SipNode] = []
        self.uas, self.uas_port = self.start()
        self.received: list[Request] = []

        def on_message(request: Request, source: Source) -> int:
            self.received.append(request)
            return 200

        self.uas.on("MESSAGE", on_message)
        self.uac, _ = self.start()

    def start(self) -> tuple[UserAgent, int]:
        core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 0)])
        ua = UserAgent(core)
        node = SipNode(reactor, core, ua, local_hops=self.hops)
        ua.node = node
        port = listen_sip(node, core)
        self.nodes.append(node)
        return ua, port

    def tearDown(self) -> defer.Deferred[Any]:
        return defer.gatherResults([n.stop() for n in self.nodes])

    def message(self, body: bytes = b"hello") -> Request:
        return build_request(
            "MESSAGE",
            "sip:content@ims.example.org",
            from_uri="sip:alice@ims.example.org",
            body=body,
            content_type="text/plain",
        )

    @defer.inlineCallbacks
    def test_a_request_and_its_response_are_taken_not_parsed(self) -> Any:
        resp = yield self.uac.request(
            self.message(), target=Target("UDP", "127.0.0.1", self.uas_port)
        )
        self.assertIsInstance(resp, Response)
        self.assertEqual(resp.status, 200)
        self.assertEqual(self.received[0].body, b"hello")
        # the MESSAGE and its 200, each parsed too (the check) and found equal
        self.assertEqual(self.hops.taken, 2)
        self.assertEqual(self.hops.mismatches, 0)
        self.assertEqual(len(self.hops), 0)

    @defer.inlineCallbacks
    def test_what_goes_elsewhere_is_not_kept_and_stopped_nodes_leave(self) -> Any:
        outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(outside.close)
        outside.bind(("127.0.0.1", 0))
        outside.setblocking(False)
        d = self.uac.request(self.message(), target=Target("UDP", *outside.getsockname()))
        d.addErrback(lambda _: None)  # never answered: times out after the test
        yield pause()
        self.assertEqual(len(self.hops), 0)
        data, _ = outside.recvfrom(65535)
        self.assertEqual(parse_message(data).method, "MESSAGE")
        # the same bytes from a socket of no node are parsed as always
        outside.sendto(data, ("127.0.0.1", self.uas_port))
        yield pause()
        self.assertEqual(len(self.received), 1)
        self.assertEqual(self.hops.taken, 0)
        # a stopped node's address is no longer local
        uas_node = self.nodes.pop(0)
        yield uas_node.stop()
        self.assertFalse(self.hops.is_local("127.0.0.1", self.uas_port))


def pause() -> defer.Deferred[None]:
    return task.deferLater(reactor, 0.05, lambda: None)
