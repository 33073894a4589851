"""The as role in a real daemon (with drm, ocs and tracker), driven over SIP and HTTP.

The test plays the S-CSCF: it sends the AS what the S-CSCF would route over
ISC (with P-Asserted-Identity and P-Charging-Vector), and it receives the
MESSAGEs the AS sends to users (grants, tokens), as the S-CSCF would before
routing them to the users' contacts.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from imsp2pd import entitlement
from imsp2pd.bittorrent.metainfo import make_metainfo
from imsp2pd.content import multipart
from imsp2pd.httpclient import JsonClient
from imsp2pd.sip.proxy import Target
from imsp2pd.sip.service import make_node
from imsp2pd.sip.ua import UserAgent, build_request
from tests.integration.labkit import announce, end_process

BIN = Path(sys.executable).parent
PSI = "sip:content@ims.example.org"
ALICE = "sip:alice@ims.example.org"
CAROL = "sip:carol@ims.example.org"
DAVE = "sip:dave@ims.example.org"


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class AsRoleTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.dir = Path(self.mktemp()).resolve()
        (self.dir / "etc").mkdir(parents=True)
        ctl, drm, ocs, trk, asp, fake = free_ports(6)
        self.ports = {"ctl": ctl, "drm": drm, "ocs": ocs, "trk": trk, "as": asp, "fake": fake}
        (self.dir / "etc" / "imsp2pd.toml").write_text(
            f"""
[daemon]
state_dir = "../var"
[admin]
listen = "tcp:{ctl}:interface=127.0.0.1"
url = "http://127.0.0.1:{ctl}"
token = "adm"
[drm]
listen = "127.0.0.1:{drm}"
url = "https://127.0.0.1:{drm}"
service_token = "svc"
[ocs]
listen = "127.0.0.1:{ocs}"
[ocs.accounts]
"{ALICE}" = "10.00"
"{DAVE}" = "0.00"
[tracker]
listen = "127.0.0.1:{trk}"
[as]
listen = "127.0.0.1:{asp}"
scscf = "127.0.0.1:{fake}"
ocs = "127.0.0.1:{ocs}"
trackers = ["http://127.0.0.1:{trk}"]
index_url = "http://127.0.0.1:8080"
listing = "provider"
completion_poll = 0.2
[as.tracker_admin]
"http://127.0.0.1:{trk}" = "http://127.0.0.1:{ctl}"
"""
        )
        env = {k: v for k, v in os.environ.items() if k not in ("IMSP2P_CONFIG", "PYTHONPATH")}
        self.log = open(self.dir / "daemon.log", "wb")
        self.proc = subprocess.Popen(
            [
                str(BIN / "twistd"),
                "-n",
                "--pidfile=",
                "imsp2p",
                "--role=drm,ocs,tracker,as",
                "--config",
                str(self.dir / "etc" / "imsp2pd.toml"),
            ],
            cwd=self.dir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(self._stop)
        self.admin = JsonClient(reactor, f"http://127.0.0.1:{ctl}", token="adm", timeout=5)
        self.addCleanup(self.admin.close)
        # the fake S-CSCF: takes the AS's MESSAGEs to users
        self.inbox: list = []
        self.node, self.ua = make_node(reactor, "127.0.0.1", fake, UserAgent)
        self.ua.on("MESSAGE", self._received)
        self.node.listen_udp(fake, "127.0.0.1")
        self.node.listen_tcp(fake, "127.0.0.1")
        self.addCleanup(self.node.stop)
        for _ in range(300):
            if self.proc.poll() is not None:
                self.fail("daemon exited: " + (self.dir / "daemon.log").read_text()[-3000:])
            try:
                reply = yield self.admin.get("/health")
                if reply.status == 200:
                    break
            except Exception:
                pass
            yield deferLater(reactor, 0.1, lambda: None)
        else:
            self.fail("daemon not healthy: " + (self.dir / "daemon.log").read_text()[-3000:])
        self.as_key = entitlement.load_or_create_private_key(self.dir / "var" / "keys")
        ca = str(self.dir / "var" / "tls" / "ca.pem")
        self.drm = JsonClient(reactor, f"https://127.0.0.1:{drm}", ca_path=ca, timeout=5)
        self.addCleanup(self.drm.close)

    def _stop(self):
        end_process(self.proc)
        self.log.close()

    def _received(self, req, source):
        self.inbox.append(req)
        return 200

    def send(
        self,
        method: str,
        impu: str | None,
        body: bytes = b"",
        ctype: str | None = None,
        extra: tuple = (),
    ) -> Deferred:
        headers = list(extra)
        if impu:
            headers.append(("P-Asserted-Identity", f"<{impu}>"))
            headers.append(
                ("P-Charging-Vector", f"icid-value={uuid.uuid4().hex};orig-ioi=ims.example.org")
            )
        req = build_request(
            method,
            PSI,
            from_uri=impu or ALICE,
            to_uri=PSI,
            body=body,
            content_type=ctype,
            extra=tuple(headers),
        )
        return self.ua.request(req, target=Target("TCP", "127.0.0.1", self.ports["as"]))

    @inlineCallbacks
    def wait_for(self, ctype: str, to: str):
        for _ in range(100):
            for req in self.inbox:
                if (req.content_type or "").startswith(ctype) and str(req.uri) == to:
                    self.inbox.remove(req)
                    return json.loads(req.body)
            yield deferLater(reactor, 0.05, lambda: None)
        self.fail(f"no {ctype} MESSAGE for {to}")

    @inlineCallbacks
    def balance(self, impu: str):
        reply = yield self.admin.get("/admin/balances/" + urllib.parse.quote(impu, safe=":@"))
        return reply.json()["balance"]

    @inlineCallbacks
    def publish(self):
        resp = yield self.send(
            "MESSAGE", CAROL, b"{}", "application/vnd.imsp2p.publisher-token-request+json"
        )
        self.assertEqual(resp.status, 200)
        token = (yield self.wait_for("application/vnd.imsp2p.publisher-token+json", CAROL))[
            "publisher_token"
        ]
        reply = yield self.drm.post(
            "/content", {"publisher_token": token, "content_key": "11" * 16}
        )
        self.assertEqual(reply.status, 201, reply.body)
        doi = reply.json()["doi"]
        content = self.dir / "film.bin"
        content.write_bytes(os.urandom(300_000))
        torrent = make_metainfo(content, None, doi=doi).to_bytes()
        meta = {
            "title": "Film",
            "genre": "drama",
            "offers": [
                {
                    "id": "rent",
                    "price": "2.50",
                    "currency": "EUR",
                    "rights": {"plays": 3},
                    "devices": 2,
                }
            ],
        }
        ctype, body = multipart.build(
            [
                multipart.Part("application/x-bittorrent", torrent),
                multipart.Part("application/json", json.dumps(meta).encode()),
            ]
        )
        resp = yield self.send(
            "PUBLISH", CAROL, body, ctype, extra=(("Event", "imsp2p-content"), ("Expires", "600"))
        )
        self.assertEqual(resp.status, 200, resp.reason)
        self.assertTrue(resp.get("SIP-ETag"))
        seeding = yield self.wait_for("application/vnd.imsp2p.seeding-token+json", CAROL)
        self.assertEqual(seeding["doi"], doi)
        return doi, seeding, resp.get("SIP-ETag")

    @inlineCallbacks
    def local_hops(self):
        """imsp2p_local_hops_total on the daemon's /metrics: {(protocol, kind): n}."""
        reply = yield self.admin.get("/metrics")
        self.assertEqual(reply.status, 200)
        found = re.findall(
            r'^imsp2p_local_hops_total\{protocol="(\w+)",kind="(\w+)"\} (\S+)$',
            reply.body.decode(),
            re.M,
        )
        return {(proto, kind): float(n) for proto, kind, n in found}

    def announce(self, announce_url: str, info_hash: str, left: int):
        return announce(reactor, announce_url, info_hash, left)

    @inlineCallbacks
    def test_publish_list_buy_replay_no_credit_and_takedown(self):
        doi, seeding, etag = yield self.publish()
        ih = seeding["info_hash"]
        # a consumer cannot buy before the swarm is complete and listed
        pid = str(uuid.uuid4())
        body = json.dumps({"purchase_id": pid, "doi": doi, "offer": "rent"}).encode()
        resp = yield self.send("MESSAGE", ALICE, body, "application/vnd.imsp2p.purchase+json")
        self.assertEqual(resp.status, 404)
        # the provider announces as a seeder: the AS lists the content
        answer = yield self.announce(seeding["announce_url"], ih, left=0)
        self.assertNotIn(b"failure reason", answer)
        for _ in range(100):
            stats = (yield self.admin.get(f"/admin/swarms/{ih}")).json()
            if stats["state"] == "active":
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(stats["state"], "active")
        # refresh of the seeding presence
        resp = yield self.send(
            "PUBLISH", CAROL, extra=(("Event", "imsp2p-content"), ("SIP-If-Match", etag))
        )
        self.assertEqual(resp.status, 200)
        resp = yield self.send(
            "PUBLISH", CAROL, extra=(("Event", "imsp2p-content"), ("SIP-If-Match", "nope"))
        )
        self.assertEqual(resp.status, 412)

        # alice buys: 200, then the grant in a MESSAGE
        resp = yield self.send("MESSAGE", ALICE, body, "application/vnd.imsp2p.purchase+json")
        self.assertEqual(resp.status, 200)
        grant = yield self.wait_for("application/vnd.imsp2p.grant+json", ALICE)
        self.assertEqual((grant["purchase_id"], grant["doi"], grant["offer"]), (pid, doi, "rent"))
        self.assertEqual((yield self.balance(ALICE)), "7.50")
        token = urllib.parse.unquote(grant["announce_url"].split("token=")[1])
        claims = entitlement.Verifier(self.as_key.public_key()).verify_tracker(token, time.time())
        self.assertEqual(
            (claims.impu, claims.role, claims.info_hash.hex()), (ALICE, "consumer", ih)
        )
        answer = yield self.announce(grant["announce_url"], ih, left=300_000)
        self.assertNotIn(b"failure reason", answer)
        # the same purchase id again: the same grant, no second charge
        resp = yield self.send("MESSAGE", ALICE, body, "application/vnd.imsp2p.purchase+json")
        self.assertEqual(resp.status, 200)
        self.assertEqual((yield self.wait_for("application/vnd.imsp2p.grant+json", ALICE)), grant)
        self.assertEqual((yield self.balance(ALICE)), "7.50")
        # dave has no credit: 402 and nothing else
        dbody = json.dumps({"purchase_id": str(uuid.uuid4()), "doi": doi, "offer": "rent"}).encode()
        resp = yield self.send("MESSAGE", DAVE, dbody, "application/vnd.imsp2p.purchase+json")
        self.assertEqual(resp.status, 402)
        yield deferLater(reactor, 0.3, lambda: None)
        self.assertEqual([r for r in self.inbox if str(r.uri) == DAVE], [])
        records = (yield self.admin.get("/admin/charging-records")).json()["records"]
        self.assertEqual(
            sorted((r["impu"], r["result_code"]) for r in records), [(ALICE, 2001), (DAVE, 4012)]
        )
        # the AS and the OCS share the daemon: the two CCRs and their CCAs were
        # taken as sent over loopback, not decoded again; each was decoded all
        # the same (the tests set IMSP2P_CHECK_LOCAL_HOPS) and found equal
        metrics = yield self.local_hops()
        self.assertGreaterEqual(metrics["diameter", "taken"], 4)
        self.assertEqual(metrics["diameter", "mismatch"], 0)

        # takedown by the operator: swarm disabled, no more sales
        reply = yield self.admin.request("DELETE", f"/admin/content/{doi}")
        self.assertEqual((reply.status, reply.json()["state"]), (200, "removed"))
        self.assertEqual((yield self.admin.get(f"/admin/swarms/{ih}")).json()["state"], "disabled")
        resp = yield self.send(
            "MESSAGE",
            ALICE,
            json.dumps({"purchase_id": str(uuid.uuid4()), "doi": doi, "offer": "rent"}).encode(),
            "application/vnd.imsp2p.purchase+json",
        )
        self.assertEqual(resp.status, 404)

    @inlineCallbacks
    def test_bad_requests(self):
        resp = yield self.send("MESSAGE", ALICE, b"{nope", "application/vnd.imsp2p.purchase+json")
        self.assertEqual(resp.status, 400)
        resp = yield self.send("MESSAGE", ALICE, b"hello", "text/plain")
        self.assertEqual(resp.status, 415)
        self.assertIn("purchase+json", resp.get("Accept"))
        resp = yield self.send("MESSAGE", None, b"{}", "application/vnd.imsp2p.purchase+json")
        self.assertEqual(resp.status, 403)
        resp = yield self.send(
            "MESSAGE", ALICE, b"{}", "application/vnd.imsp2p.publisher-token-request+json"
        )
        self.assertEqual(resp.status, 403)
        resp = yield self.send("PUBLISH", CAROL, b"x", "text/plain", extra=(("Event", "presence"),))
        self.assertEqual(resp.status, 489)
        resp = yield self.send(
            "PUBLISH", CAROL, b"x", "text/plain", extra=(("Event", "imsp2p-content"),)
        )
        self.assertEqual(resp.status, 400)
