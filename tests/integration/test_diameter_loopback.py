"""Diameter nodes over real loopback TCP: routing, a server that goes away, reconnection, failover."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from imsp2pd.diameter import cx
from imsp2pd.diameter.codes import Application, ResultCode, Vendor
from imsp2pd.diameter.errors import PeerUnavailable
from imsp2pd.diameter.message import Message
from imsp2pd.diameter.node import Backoff, DiameterNode, PeerConfig
from imsp2pd.diameter.peer import LocalConfig, PeerInfo
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
