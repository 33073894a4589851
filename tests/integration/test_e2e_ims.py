"""Both use cases through the whole IMS: UEs register at the P-CSCF, the S-CSCF's
iFC routes their requests to the AS, the AS charges at the OCS, checks the DRM
server, registers the swarm at the tracker, and its MESSAGEs come back to the
UEs through the S-CSCF and the P-CSCF. One daemon with every role but the
index and the seeder, on free ports."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from imsp2pd.bittorrent.metainfo import make_metainfo
from imsp2pd.client.content import ContentService
from imsp2pd.client.ue import Account, UeError, UserEquipment
from imsp2pd.httpclient import JsonClient
from tests.integration.labkit import PSI, Daemon, announce, write_lab

ROLES = "hss,pcscf,icscf,scscf,ocs,drm,tracker,as"


class LabTestCase(TestCase):
    """A daemon with ``roles`` on a lab config, and what the tests do with it."""

    timeout = 180
    roles = ROLES

    def setUp(self):
        self.dir = Path(self.mktemp()).resolve()
        self.config, self.p = write_lab(self.dir)
        self.before_daemon()
        self.daemon = Daemon(self.config, self.roles, self.p["ctl"])
        self.addCleanup(self.daemon.stop)
        self.daemon.wait_healthy()
        self.admin = JsonClient(
            reactor, f"http://127.0.0.1:{self.p['ctl']}", token="adm", timeout=5
        )
        self.addCleanup(self.admin.close)
        self.drm = JsonClient(
            reactor,
            f"https://127.0.0.1:{self.p['drm']}",
            ca_path=str(self.dir / "var" / "tls" / "ca.pem"),
            timeout=5,
        )
        self.addCleanup(self.drm.close)

    def before_daemon(self):
        pass

    @inlineCallbacks
    def ue(self, user: str, password: str | None = None):
        ue = UserEquipment(
            reactor, Account.lab(user, password or f"{user}-pass"), ("127.0.0.1", self.p["pcscf"])
        )
        self.addCleanup(ue.stop)
        yield ue.start()
        return ue, ContentService(ue, PSI, timeout=15)

    @inlineCallbacks
    def publish_and_list(self, carol_svc):
        """carol publishes 200 kB of content and announces as its complete seeder: listed."""
        token = yield carol_svc.publisher_token()
        reply = yield self.drm.post(
            "/content", {"publisher_token": token, "content_key": "22" * 16}
        )
        self.assertEqual(reply.status, 201, reply.body)
        doi = reply.json()["doi"]
        content = self.dir / "film.bin"
        content.write_bytes(os.urandom(200_000))
        torrent = make_metainfo(content, None, doi=doi).to_bytes()
        offer = {
            "id": "rent",
            "price": "2.50",
            "currency": "EUR",
            "rights": {"plays": 3},
            "devices": 2,
        }
        seeding, etag = yield carol_svc.publish(
            torrent, {"title": "Film", "genre": "drama", "offers": [offer]}
        )
        self.assertEqual(seeding["doi"], doi)
        self.assertTrue(etag)
        self.assertIsNotNone((yield carol_svc.refresh(etag)))
        answer = yield announce(reactor, seeding["announce_url"], seeding["info_hash"], left=0)
        self.assertNotIn(b"failure reason", answer)
        return doi

    @inlineCallbacks
    def balance(self, user: str):
        reply = yield self.admin.get(f"/admin/balances/sip:{user}@ims.example.org")
        return reply.json()["balance"]

    @inlineCallbacks
    def records(self, user: str):
        reply = yield self.admin.get(f"/admin/charging-records?user=sip:{user}@ims.example.org")
        return reply.json()["records"]


class EndToEndTests(LabTestCase):
    @inlineCallbacks
    def test_publish_subscribe_buy_and_no_credit(self):
        carol, carol_svc = yield self.ue("carol")
        bob, bob_svc = yield self.ue("bob")
        current = yield bob_svc.subscribe(genre="drama")
        self.assertEqual(current, [])
        doi = yield self.publish_and_list(carol_svc)
        listing = yield bob_svc.next_notify(timeout=20)  # bob is told when it is listed
        self.assertEqual([a["doi"] for a in listing], [doi])

        # alice buys through the P-CSCF: the grant comes back to her contact
        alice, alice_svc = yield self.ue("alice")
        pid = str(uuid.uuid4())
        grant = yield alice_svc.buy(doi, "rent", pid)
        self.assertEqual((grant["doi"], grant["purchase_id"]), (doi, pid))
        again = yield alice_svc.buy(doi, "rent", pid)
        self.assertEqual(again, grant)
        self.assertEqual((yield self.balance("alice")), "7.50")
        icids = [r["icid"] for r in (yield self.records("alice"))]
        self.assertEqual(len(icids), 1)
        self.assertTrue(icids[0])  # the P-CSCF's icid reached the OCS

        # dave has no credit: 402, and no grant
        dave, dave_svc = yield self.ue("dave")
        with self.assertRaises(UeError) as e:
            yield dave_svc.buy(doi, "rent")
        self.assertIn("402", str(e.exception))
        self.assertEqual(dave.inbox, [])

        # carol removes her content: gone from sale
        yield carol_svc.remove(doi)
        with self.assertRaises(UeError) as e:
            yield alice_svc.buy(doi, "rent")
        self.assertIn("404", str(e.exception))

    @inlineCallbacks
    def test_wrong_password_and_untrusted_publisher(self):
        with self.assertRaises(UeError) as e:
            yield self.ue("alice", "wrong")
        self.assertIn("403", str(e.exception))
        alice, alice_svc = yield self.ue("alice")
        with self.assertRaises(UeError) as e:
            yield alice_svc.publisher_token()
        self.assertIn("403", str(e.exception))


class DrmApartTests(LabTestCase):
    """The DRM server in a process of its own, which dies after a purchase is charged."""

    roles = "hss,pcscf,icscf,scscf,ocs,tracker,as"

    def before_daemon(self):
        self.start_drm()

    def start_drm(self):
        ctl2 = self.p["ctl2"]
        self.drm_daemon = Daemon(
            self.config, "drm", ctl2, "drm", control=f"tcp:{ctl2}:interface=127.0.0.1"
        )
        self.addCleanup(self.drm_daemon.stop)
        self.drm_daemon.wait_healthy()

    @inlineCallbacks
    def test_a_failure_after_the_charge_refunds(self):
        carol, carol_svc = yield self.ue("carol")
        doi = yield self.publish_and_list(carol_svc)
        alice, alice_svc = yield self.ue("alice")
        for _ in range(50):  # listed once the AS saw the seeder at the tracker
            try:
                yield alice_svc.buy(doi, "rent")
                break
            except UeError as e:
                if "404" not in str(e):
                    raise
                yield deferLater(reactor, 0.2, lambda: None)
        self.assertEqual((yield self.balance("alice")), "7.50")
        self.drm_daemon.stop(signal.SIGKILL)
        pid = str(uuid.uuid4())
        with self.assertRaises(UeError) as e:
            yield alice_svc.buy(doi, "rent", pid)
        self.assertIn("500", str(e.exception))
        self.assertEqual((yield self.balance("alice")), "7.50")  # charged, then refunded
        actions = [(r["action"], r["result_code"]) for r in (yield self.records("alice"))]
        self.assertEqual(actions[-2:], [("DIRECT_DEBITING", 2001), ("REFUND_ACCOUNT", 2001)])
        # the DRM server is back (after kill -9, with its state): the same purchase goes through
        self.start_drm()
        grant = yield alice_svc.buy(doi, "rent", pid)
        self.assertEqual(grant["purchase_id"], pid)
        self.assertEqual((yield self.balance("alice")), "5.00")
