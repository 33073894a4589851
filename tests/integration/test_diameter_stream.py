"""Diameter over real loopback TCP: answers far larger than the socket
buffers (sent in parts) interleaved with small ones reach their requests
whole and in order, and an answer sent just before a close (DPA) arrives."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from imsp2pd.diameter import cx
from imsp2pd.diameter.codes import Application, ResultCode, TgppAvp, Vendor
from imsp2pd.diameter.message import Message
from imsp2pd.diameter.node import DiameterNode, PeerConfig
from imsp2pd.diameter.peer import LocalConfig, PeerInfo
from tests.integration.labkit import wait_until

REALM = "ims.example.org"
CX = ((Vendor.TGPP, Application.CX),)
ME = cx.Origin("icscf.ims.example.org", REALM)
HSS = "hss.ims.example.org"


def payload(n: int, size: int) -> bytes:
    """``size`` bytes that tell which answer they belong to, all through."""
    unit = f"<{n:05d}>".encode()
    return (unit * (size // len(unit) + 1))[:size]


class StreamTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        node: DiameterNode

        def handler(req: Message, peer: PeerInfo) -> Message:
            # the size wanted and the request's number are in its Public-Identity
            n, size = (int(x) for x in (req.get_str(TgppAvp.PUBLIC_IDENTITY) or "")[4:].split("-"))
            data = node.dictionary.make(TgppAvp.USER_DATA, payload(n, size))
            return node.answer(req, ResultCode.SUCCESS, [data])

        node = DiameterNode(
            reactor, LocalConfig(HSS, REALM, vendor_applications=CX), handler=handler
        )
        port = node.listen(0).getHost().port
        self.addCleanup(node.stop)
        self.server = node
        self.client = DiameterNode(
            reactor,
            LocalConfig(ME.host, REALM, vendor_applications=CX),
            peers=[PeerConfig(HSS, REALM, "127.0.0.1", port)],
        )
        self.client.start()
        self.addCleanup(self.client.stop)
        self.ids = cx.SessionIds(ME.host, reactor.seconds())

    def ask(self, n: int, size: int) -> defer.Deferred[Message]:
        return self.client.request(cx.lir(ME, self.ids.next(), REALM, f"sip:{n}-{size}"))

    @defer.inlineCallbacks
    def test_large_and_small_answers_arrive_whole_and_in_order(self) -> Any:
        yield wait_until(lambda: self.client.is_available(HSS))
        sizes = [10, 3_000_000, 200, 70_000, 5_000_000, 1, 4_000, 2_500_000, 30]
        asked = [(n, size, self.ask(n, size)) for n, size in enumerate(sizes * 3)]
        answers = yield defer.gatherResults([d for _, _, d in asked])
        for (n, size, _), ans in zip(asked, answers, strict=True):
            self.assertEqual(ans.result_code, ResultCode.SUCCESS)
            self.assertEqual(ans.find(TgppAvp.USER_DATA).value, payload(n, size))

    @defer.inlineCallbacks
    def test_an_answer_sent_before_a_close_arrives(self) -> Any:
        # The client's DPR: the server answers DPA and closes in one go; the DPA
        # is sent before the connection is closed.
        yield wait_until(lambda: self.client.is_available(HSS))
        ans = yield self.ask(1, 100)
        self.assertEqual(ans.result_code, ResultCode.SUCCESS)
        reasons: list[str] = []
        self.client.on_peer_down.append(lambda host, reason: reasons.append(reason))
        yield self.client.stop()
        self.assertEqual(reasons, ["disconnected by DPR/DPA"])
