"""Diameter nodes over real loopback TCP: routing, a server that goes away, reconnection, failover."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from imsp2pd.diameter import cx
from imsp2pd.diameter.codes import Application, ResultCode, Vendor
from imsp2pd.diameter.errors import PeerUnavailable
from imsp2pd.diameter.message import Message
from imsp2pd.diameter.node import Backoff, DiameterNode, PeerConfig, _decode
from imsp2pd.diameter.peer import LocalConfig, PeerInfo
from imsp2pd.local_hops import LocalHops
from tests.integration.labkit import wait_until

REALM = "ims.example.org"
CX = ((Vendor.TGPP, Application.CX),)
ME = cx.Origin("icscf.ims.example.org", REALM)


class LoopbackTests(TestCase):
    timeout = 60

    def server(self, name: str, port: int = 0) -> tuple[DiameterNode, int]:
        node: DiameterNode

        def handler(req: Message, peer: PeerInfo) -> Message:
            return node.answer(req, ResultCode.SUCCESS)

        node = DiameterNode(
            reactor, LocalConfig(name, REALM, vendor_applications=CX), handler=handler
        )
        listening = node.listen(port)
        self.addCleanup(node.stop)
        return node, listening.getHost().port

    @defer.inlineCallbacks
    def test_restart_reconnect_and_failover(self) -> Any:
        hss1, port1 = self.server("hss1.ims.example.org")
        hss2, port2 = self.server("hss2.ims.example.org")
        client = DiameterNode(
            reactor,
            LocalConfig(ME.host, REALM, vendor_applications=CX),
            peers=[
                PeerConfig("hss1.ims.example.org", REALM, "127.0.0.1", port1),
                PeerConfig("hss2.ims.example.org", REALM, "127.0.0.1", port2),
            ],
            backoff=Backoff(initial=0.1, maximum=0.5),
        )
        client.start()
        self.addCleanup(client.stop)
        ids = cx.SessionIds(ME.host, reactor.seconds())
        yield wait_until(
            lambda: (
                client.is_available("hss1.ims.example.org")
                and client.is_available("hss2.ims.example.org")
            )
        )
        ans = yield client.request(cx.lir(ME, ids.next(), REALM, "sip:a@x"))
        self.assertEqual(ans.origin_host, "hss1.ims.example.org")  # the primary
        ans = yield client.request(
            cx.lir(ME, ids.next(), REALM, "sip:a@x", dest_host="hss2.ims.example.org")
        )
        self.assertEqual(ans.origin_host, "hss2.ims.example.org")

        # hss1 shuts down cleanly (DPR): traffic moves to hss2 at once.
        yield hss1.stop()
        yield wait_until(lambda: not client.is_available("hss1.ims.example.org"))
        ans = yield client.request(cx.lir(ME, ids.next(), REALM, "sip:a@x"))
        self.assertEqual(ans.origin_host, "hss2.ims.example.org")

        # hss1 comes back on the same port: the client reconnects by itself.
        hss1b, _ = self.server("hss1.ims.example.org", port1)
        yield wait_until(lambda: client.is_available("hss1.ims.example.org"))
        ans = yield client.request(cx.lir(ME, ids.next(), REALM, "sip:a@x"))
        self.assertEqual(ans.origin_host, "hss1.ims.example.org")

        # Both gone: a clear, immediate error rather than a hang.
        yield hss1b.stop()
        yield hss2.stop()
        yield wait_until(lambda: not client.is_available())
        with self.assertRaises(PeerUnavailable):
            yield client.request(cx.lir(ME, ids.next(), REALM, "sip:a@x"))

    @defer.inlineCallbacks
    def test_local_hops_between_two_nodes_of_one_process(self) -> Any:
        """Two nodes sharing the process's local hops (checked against decoding)
        over real loopback TCP: each takes what the other sent instead of
        decoding it, the bytes still cross the socket, and the endpoints are
        forgotten when the nodes stop."""
        hops: LocalHops[Message] = LocalHops(check=_decode)
        seen: list[bytes] = []
        server = DiameterNode(
            reactor,
            LocalConfig("hss.ims.example.org", REALM, vendor_applications=CX),
            handler=lambda req, peer: server.answer(req, ResultCode.SUCCESS),
            local_hops=hops,
            tap=lambda direction, data, proto: seen.append(data) if direction == "in" else None,
        )
        port = server.listen(0).getHost().port
        self.assertTrue(hops.is_local("127.0.0.1", port))
        client = DiameterNode(
            reactor,
            LocalConfig(ME.host, REALM, vendor_applications=CX),
            peers=[PeerConfig("hss.ims.example.org", REALM, "127.0.0.1", port)],
            local_hops=hops,
        )
        client.start()
        yield wait_until(lambda: client.is_available("hss.ims.example.org"))
        ids = cx.SessionIds(ME.host, reactor.seconds())
        before = len(seen)
        for n in range(5):
            ans = yield client.request(cx.lir(ME, ids.next(), REALM, f"sip:u{n}@x"))
            self.assertEqual(ans.result_code, ResultCode.SUCCESS)
            self.assertEqual(ans.origin_host, "hss.ims.example.org")
        self.assertEqual(len(seen) - before, 5)  # the requests crossed the socket
        self.assertEqual((hops.taken, hops.mismatches), (10, 0))
        self.assertEqual(len(hops), 0)
        (proto,) = client._open.values()
        assert proto.transport is not None
        ours = proto.transport.getHost()
        self.assertTrue(hops.is_local(ours.host, ours.port))
        yield client.stop()
        yield server.stop()
        self.assertFalse(hops.is_local("127.0.0.1", port))
        yield wait_until(lambda: not hops.is_local(ours.host, ours.port))  # connection lost
