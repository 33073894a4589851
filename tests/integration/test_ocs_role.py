"""The ocs role over loopback TCP, charged by the AS's Ro client."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from imsp2pd.config import load_config
from imsp2pd.content.charging import RoCharging
from imsp2pd.content.purchase import BackendDown, Charge, NoCredit, NotAllowed
from imsp2pd.control import admin_router
from imsp2pd.diameter.codes import Application
from imsp2pd.diameter.node import DiameterNode, PeerConfig
from imsp2pd.diameter.peer import LocalConfig
from imsp2pd.metrics import Registry
from imsp2pd.roles import Hub
from imsp2pd.store import SQLiteStore
from imsp2pd_roles.ocs import OcsRole
from tests.protocol.test_web import request as web_request

ALICE = "sip:alice@ims.example.org"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OcsRoleTests(TestCase):
    @inlineCallbacks
    def setUp(self):
        d = Path(self.mktemp()).resolve()
        (d / "etc").mkdir(parents=True)
        self.port = free_port()
        (d / "etc" / "c.toml").write_text(
            f'[admin]\ntoken = "t"\n[ocs]\nlisten = "127.0.0.1:{self.port}"\n'
            '[ocs.accounts]\n"sip:alice@ims.example.org" = "5.00"\n'
        )
        role = OcsRole()
        config = load_config(d / "etc" / "c.toml", {"ocs": role.schema})
        role.check(config)
        self.store = SQLiteStore(d / "var" / "s.sqlite", reactor)
        self.store.start()
        self.store.migrate(role.migrations())
        self.hub = Hub(reactor, config, self.store, Registry(), admin_router("t"))
        self.service = role.build(config, self.store, reactor, self.hub)
        self.service.startService()
        self.addCleanup(self.store.close)
        self.addCleanup(self.service.stopService)
        self.client = DiameterNode(
            reactor,
            LocalConfig(
                "as.ims.example.org",
                "ims.example.org",
                auth_applications=(Application.CREDIT_CONTROL,),
            ),
            peers=[PeerConfig("ocs.ims.example.org", "ims.example.org", "127.0.0.1", self.port)],
        )
        self.client.start()
        self.addCleanup(self.client.stop)
        for _ in range(100):
            if self.client.is_available(realm="ims.example.org"):
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.charging = RoCharging(self.client, "as.ims.example.org", "ims.example.org")

    def charge(self, amount: str, session: str | None = None, impu: str = ALICE) -> Charge:
        return Charge(
            session or f"as;{uuid.uuid4()}",
            impu,
            Decimal(amount),
            "EUR",
            "icid-1",
            "10.5555/x",
            "rent",
        )

    def admin(self, method: str, path: str, body=None) -> Deferred:
        raw = b"" if body is None else json.dumps(body).encode()
        req = web_request(method, path, raw, {"Authorization": "Bearer t"})
        return self.hub.admin.dispatch(req).addCallback(lambda r: (r.status, json.loads(r.body)))

    @inlineCallbacks
    def test_debit_duplicate_refund_and_no_credit(self):
        c = self.charge("2.00", "as;p;1")
        yield self.charging.debit(c)
        yield self.charging.debit(c)  # the same Session-Id again: charged once
        status, body = yield self.admin("GET", f"/admin/balances/{ALICE}")
        self.assertEqual((status, body["balance"]), (200, "3.00"))
        with self.assertRaises(NoCredit):
            yield self.charging.debit(self.charge("3.01"))
        yield self.charging.refund(self.charge("2.00", "as;p;1;refund"))
        status, body = yield self.admin("GET", f"/admin/balances/{ALICE}")
        self.assertEqual(body["balance"], "5.00")
        with self.assertRaises(NotAllowed):
            yield self.charging.debit(self.charge("1", impu="sip:nobody@ims.example.org"))
        status, body = yield self.admin("GET", f"/admin/charging-records?user={ALICE}")
        self.assertEqual([r["result_code"] for r in body["records"]], [2001, 4012, 2001])
        text = self.hub.metrics.render()
        self.assertIn('imsp2pd_ocs_ccr_total{action="DIRECT_DEBITING",result="4012"} 1', text)
        self.assertRegex(text, r'imsp2pd_diameter_answers_total\{[^}]*result="2001"[^}]*\} [1-9]')

    @inlineCallbacks
    def test_admin_credit_and_errors(self):
        status, body = yield self.admin("POST", f"/admin/balances/{ALICE}", {"credit": "1.50"})
        self.assertEqual((status, body["balance"]), (200, "6.50"))
        status, body = yield self.admin("POST", f"/admin/balances/{ALICE}", {"credit": "x"})
        self.assertEqual((status, body["error"]), (400, "bad_account"))
        status, body = yield self.admin("GET", "/admin/balances/sip:none@x")
        self.assertEqual(status, 404)
        status, body = yield self.admin("GET", "/admin/balances")
        self.assertEqual([a["impu"] for a in body["accounts"]], [ALICE])

    @inlineCallbacks
    def test_ocs_down_is_backend_down(self):
        yield self.service.stopService()
        for _ in range(100):
            if not self.client.is_available(realm="ims.example.org"):
                break
            yield deferLater(reactor, 0.05, lambda: None)
        with self.assertRaises(BackendDown):
            yield self.charging.debit(self.charge("1"))
