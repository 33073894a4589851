"""The Twisted Diameter adapter on in-memory transports and a fake clock."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump, connect
from twisted.trial import unittest

from imsp2pd.diameter.codes import Application, AvpCode, Command, ResultCode, TgppAvp, Vendor
from imsp2pd.diameter.dictionary import default_dictionary
from imsp2pd.diameter.errors import PeerUnavailable, RequestTimeout
from imsp2pd.diameter.message import Framer, Message, decode_message, request
from imsp2pd.diameter.node import Backoff, DiameterNode, PeerConfig, _ServerFactory
from imsp2pd.diameter.peer import LocalConfig, PeerInfo, WatchdogState
from imsp2pd.metrics import Registry

D = default_dictionary()
REALM = "ims.example.org"
CX = ((Vendor.TGPP, Application.CX),)


def local(host: str, **kw: Any) -> LocalConfig:
    kw.setdefault("vendor_applications", CX)
    kw.setdefault("watchdog_jitter", 0.0)
    kw.setdefault("reopen_dwas", 1)
    return LocalConfig(origin_host=host, origin_realm=REALM, **kw)


def lir(dest_host: str | None = None) -> Message:
    avps = [
        D.make(AvpCode.SESSION_ID, "scscf;1"),
        D.group(
            AvpCode.VENDOR_SPECIFIC_APPLICATION_ID,
            D.make(AvpCode.VENDOR_ID, 10415),
            D.make(AvpCode.AUTH_APPLICATION_ID, Application.CX),
        ),
        D.make(AvpCode.AUTH_SESSION_STATE, 1),
        D.make(AvpCode.ORIGIN_HOST, "scscf.ims.example.org"),
        D.make(AvpCode.ORIGIN_REALM, REALM),
        D.make(AvpCode.DESTINATION_REALM, REALM),
        D.make(TgppAvp.PUBLIC_IDENTITY, "sip:alice@ims.example.org"),
    ]
    if dest_host:
        avps.append(D.make(AvpCode.DESTINATION_HOST, dest_host))
    return request(Command.LOCATION_INFO, Application.CX, avps)


class Lab:
    """A client node and server nodes sharing one MemoryReactorClock, wired with iosim."""

    def __init__(
        self,
        servers: tuple[str, ...] = ("hss.ims.example.org",),
        metrics: Registry | None = None,
    ) -> None:
        self.reactor = MemoryReactorClock()
        self.calls: dict[str, list[Message]] = {}
        self.servers: dict[str, DiameterNode] = {}
        self.hold = False
        self.held: list[tuple[Message, defer.Deferred[Message]]] = []
        for i, name in enumerate(servers):
            node = DiameterNode(
                self.reactor, local(name), handler=self._handler(name), metrics=metrics
            )
            node.listen(3868 + i)
            self.servers[name] = node
        self.client = DiameterNode(
            self.reactor,
            local("scscf.ims.example.org"),
            peers=[
                PeerConfig(name, REALM, "127.0.0.1", 3868 + i) for i, name in enumerate(servers)
            ],
            backoff=Backoff(initial=1.0, maximum=8.0),
            metrics=metrics,
        )
        self.pumps: dict[str, IOPump] = {}

    def _handler(self, name: str) -> Any:
        def handle(req: Message, peer: PeerInfo) -> Message | defer.Deferred[Message]:
            self.calls.setdefault(name, []).append(req)
            ans = self.servers[name].answer(req, ResultCode.SUCCESS)
            if self.hold:
                d: defer.Deferred[Message] = defer.Deferred()
                self.held.append((ans, d))
                return d
            return ans

        return handle

    def connect_pending(self) -> None:
        """Complete every connectTCP the client made, to the server listening on its port."""
        ports = {3868 + i: name for i, name in enumerate(self.servers)}
        while self.reactor.tcpClients:
            host, port, factory, timeout, bind = self.reactor.tcpClients.pop(0)
            name = ports[port]
            server_factory = next(f for p, f, *_ in self.reactor.tcpServers if p == port)
            cproto = factory.buildProtocol(None)
            sproto = server_factory.buildProtocol(None)
            self.pumps[name] = connect(
                sproto,
                FakeTransport(sproto, isServer=True),
                cproto,
                FakeTransport(cproto, isServer=False),
            )

    def pump(self) -> None:
        for p in self.pumps.values():
            p.flush()

    def advance(self, seconds: float, step: float = 1.0) -> None:
        left = seconds
        while left > 0:
            self.reactor.advance(min(step, left))
            left -= step
            self.pump()


class NodeTests(unittest.TestCase):
    def test_connect_exchange_capabilities_and_route(self) -> None:
        lab = Lab()
        lab.client.start()
        lab.connect_pending()
        self.assertEqual([p.origin_host for p in lab.client.open_peers()], ["hss.ims.example.org"])
        self.assertTrue(lab.client.is_available(realm=REALM))
        d = lab.client.request(lir())
        lab.pump()
        ans = self.successResultOf(d)
        self.assertEqual(ans.result_code, ResultCode.SUCCESS)
        self.assertEqual(ans.origin_host, "hss.ims.example.org")
        self.assertEqual(len(lab.calls["hss.ims.example.org"]), 1)

    def test_no_peer_fails_fast(self) -> None:
        lab = Lab()
        failure = self.failureResultOf(lab.client.request(lir()))
        failure.trap(PeerUnavailable)

    def test_wrong_realm_is_unavailable(self) -> None:
        lab = Lab()
        lab.client.start()
        lab.connect_pending()
        req = lir()
        req = Message(
            req.code,
            req.application,
            req.flags,
            0,
            0,
            tuple(
                D.make(AvpCode.DESTINATION_REALM, "elsewhere.org")
                if a.code == AvpCode.DESTINATION_REALM
                else a
                for a in req.avps
            ),
        )
        self.failureResultOf(lab.client.request(req)).trap(PeerUnavailable)

    def test_destination_host_picks_the_peer(self) -> None:
        lab = Lab(("hss1.ims.example.org", "hss2.ims.example.org"))
        lab.client.start()
        lab.connect_pending()
        d = lab.client.request(lir("hss2.ims.example.org"))
        lab.pump()
        self.assertEqual(self.successResultOf(d).origin_host, "hss2.ims.example.org")
        d = lab.client.request(lir())
        lab.pump()
        self.assertEqual(
            self.successResultOf(d).origin_host, "hss1.ims.example.org"
        )  # primary first

    def test_timeout(self) -> None:
        lab = Lab()
        lab.hold = True
        lab.client.start()
        lab.connect_pending()
        d = lab.client.request(lir(), timeout=3.0)
        lab.pump()
        lab.advance(3.0)
        self.failureResultOf(d).trap(RequestTimeout)

    def test_failover_when_watchdog_suspects_a_peer(self) -> None:
        lab = Lab(("hss1.ims.example.org", "hss2.ims.example.org"))
        lab.client.start()
        lab.connect_pending()
        lab.hold = True
        d = lab.client.request(lir(), timeout=500.0)
        lab.pump()
        self.assertEqual(len(lab.calls["hss1.ims.example.org"]), 1)
        # hss1 goes silent: nothing it writes reaches the client any more.
        silent = lab.pumps.pop("hss1.ims.example.org")
        lab.hold = False
        lab.advance(61.0)  # Tw: DWR; 2 Tw: SUSPECT -> failover
        ans = self.successResultOf(d)
        self.assertEqual(ans.origin_host, "hss2.ims.example.org")
        retried = lab.calls["hss2.ims.example.org"][0]
        self.assertTrue(retried.is_retransmission)
        self.assertEqual(retried.end_to_end, lab.calls["hss1.ims.example.org"][0].end_to_end)
        self.assertFalse(lab.client.is_available(host="hss1.ims.example.org"))
        del silent

    def test_handler_failure_answers_5012(self) -> None:
        lab = Lab()

        def broken(req: Message, peer: PeerInfo) -> Message:
            raise RuntimeError("boom")

        lab.servers["hss.ims.example.org"].handler = broken
        lab.client.start()
        lab.connect_pending()
        d = lab.client.request(lir())
        lab.pump()
        self.assertEqual(self.successResultOf(d).result_code, ResultCode.UNABLE_TO_COMPLY)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_handler_deferred_failure_answers_5012(self) -> None:
        lab = Lab()

        def broken(req: Message, peer: PeerInfo) -> defer.Deferred[Message]:
            return defer.fail(RuntimeError("later boom"))

        lab.servers["hss.ims.example.org"].handler = broken
        lab.client.start()
        lab.connect_pending()
        d = lab.client.request(lir())
        lab.pump()
        self.assertEqual(self.successResultOf(d).result_code, ResultCode.UNABLE_TO_COMPLY)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_reconnects_with_backoff_after_refusal(self) -> None:
        lab = Lab()
        lab.client.start()
        _, _, factory, _, _ = lab.reactor.tcpClients.pop(0)
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(lab.reactor.tcpClients, [])
        lab.reactor.advance(1.0)  # initial backoff (0.8..1.0 s)
        self.assertEqual(len(lab.reactor.tcpClients), 1)
        _, _, factory, _, _ = lab.reactor.tcpClients.pop(0)
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        lab.reactor.advance(1.0)
        self.assertEqual(lab.reactor.tcpClients, [])  # second wait is longer (1.6..2 s)
        lab.reactor.advance(1.0)
        self.assertEqual(len(lab.reactor.tcpClients), 1)
        lab.connect_pending()
        self.assertTrue(lab.client.is_available())

    def test_reconnect_after_peer_closes_reopens_with_a_dwa(self) -> None:
        lab = Lab()
        lab.client.start()
        lab.connect_pending()
        pump = lab.pumps["hss.ims.example.org"]
        pump.server.transport.loseConnection()
        pump.flush()
        self.assertFalse(lab.client.is_available())
        lab.advance(2.0)
        lab.connect_pending()
        self.assertTrue(lab.client.is_available())  # reopen_dwas=1: the DWA came at once
        d = lab.client.request(lir())
        lab.pump()
        self.assertEqual(self.successResultOf(d).result_code, ResultCode.SUCCESS)

    def test_stop_sends_dpr(self) -> None:
        lab = Lab()
        lab.client.start()
        lab.connect_pending()
        down: list[str] = []
        lab.servers["hss.ims.example.org"].on_peer_down.append(
            lambda host, reason: down.append(host)
        )
        d = lab.client.stop()
        lab.pump()
        lab.pump()
        self.successResultOf(d)
        self.assertEqual(down, ["scscf.ims.example.org"])
        lab.advance(60.0)
        self.assertEqual(lab.reactor.tcpClients, [])  # no redial after stop

    def test_duplicate_request_is_answered_once(self) -> None:
        lab = Lab()
        lab.client.start()
        lab.connect_pending()
        req = lir()
        d1 = lab.client.request(req)
        lab.pump()
        first = self.successResultOf(d1)
        again = Message(req.code, req.application, req.flags, 0, first.end_to_end, req.avps)
        d2 = lab.client.request(again)
        lab.pump()
        second = self.successResultOf(d2)
        self.assertEqual(len(lab.calls["hss.ims.example.org"]), 1)
        self.assertEqual(second.avps, first.avps)

    def test_no_handler_is_3001(self) -> None:
        lab = Lab()
        lab.servers["hss.ims.example.org"].handler = None
        lab.client.start()
        lab.connect_pending()
        d = lab.client.request(lir())
        lab.pump()
        ans = self.successResultOf(d)
        self.assertEqual(ans.result_code, ResultCode.COMMAND_UNSUPPORTED)
        self.assertTrue(ans.is_error)


SCSCF, HSS1, HSS2 = "scscf.ims.example.org", "hss1.ims.example.org", "hss2.ims.example.org"
LIR = str(int(Command.LOCATION_INFO))


class MetricsTests(unittest.TestCase):
    """The node's Prometheus metrics move with the traffic."""

    def setUp(self) -> None:
        self.registry = Registry()
        self.lab = Lab((HSS1, HSS2), metrics=self.registry)
        self.lab.client.start()
        self.lab.connect_pending()

    def value(self, name: str, **labels: str) -> float:
        metric = self.registry.get(name)
        assert metric is not None, name
        return metric.value(**labels)

    def test_peers_requests_and_answers(self) -> None:
        self.assertEqual(self.value("imsp2pd_diameter_peer_open", node=SCSCF, peer=HSS1), 1)
        self.assertEqual(self.value("imsp2pd_diameter_peer_open", node=HSS2, peer=SCSCF), 1)
        for _ in range(3):
            d = self.lab.client.request(lir())
            self.lab.pump()
            self.successResultOf(d)
        sent = "imsp2pd_diameter_requests_sent_total"
        received = "imsp2pd_diameter_requests_received_total"
        answers = "imsp2pd_diameter_answers_total"
        self.assertEqual(self.value(sent, node=SCSCF, command=LIR), 3)
        self.assertEqual(self.value(received, node=HSS1, command=LIR), 3)
        self.assertEqual(
            self.value(answers, node=HSS1, direction="out", command=LIR, result="2001"), 3
        )
        self.assertEqual(
            self.value(answers, node=SCSCF, direction="in", command=LIR, result="2001"), 3
        )
        text = self.registry.render()
        self.assertIn(
            'imsp2pd_diameter_requests_sent_total{node="scscf.ims.example.org",command="302"} 3',
            text,
        )
        self.lab.client.stop()
        self.lab.pump()
        self.lab.pump()
        self.assertEqual(self.value("imsp2pd_diameter_peer_open", node=SCSCF, peer=HSS1), 0)
        self.assertEqual(self.value("imsp2pd_diameter_peer_open", node=HSS1, peer=SCSCF), 0)

    def test_error_answers_are_counted_by_result(self) -> None:
        self.lab.servers[HSS1].handler = None
        d = self.lab.client.request(lir())
        self.lab.pump()
        self.successResultOf(d)
        self.assertEqual(
            self.value(
                "imsp2pd_diameter_answers_total",
                node=HSS1,
                direction="out",
                command=LIR,
                result=str(int(ResultCode.COMMAND_UNSUPPORTED)),
            ),
            1,
        )

    def test_timeout(self) -> None:
        self.lab.hold = True
        d = self.lab.client.request(lir(), timeout=3.0)
        self.lab.pump()
        self.lab.advance(3.0)
        self.failureResultOf(d).trap(RequestTimeout)
        self.assertEqual(
            self.value("imsp2pd_diameter_request_timeouts_total", node=SCSCF, peer=HSS1), 1
        )

    def test_failover_and_watchdog(self) -> None:
        self.lab.hold = True
        d = self.lab.client.request(lir(), timeout=500.0)
        self.lab.pump()
        silent = self.lab.pumps.pop(HSS1)
        self.lab.hold = False
        self.lab.advance(61.0)
        self.assertEqual(self.successResultOf(d).origin_host, HSS2)
        self.assertEqual(self.value("imsp2pd_diameter_failovers_total", node=SCSCF), 1)
        self.assertEqual(
            self.value(
                "imsp2pd_diameter_watchdog_changes_total", node=SCSCF, peer=HSS1, state="suspect"
            ),
            1,
        )
        self.assertEqual(
            self.value("imsp2pd_diameter_requests_sent_total", node=SCSCF, command=LIR), 2
        )
        del silent

    def test_a_node_without_a_registry_has_no_metrics(self) -> None:
        lab = Lab()
        self.assertIsNone(lab.client.metrics)
        lab.client.start()
        lab.connect_pending()
        d = lab.client.request(lir())
        lab.pump()
        self.successResultOf(d)


class ProtocolOnStringTransportTests(unittest.TestCase):
    """The adapter alone: bytes in, bytes out, one timer on the clock."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.node = DiameterNode(self.reactor, local("hss.ims.example.org", cer_timeout=5.0))
        self.proto = _ServerFactory(self.node).buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def frames(self) -> list[Message]:
        data = self.transport.value()
        self.transport.clear()
        return [decode_message(f, D) for f in Framer().feed(data)]

    def test_cer_gets_cea_and_dwr_gets_dwa(self) -> None:
        cer = request(
            Command.CAPABILITIES_EXCHANGE,
            0,
            [
                D.make(AvpCode.ORIGIN_HOST, "icscf.ims.example.org"),
                D.make(AvpCode.ORIGIN_REALM, REALM),
                D.make(AvpCode.HOST_IP_ADDRESS, IPv4Address("127.0.0.1")),
                D.make(AvpCode.VENDOR_ID, 0),
                D.make(AvpCode.PRODUCT_NAME, "test"),
                D.make(AvpCode.AUTH_APPLICATION_ID, Application.CX),
            ],
            proxiable=False,
            hop_by_hop=1,
            end_to_end=1,
        )
        wire = cer.encode()
        self.proto.dataReceived(wire[:7])
        self.assertEqual(self.transport.value(), b"")
        self.proto.dataReceived(wire[7:])
        (cea,) = self.frames()
        self.assertEqual(cea.result_code, ResultCode.SUCCESS)
        dwr = request(
            Command.DEVICE_WATCHDOG,
            0,
            [
                D.make(AvpCode.ORIGIN_HOST, "icscf.ims.example.org"),
                D.make(AvpCode.ORIGIN_REALM, REALM),
            ],
            proxiable=False,
            hop_by_hop=2,
        )
        self.proto.dataReceived(dwr.encode())
        (dwa,) = self.frames()
        self.assertEqual((dwa.code, dwa.result_code, dwa.hop_by_hop), (280, ResultCode.SUCCESS, 2))
        # The watchdog timer is armed on the clock: after Tw we send a DWR ourselves.
        self.reactor.advance(30.0)
        (ours,) = self.frames()
        self.assertTrue(ours.is_request and ours.code == Command.DEVICE_WATCHDOG)
        self.assertEqual(self.proto.conn.watchdog, WatchdogState.OKAY)  # type: ignore[union-attr]

    def test_silent_client_is_dropped_after_cer_timeout(self) -> None:
        self.reactor.advance(5.0)
        self.assertTrue(self.transport.disconnecting)

    def test_garbage_closes_without_raising(self) -> None:
        self.proto.dataReceived(b"\x07garbage-garbage-garbage")
        self.assertTrue(self.transport.disconnecting)
