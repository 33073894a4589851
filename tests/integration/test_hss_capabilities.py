"""S-CSCF selection by Server-Capabilities over loopback: the HSS's Cx node
answers a UAR for an unregistered user with the subscriber's capabilities
(TS 29.228 §6.1.1.1, §6.7), and the I-CSCF, with the same Cx client its role
builds, forwards the REGISTER to the S-CSCF that has them, or refuses it with
600 when none has (TS 24.229 §5.3.1.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from imsp2pd.diameter import cx
from imsp2pd.diameter.codes import Application, CxResult, TgppAvp, Vendor
from imsp2pd.diameter.node import DiameterNode
from imsp2pd.diameter.peer import LocalConfig
from imsp2pd.ims.hss import MIGRATIONS, Hss, HssConfig
from imsp2pd.ims.icscf import (
    Icscf,
    IcscfConfig,
    ScscfEntry,
    ServerCapabilities,
    server_capabilities,
)
from imsp2pd.sip.message import Request, Response
from imsp2pd.sip.proxy import LocalAddress, SipCore, Source, Target
from imsp2pd.sip.transport import SipNode
from imsp2pd.sip.ua import UserAgent, build_request
from imsp2pd.store import SQLiteStore
from imsp2pd_roles.icscf import cx_client
from tests.integration.labkit import wait_until

from .test_cscf_chain import _Null

REALM = "ims.example.org"
HSS_HOST = "hss.ims.example.org"
ICSCF = cx.Origin("icscf.ims.example.org", REALM)


class CapabilitySelectionTests(unittest.TestCase):
    timeout = 60

    def sip_node(self) -> tuple[SipNode, SipCore, int]:
        core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 0)])
        node = SipNode(reactor, core, _Null())
        port = node.listen_udp(0).getHost().port
        core.addresses[:] = [LocalAddress("UDP", "127.0.0.1", port)]
        self.stops.append(node.stop)
        return node, core, port

    def scscf(self, name: str) -> str:
        """A stand-in S-CSCF that records the REGISTERs it gets and answers 200."""
        node, core, port = self.sip_node()
        ua = UserAgent(core)
        ua.node, node.tu = node, ua

        def register(request: Request, source: Source) -> int:
            self.reached.append((name, request))
            return 200

        ua.on("REGISTER", register)
        return f"sip:127.0.0.1:{port}"

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.stops: list[Any] = []
        self.reached: list[tuple[str, Request]] = []
        tmp = Path(self.mktemp())
        tmp.mkdir()
        self.store = SQLiteStore(tmp / "hss.sqlite")
        self.store.migrate(MIGRATIONS)
        # Any S-CSCF by default; only optional 20 asked of a user who names nothing.
        self.hss = Hss(HssConfig(optional_capabilities=(20,)), self.store)

        def provision(txn: Any) -> None:
            for user, caps in (
                ("alice", {"mandatory_capabilities": [1], "optional_capabilities": [10]}),
                ("bob", {"mandatory_capabilities": [99]}),
                ("carol", {}),
            ):
                self.hss.put_subscriber(
                    txn, f"{user}@{REALM}", [f"sip:{user}@{REALM}"], password="pw", **caps
                )

        self.store.transact_now(provision)
        hss_node = DiameterNode(
            reactor,
            LocalConfig(HSS_HOST, REALM, vendor_applications=((Vendor.TGPP, Application.CX),)),
            handler=self.hss.handle,
        )
        cx_port = hss_node.listen(0).getHost().port
        hss_node.start()
        self.stops.append(hss_node.stop)
        self.cx = cx_client(reactor, ICSCF.host, REALM, f"127.0.0.1:{cx_port}", HSS_HOST)
        self.cx.start()
        self.stops.append(self.cx.stop)
        yield wait_until(lambda: self.cx.is_available(HSS_HOST), 10.0)

        self.plain = self.scscf("plain")
        self.one = self.scscf("one")
        self.rich = self.scscf("rich")
        self.twenty = self.scscf("twenty")
        i_node, i_core, i_port = self.sip_node()
        config = IcscfConfig(
            scscfs=(
                ScscfEntry(self.plain),
                ScscfEntry(self.one, frozenset({1})),
                ScscfEntry(self.rich, frozenset({1, 10})),
                ScscfEntry(self.twenty, frozenset({20})),
            )
        )
        self.icscf = Icscf(i_core, config, lambda m: self.cx.request(m, 5.0), clock=reactor.seconds)
        self.icscf.node, i_node.tu = i_node, self.icscf
        ue_node, ue_core, self.ue_port = self.sip_node()
        self.ue = UserAgent(ue_core)
        self.ue.node, ue_node.tu = ue_node, self.ue
        self.to_icscf = Target("UDP", "127.0.0.1", i_port)

    @defer.inlineCallbacks
    def tearDown(self) -> Any:
        for stop in reversed(self.stops):
            yield stop()
        self.store.close()

    def register(self, user: str) -> defer.Deferred[Response]:
        req = build_request(
            "REGISTER",
            f"sip:{REALM}",
            from_uri=f"sip:{user}@{REALM}",
            contact=f"<sip:{user}@127.0.0.1:{self.ue_port}>",
            extra=(("Expires", "600"),),
        )
        return self.ue.request(req, target=self.to_icscf)

    @defer.inlineCallbacks
    def test_uaa_carries_the_capabilities_and_the_icscf_selects_by_them(self) -> Any:
        sessions = cx.SessionIds(ICSCF.host, reactor.seconds())
        uar = cx.uar(ICSCF, sessions.next(), REALM, f"alice@{REALM}", f"sip:alice@{REALM}", REALM)
        uaa = yield self.cx.request(uar, 5.0)
        self.assertEqual(cx.outcome(uaa), cx.Outcome(CxResult.FIRST_REGISTRATION, True))
        self.assertIsNone(uaa.find(TgppAvp.SERVER_NAME))
        self.assertEqual(
            server_capabilities(uaa), ServerCapabilities(frozenset({1}), frozenset({10}))
        )
        # every mandatory and the most optional: "rich", not "one"
        resp = yield self.register("alice")
        self.assertEqual(resp.status, 200)
        self.assertEqual([n for n, _ in self.reached], ["rich"])
        # the defaults of [hss] for a user who names none: optional 20
        resp = yield self.register("carol")
        self.assertEqual(resp.status, 200)
        self.assertEqual([n for n, _ in self.reached], ["rich", "twenty"])

    @defer.inlineCallbacks
    def test_no_scscf_has_the_mandatory_capability_600(self) -> Any:
        resp = yield self.register("bob")
        self.assertEqual(resp.status, 600)
        self.assertEqual(self.reached, [])
