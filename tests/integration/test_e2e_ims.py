"""Both use cases through the whole IMS: UEs register at the P-CSCF, the S-CSCF's
iFC routes their requests to the AS, the AS charges at the OCS, checks the DRM
server, registers the swarm at the tracker, and its MESSAGEs come back to the
UEs through the S-CSCF and the P-CSCF. One daemon with every role but the
index and the seeder, on free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.parse
import uuid
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from imsp2pd.bittorrent.bencoding import bdecode
from imsp2pd.bittorrent.metainfo import make_metainfo
from imsp2pd.client.content import ContentService
from imsp2pd.client.ue import Account, UeError, UserEquipment
from imsp2pd.httpclient import JsonClient

BIN = Path(sys.executable).parent
PSI = "sip:content@ims.example.org"
ROLES = "hss,pcscf,icscf,scscf,ocs,drm,tracker,as"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class EndToEndTests(TestCase):
    timeout = 180

    @inlineCallbacks
    def setUp(self):
        self.dir = Path(self.mktemp()).resolve()
        etc = self.dir / "etc"
        etc.mkdir(parents=True)
        p = dict(
            zip(
                ["ctl", "hss", "pcscf", "pcscf_tls", "icscf", "scscf", "ocs", "drm", "trk", "as"],
                free_ports(10),
                strict=True,
            )
        )
        self.p = p
        (etc / "subscribers.toml").write_text(
            f'[[psi]]\nidentity = "{PSI}"\napplication_server = "sip:127.0.0.1:{p["as"]}"\n'
            + "".join(
                f'[[subscriber]]\nimpi = "{u}@ims.example.org"\nimpus = ["sip:{u}@ims.example.org"]\n'
                f'password = "{u}-pass"\n'
                for u in ("alice", "bob", "carol", "dave")
            )
        )
        (etc / "imsp2pd.toml").write_text(f"""
[daemon]
state_dir = "../var"
[admin]
listen = "tcp:{p["ctl"]}:interface=127.0.0.1"
url = "http://127.0.0.1:{p["ctl"]}"
token = "adm"
[hss]
listen = "127.0.0.1:{p["hss"]}"
scscf_names = ["sip:127.0.0.1:{p["scscf"]}"]
[pcscf]
listen = "127.0.0.1:{p["pcscf"]}"
tls_listen = "127.0.0.1:{p["pcscf_tls"]}"
icscf = "127.0.0.1:{p["icscf"]}"
[icscf]
listen = "127.0.0.1:{p["icscf"]}"
hss = "127.0.0.1:{p["hss"]}"
[scscf]
listen = "127.0.0.1:{p["scscf"]}"
hss = "127.0.0.1:{p["hss"]}"
icscf = "127.0.0.1:{p["icscf"]}"
[ocs]
listen = "127.0.0.1:{p["ocs"]}"
[ocs.accounts]
"sip:alice@ims.example.org" = "10.00"
"sip:bob@ims.example.org" = "10.00"
"sip:dave@ims.example.org" = "0.00"
[drm]
listen = "127.0.0.1:{p["drm"]}"
url = "https://127.0.0.1:{p["drm"]}"
[tracker]
listen = "127.0.0.1:{p["trk"]}"
[as]
listen = "127.0.0.1:{p["as"]}"
scscf = "127.0.0.1:{p["scscf"]}"
ocs = "127.0.0.1:{p["ocs"]}"
trackers = ["http://127.0.0.1:{p["trk"]}"]
listing = "provider"
completion_poll = 0.2
[as.tracker_admin]
"http://127.0.0.1:{p["trk"]}" = "http://127.0.0.1:{p["ctl"]}"
""")
        env = {k: v for k, v in os.environ.items() if k not in ("IMSP2P_CONFIG", "PYTHONPATH")}
        self.log = open(self.dir / "daemon.log", "wb")
        self.proc = subprocess.Popen(
            [
                str(BIN / "twistd"),
                "-n",
                "--pidfile=",
                "imsp2p",
                f"--role={ROLES}",
                "--config",
                str(etc / "imsp2pd.toml"),
            ],
            cwd=self.dir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(self._stop)
        self.admin = JsonClient(reactor, f"http://127.0.0.1:{p['ctl']}", token="adm", timeout=5)
        self.addCleanup(self.admin.close)
        for _ in range(300):
            if self.proc.poll() is not None:
                self.fail("daemon exited: " + self._log())
            try:
                if (yield self.admin.get("/health")).status == 200:
                    break
            except Exception:
                pass
            yield deferLater(reactor, 0.1, lambda: None)
        else:
            self.fail("daemon not healthy: " + self._log())
        self.drm = JsonClient(
            reactor,
            f"https://127.0.0.1:{p['drm']}",
            ca_path=str(self.dir / "var" / "tls" / "ca.pem"),
            timeout=5,
        )
        self.addCleanup(self.drm.close)

    def _log(self) -> str:
        return (self.dir / "daemon.log").read_text(errors="replace")[-4000:]

    def _stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    @inlineCallbacks
    def ue(self, user: str, password: str | None = None):
        ue = UserEquipment(
            reactor, Account.lab(user, password or f"{user}-pass"), ("127.0.0.1", self.p["pcscf"])
        )
        self.addCleanup(ue.stop)
        yield ue.start()
        return ue, ContentService(ue, PSI, timeout=15)

    @inlineCallbacks
    def test_publish_subscribe_buy_and_no_credit(self):
        carol, carol_svc = yield self.ue("carol")
        bob, bob_svc = yield self.ue("bob")
        current = yield bob_svc.subscribe(genre="drama")
        self.assertEqual(current, [])

        # provider: publisher token, content at the DRM server, PUBLISH
        token = yield carol_svc.publisher_token()
        reply = yield self.drm.post(
            "/content", {"publisher_token": token, "content_key": "22" * 16}
        )
        self.assertEqual(reply.status, 201, reply.body)
        doi = reply.json()["doi"]
        content = self.dir / "film.bin"
        content.write_bytes(os.urandom(200_000))
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
        seeding, etag = yield carol_svc.publish(torrent, meta)
        self.assertEqual(seeding["doi"], doi)
        self.assertTrue(etag)
        self.assertEqual((yield carol_svc.refresh(etag)) is not None, True)

        # the provider announces as a complete seeder: listed, and bob is told
        query = urllib.parse.urlencode(
            {
                "info_hash": bytes.fromhex(seeding["info_hash"]),
                "peer_id": os.urandom(20),
                "port": 6881,
                "uploaded": 0,
                "downloaded": 0,
                "left": 0,
                "event": "started",
            },
            quote_via=urllib.parse.quote,
        )
        url = seeding["announce_url"]
        tracker = JsonClient(reactor, url.split("/announce")[0], timeout=5)
        self.addCleanup(tracker.close)
        answer = bdecode(
            (yield tracker.get("/announce?" + url.split("?", 1)[1] + "&" + query)).body
        )
        self.assertNotIn(b"failure reason", answer)
        listing = yield bob_svc.next_notify(timeout=20)
        self.assertEqual([a["doi"] for a in listing], [doi])

        # alice buys through the P-CSCF: the grant comes back to her contact
        alice, alice_svc = yield self.ue("alice")
        pid = str(uuid.uuid4())
        grant = yield alice_svc.buy(doi, "rent", pid)
        self.assertEqual((grant["doi"], grant["purchase_id"]), (doi, pid))
        again = yield alice_svc.buy(doi, "rent", pid)
        self.assertEqual(again, grant)
        balance = (yield self.admin.get("/admin/balances/sip:alice@ims.example.org")).json()
        self.assertEqual(balance["balance"], "7.50")
        records = (
            yield self.admin.get("/admin/charging-records?user=sip:alice@ims.example.org")
        ).json()
        icids = [r["icid"] for r in records["records"]]
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
