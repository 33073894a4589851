"""UE → P-CSCF → I-CSCF → S-CSCF → AS on real loopback sockets, with the
HSS's Cx logic on a real SQLite store: registration (digest MD5, AKA),
asserted identity and charging vector at the AS, terminating routing back
to the UE, third-party REGISTER, and the refusals."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from imsp2pd.diameter.dictionary import default_dictionary
from imsp2pd.diameter.message import Message, decode_message
from imsp2pd.ims import milenage
from imsp2pd.ims.hss import MIGRATIONS as HSS_MIGRATIONS
from imsp2pd.ims.hss import Hss, HssConfig, content_ifcs, ifc_documents
from imsp2pd.ims.icscf import Icscf, IcscfConfig
from imsp2pd.ims.pcscf import Pcscf, PcscfConfig
from imsp2pd.ims.scscf import MIGRATIONS as SCSCF_MIGRATIONS
from imsp2pd.ims.scscf import Scscf, ScscfConfig
from imsp2pd.sip.digest import aka_nonce_parts, answer_challenge
from imsp2pd.sip.headers import AuthHeader, parse_auth
from imsp2pd.sip.message import Request, Response
from imsp2pd.sip.proxy import LocalAddress, SipCore, Source, Target
from imsp2pd.sip.transport import SipNode
from imsp2pd.sip.ua import UserAgent, build_request
from imsp2pd.store import SQLiteStore
from tests.integration.labkit import listen_sip, wait_until

D = default_dictionary()
REALM = "ims.example.org"
PSI = "sip:content@ims.example.org"
K = bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc")
OP = bytes.fromhex("cdc202d5123e20f62b6d676ac72cb318")


class _Null:
    def on_event(self, event: Any, now: float) -> list[Any]:
        return []


class ChainTests(unittest.TestCase):
    timeout = 60

    def node(self) -> tuple[SipNode, SipCore, int]:
        core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 0)])
        node = SipNode(reactor, core, _Null())
        port = listen_sip(node, core)
        self.nodes.append(node)
        return node, core, port

    def setUp(self) -> None:
        self.nodes: list[SipNode] = []
        tmp = Path(self.mktemp())
        tmp.mkdir()
        self.store = SQLiteStore(tmp / "lab.sqlite")
        self.store.migrate([*HSS_MIGRATIONS, *SCSCF_MIGRATIONS])
        p_node, p_core, self.p_port = self.node()
        i_node, i_core, i_port = self.node()
        s_node, s_core, s_port = self.node()
        as_node, as_core, as_port = self.node()
        ue_node, ue_core, self.ue_port = self.node()
        self.s_port = s_port
        self.hss = Hss(HssConfig(scscf_names=(f"sip:127.0.0.1:{s_port}",)), self.store)
        as_uri = f"sip:127.0.0.1:{as_port};transport=tcp"

        def provision(txn: Any) -> None:
            ifcs = ifc_documents(content_ifcs(PSI, as_uri))
            self.hss.put_subscriber(
                txn,
                "alice@ims.example.org",
                ["sip:alice@ims.example.org"],
                password="alice-pass",
                ifcs=ifcs,
            )
            self.hss.put_subscriber(
                txn, "bob@ims.example.org", ["sip:bob@ims.example.org"], password="bob-pass",
                aka={"k": K.hex(), "op": OP.hex(), "amf": "8000"}, ifcs=ifcs,
            )  # fmt: skip
            self.hss.put_psi(txn, PSI, as_uri)

        self.store.transact_now(provision)
        self.cx_log: list[int] = []

        def cx_request(msg: Message) -> defer.Deferred[Message]:
            self.cx_log.append(msg.code)
            req = decode_message(msg.encode(), D)
            ans = self.store.transact_now(lambda txn: self.hss.process(txn, req))
            return defer.succeed(decode_message(ans.encode(), D))

        self.pcscf = Pcscf(
            p_core,
            PcscfConfig(port=self.p_port, icscf=Target("UDP", "127.0.0.1", i_port)),
            clock=reactor.seconds,
        )
        self.icscf = Icscf(i_core, IcscfConfig(), cx_request, clock=reactor.seconds)
        self.scscf = Scscf(
            s_core,
            ScscfConfig(
                port=s_port,
                server_name=f"sip:127.0.0.1:{s_port}",
                icscf=Target("UDP", "127.0.0.1", i_port),
            ),
            cx_request,
            store=self.store,
            clock=reactor.seconds,
        )
        for node, tu in ((p_node, self.pcscf), (i_node, self.icscf), (s_node, self.scscf)):
            node.tu = tu
            tu.node = node
        p_node.flow_listeners.append(self.pcscf.flow_closed)
        self.as_ua = UserAgent(as_core)
        self.as_ua.node = as_node
        as_node.tu = self.as_ua
        self.ue = UserAgent(ue_core)
        self.ue.node = ue_node
        ue_node.tu = self.ue
        self.at_as: list[Request] = []
        self.at_ue: list[Request] = []

        def as_message(request: Request, source: Source) -> int:
            self.at_as.append(request)
            return 200

        self.as_ua.on("MESSAGE", as_message)
        self.as_ua.on("REGISTER", as_message)
        self.ue.on("MESSAGE", lambda request, source: self.at_ue.append(request) or 200)  # type: ignore[func-returns-value]
        self.ue.on("NOTIFY", lambda request, source: self.at_ue.append(request) or 200)  # type: ignore[func-returns-value]
        self.to_p = Target("UDP", "127.0.0.1", self.p_port)

    def tearDown(self) -> defer.Deferred[Any]:
        d = defer.gatherResults([n.stop() for n in self.nodes])
        d.addBoth(lambda _: self.store.close())
        return d

    def register(
        self,
        user: str = "alice",
        password: str | bytes = "alice-pass",
        expires: int = 600,
        auth: str | None = None,
    ) -> defer.Deferred[Response]:
        req = build_request(
            "REGISTER",
            "sip:ims.example.org",
            from_uri=f"sip:{user}@ims.example.org",
            contact=f"<sip:{user}@127.0.0.1:{self.ue_port}>",
            extra=(("Expires", str(expires)),) + ((("Authorization", auth),) if auth else ()),
        )
        return self.ue.request(
            req, target=self.to_p, credentials=(f"{user}@ims.example.org", password)
        )

    @defer.inlineCallbacks
    def test_register_purchase_message_and_grant_back(self) -> Any:
        resp = yield self.register()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.get_all("Path"), [f"<sip:term@127.0.0.1:{self.p_port};lr>"])
        self.assertEqual(resp.get_all("Service-Route"), [f"<sip:orig@127.0.0.1:{self.s_port};lr>"])
        self.assertEqual(resp.get_all("P-Associated-URI"), ["<sip:alice@ims.example.org>"])
        self.assertIn(";expires=", resp.get("Contact") or "")
        # durable before the 200, and the HSS knows the assignment
        docs = self.store.transact_now(lambda txn: txn.find("scscf_registrations"))
        self.assertEqual([k for k, _ in docs], ["sip:alice@ims.example.org"])
        # third-party REGISTER to the AS (iFC priority 1)
        yield wait_until(lambda: any(r.method == "REGISTER" for r in self.at_as), 5.0)
        # the purchase MESSAGE with a forged identity
        msg = build_request(
            "MESSAGE", PSI, from_uri="sip:alice@ims.example.org", body=b'{"purchase_id": "p1"}',
            content_type="application/vnd.imsp2p.purchase+json",
            extra=(("P-Asserted-Identity", "<sip:carol@ims.example.org>"), ("P-Charging-Vector", "icid-value=forged")),
        )  # fmt: skip
        resp = yield self.ue.request(msg, target=self.to_p)
        self.assertEqual(resp.status, 200)
        purchase = [r for r in self.at_as if r.method == "MESSAGE"][0]
        self.assertEqual(purchase.get_all("P-Asserted-Identity"), ["<sip:alice@ims.example.org>"])
        icid = purchase.get("P-Charging-Vector") or ""
        self.assertTrue(icid.startswith("icid-value=") and "forged" not in icid)
        self.assertEqual(purchase.body, b'{"purchase_id": "p1"}')
        # the grant goes back from the PSI to alice's registered contact
        grant = build_request(
            "MESSAGE",
            "sip:alice@ims.example.org",
            from_uri=PSI,
            body=b"grant",
            content_type="application/vnd.imsp2p.grant+json",
        )
        resp = yield self.as_ua.request(grant, target=Target("UDP", "127.0.0.1", self.s_port))
        self.assertEqual(resp.status, 200)
        self.assertEqual([r.body for r in self.at_ue], [b"grant"])
        self.assertEqual(self.at_ue[0].get("P-Called-Party-ID"), "<sip:alice@ims.example.org>")
        # de-registration removes the binding everywhere
        resp = yield self.register(expires=0)
        self.assertEqual(resp.status, 200)
        self.assertIsNone(self.scscf.registrar.find("sip:alice@ims.example.org"))
        self.assertEqual(self.store.transact_now(lambda txn: txn.find("scscf_registrations")), [])

    @defer.inlineCallbacks
    def test_reg_event_subscription_and_network_deregistration(self) -> Any:
        resp = yield self.register()
        self.assertEqual(resp.status, 200)
        sub = build_request(
            "SUBSCRIBE",
            "sip:alice@ims.example.org",
            from_uri="sip:alice@ims.example.org",
            contact=f"<sip:alice@127.0.0.1:{self.ue_port}>",
            extra=(("Event", "reg"), ("Expires", "600"), ("Accept", "application/reginfo+xml")),
        )
        resp = yield self.ue.request(sub, target=self.to_p)
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.get("Expires"), "600")
        yield wait_until(lambda: len(self.at_ue) == 1, 5.0)
        first = self.at_ue[0]
        self.assertEqual(first.method, "NOTIFY")
        self.assertEqual(first.get("Subscription-State"), "active;expires=600")
        self.assertIn(b'state="active"', first.body)
        self.assertIn(f"sip:alice@127.0.0.1:{self.ue_port}".encode(), first.body)
        # the HSS deregisters alice (an RTR): the UE hears of it
        self.assertEqual(len(self.scscf.deregister("alice@ims.example.org", [])), 1)
        yield wait_until(lambda: len(self.at_ue) == 2, 5.0)
        last = self.at_ue[1]
        self.assertEqual(last.get("Subscription-State"), "terminated;reason=noresource")
        self.assertIn(b'event="rejected"', last.body)
        self.assertIn(
            b'<registration aor="sip:alice@ims.example.org" id="r0" state="terminated">', last.body
        )
        self.assertEqual(last.cseq.seq, first.cseq.seq + 1)

    @defer.inlineCallbacks
    def test_requests_to_the_ue_reuse_its_tcp_connection(self) -> Any:
        self.to_p = Target("TCP", "127.0.0.1", self.p_port)
        resp = yield self.register()
        self.assertEqual(resp.status, 200)
        (flow,) = self.pcscf.ues.by_flow.values()
        self.assertEqual(flow.source.transport, "TCP")
        connections = len(self.ue.node._flows)
        grant = build_request(
            "MESSAGE", "sip:alice@ims.example.org", from_uri=PSI, body=b"grant over tcp"
        )
        resp = yield self.as_ua.request(grant, target=Target("UDP", "127.0.0.1", self.s_port))
        self.assertEqual(resp.status, 200)
        self.assertEqual([r.body for r in self.at_ue], [b"grant over tcp"])
        self.assertEqual(len(self.ue.node._flows), connections)  # no new connection to the UE
        # the UE's connection closes: the P-CSCF forgets the flow, nothing reaches it
        for stream in list(self.ue.node._flows.values()):
            stream.transport.loseConnection()
        yield wait_until(lambda: not self.pcscf.ues.by_flow, 5.0)

    def bob_aka_register(self) -> Request:
        """Bob's first REGISTER, naming AKA (an empty Authorization, TS 24.229 5.1.1.2)."""
        first = 'Digest username="bob@ims.example.org", realm="ims.example.org", nonce="", uri="sip:ims.example.org", response="", algorithm=AKAv1-MD5'
        return build_request(
            "REGISTER", "sip:ims.example.org", from_uri="sip:bob@ims.example.org",
            contact=f"<sip:bob@127.0.0.1:{self.ue_port}>", extra=(("Expires", "600"), ("Authorization", first)),
        )  # fmt: skip

    @defer.inlineCallbacks
    def test_aka_resynchronisation(self) -> Any:
        req = self.bob_aka_register()
        resp = yield self.ue.request(req, target=self.to_p)
        chal = parse_auth(resp.get("WWW-Authenticate") or "")
        rand, _autn = aka_nonce_parts(chal.get("nonce") or "")
        # the ISIM is ahead: it answers with AUTS for its SQN (RFC 3310 §3.4)
        opc = milenage.compute_opc(K, OP)
        auts = milenage.make_auts(K, opc, rand, 5000)
        empty = _bob_answer(chal, b"")
        resync = AuthHeader(
            empty.scheme, empty.params + (("auts", base64.b64encode(auts).decode()),)
        )
        again = req.replace_header("Authorization", str(resync)).replace_header(
            "CSeq", "2 REGISTER"
        )
        resp = yield self.ue.request(again, target=self.to_p)
        self.assertEqual(resp.status, 401)
        chal2 = parse_auth(resp.get("WWW-Authenticate") or "")
        rand2, autn2 = aka_nonce_parts(chal2.get("nonce") or "")
        sqn, res, _ck, _ik = milenage.verify_autn(K, opc, rand2, autn2)
        self.assertGreater(sqn, 5000)
        auth = _bob_answer(chal2, res)
        final = req.replace_header("Authorization", str(auth)).replace_header("CSeq", "3 REGISTER")
        resp = yield self.ue.request(final, target=self.to_p)
        self.assertEqual(resp.status, 200)

    @defer.inlineCallbacks
    def test_wrong_password_is_403_and_nothing_stored(self) -> Any:
        resp = yield self.register(password="wrong")
        self.assertEqual(resp.status, 403)
        self.assertEqual(self.scscf.registrar.by_impu, {})
        self.assertEqual(self.store.transact_now(lambda txn: txn.find("scscf_registrations")), [])
        self.assertEqual(self.pcscf.ues.by_flow, {})

    @defer.inlineCallbacks
    def test_unknown_user_and_unregistered_ue(self) -> Any:
        resp = yield self.register(user="mallory", password="x")
        self.assertEqual(resp.status, 403)
        msg = build_request("MESSAGE", PSI, from_uri="sip:alice@ims.example.org", body=b"x")
        resp = yield self.ue.request(msg, target=self.to_p)
        self.assertEqual(resp.status, 403)
        self.assertEqual(self.at_as, [])

    @defer.inlineCallbacks
    def test_aka_registration(self) -> Any:
        req = self.bob_aka_register()
        resp = yield self.ue.request(req, target=self.to_p)
        self.assertEqual((resp.status, resp.reason), (401, "Unauthorized"))
        chal = parse_auth(resp.get("WWW-Authenticate") or "")
        self.assertEqual(chal.get("algorithm"), "AKAv1-MD5")
        rand, autn = aka_nonce_parts(chal.get("nonce") or "")
        res = _isim(rand, autn)
        auth = _bob_answer(chal, res)
        again = req.replace_header("Authorization", str(auth)).replace_header("CSeq", "2 REGISTER")
        resp = yield self.ue.request(again, target=self.to_p)
        self.assertEqual(resp.status, 200)
        self.assertIsNotNone(self.scscf.registrar.find("sip:bob@ims.example.org"))
        self.assertTrue(base64.b64decode(chal.get("nonce") or ""))

    @defer.inlineCallbacks
    def test_register_and_message_leave_no_cycles(self) -> Any:
        # what a flow made is freed when it ends, not by the cycle collector
        # (whose full passes over a busy daemon's heap stall the reactor);
        # compiled copies matter here: Cython keeps all the variables an
        # outer function's inner functions use in one scope object, so an
        # inner function that calls another makes a cycle where CPython's
        # per-variable cells make none
        import gc

        yield self.register()  # the first: caches and tables fill
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(3):
                resp = yield self.register()
                self.assertEqual(resp.status, 200)
                msg = build_request(
                    "MESSAGE", PSI, from_uri="sip:alice@ims.example.org", body=b"{}",
                    content_type="application/vnd.imsp2p.purchase+json",
                )  # fmt: skip
                resp = yield self.ue.request(msg, target=self.to_p)
                self.assertEqual(resp.status, 200)
            gc.collect()
            ours = sorted(
                {
                    f"{type(o).__module__}.{type(o).__qualname__}"
                    for o in gc.garbage
                    if type(o).__module__.startswith("imsp2pd")
                }
            )
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        self.assertEqual(ours, [])


def _bob_answer(challenge: AuthHeader, password: bytes) -> AuthHeader:
    """Bob's answer to a REGISTER challenge, ``password`` the AKA RES (or b"")."""
    return answer_challenge(
        challenge,
        method="REGISTER",
        uri="sip:ims.example.org",
        username="bob@ims.example.org",
        password=password,
    )


def _isim(rand: bytes, autn: bytes) -> bytes:
    """What the UE's ISIM computes: check AUTN, return RES."""
    _sqn, res, _ck, _ik = milenage.verify_autn(K, milenage.compute_opc(K, OP), rand, autn)
    return res
