"""Ro between an AS's charging client and the ocs role in one process, over
loopback TCP: the CCRs and CCAs are taken from the process's local hops as
sent, and (the tests set IMSP2P_CHECK_LOCAL_HOPS) each is decoded all the
same and found equal to what was taken, in every charging case."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from imsp2pd.config import load_config
from imsp2pd.content.charging import RoCharging
from imsp2pd.content.purchase import BackendDown, Charge, NoCredit, NotAllowed
from imsp2pd.control import admin_router
from imsp2pd.diameter.codes import Application, AvpCode, ResultCode
from imsp2pd.diameter.dictionary import default_dictionary
from imsp2pd.diameter.message import Message
from imsp2pd.diameter.node import DiameterNode, PeerConfig, diameter_local_hops
from imsp2pd.diameter.peer import LocalConfig
from imsp2pd.ims.ro import CURRENCIES, RequestedAction, build_ccr
from imsp2pd.local_hops import CHECK_ENV
from imsp2pd.metrics import Registry
from imsp2pd.roles import Hub
from imsp2pd.store import SQLiteStore
from imsp2pd_roles.ocs import OcsRole
from tests.integration.test_ocs_role import free_port

REALM = "ims.example.org"
ALICE = "sip:alice@ims.example.org"


class RoLocalHopsTests(TestCase):
    @inlineCallbacks
    def setUp(self) -> Any:
        d = Path(self.mktemp()).resolve()
        (d / "etc").mkdir(parents=True)
        port = free_port()
        (d / "etc" / "c.toml").write_text(
            f'[admin]\ntoken = "t"\n[ocs]\nlisten = "127.0.0.1:{port}"\n'
            '[ocs.accounts]\n"sip:alice@ims.example.org" = "5.00"\n'
        )
        role = OcsRole()
        config = load_config(d / "etc" / "c.toml", {"ocs": role.schema})
        self.store = SQLiteStore(d / "var" / "s.sqlite", reactor)
        self.store.start()
        self.store.migrate(role.migrations())
        self.hub = Hub(reactor, config, self.store, Registry(), admin_router("t"))
        service = role.build(config, self.store, reactor, self.hub)
        service.startService()
        self.addCleanup(self.store.close)
        self.addCleanup(service.stopService)
        # the AS's Ro node as the as role makes it: on the same process's hops
        self.client = DiameterNode(
            reactor,
            LocalConfig(
                "as.ims.example.org", REALM, auth_applications=(Application.CREDIT_CONTROL,)
            ),
            peers=[PeerConfig("ocs.ims.example.org", REALM, "127.0.0.1", port)],
            local_hops=diameter_local_hops(self.hub),
        )
        self.client.start()
        self.addCleanup(self.client.stop)
        for _ in range(100):
            if self.client.is_available(realm=REALM):
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.charging = RoCharging(self.client, "as.ims.example.org", REALM, "ocs.ims.example.org")
        self.hops = diameter_local_hops(self.hub)

    def charge(self, amount: str, session: str | None = None, **kw: Any) -> Charge:
        return Charge(
            session or f"as;{uuid.uuid4()}",
            kw.get("impu", ALICE),
            Decimal(amount),
            kw.get("currency", "EUR"),
            "icid-1",
            "10.5555/x",
            "rent",
        )

    def counted(self) -> dict[str, float]:
        """imsp2p_local_hops_total of the diameter protocol, as /metrics shows it."""
        text = self.hub.metrics.render()
        return {
            kind: float(line.rsplit(" ", 1)[1])
            for kind in ("taken", "mismatch")
            for line in text.splitlines()
            if line.startswith(f'imsp2p_local_hops_total{{protocol="diameter",kind="{kind}"}}')
        }

    @inlineCallbacks
    def test_every_charging_case_is_taken_with_no_mismatch(self) -> Any:
        self.assertTrue(self.hops.check is not None, f"the tests set {CHECK_ENV}")
        c = self.charge("2.00", "as;p;1")
        yield self.charging.debit(c)  # 2001
        yield self.charging.debit(c)  # the same Session-Id: the recorded answer again
        with self.assertRaises(NoCredit):  # 4012
            yield self.charging.debit(self.charge("3.01"))
        yield self.charging.refund(self.charge("2.00", "as;p;1;refund"))  # 2001
        with self.assertRaises(NotAllowed):  # 5030
            yield self.charging.debit(self.charge("1", impu="sip:nobody@ims.example.org"))
        with self.assertRaises(BackendDown):  # 5031: alice's account is in EUR
            yield self.charging.debit(self.charge("1", currency="USD"))
        # a CCR the OCS refuses (5004, with the Failed-AVP): made of plain ints,
        # as a decoder makes them, it is taken as well
        ccr = build_ccr(
            session_id="as;bad",
            origin_host="as.ims.example.org",
            origin_realm=REALM,
            destination_realm=REALM,
            destination_host="ocs.ims.example.org",
            impu=ALICE,
            action=RequestedAction.DIRECT_DEBITING,
            amount=Decimal("1"),
            currency=CURRENCIES["EUR"],
            icid=None,
        )
        price_enquiry = default_dictionary().make(AvpCode.REQUESTED_ACTION, 3)
        ccr = Message(
            ccr.code,
            ccr.application,
            ccr.flags,
            0,
            0,
            tuple(price_enquiry if a.code == AvpCode.REQUESTED_ACTION else a for a in ccr.avps),
        )
        cca = yield self.client.request(ccr, timeout=5)
        self.assertEqual(cca.result_code, ResultCode.INVALID_AVP_VALUE)
        self.assertIsNotNone(cca.find(AvpCode.FAILED_AVP))
        # seven CCRs and their CCAs, each taken as sent, none found different
        self.assertEqual(self.counted(), {"taken": 14.0, "mismatch": 0.0})
        self.assertEqual((self.hops.taken, self.hops.mismatches), (14, 0))
