"""The hss role in a real daemon: Cx over loopback TCP, the admin API, RTR/PPR, kill -9."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from imsp2pd.diameter import cx
from imsp2pd.diameter.codes import (
    Application,
    AvpCode,
    Command,
    CxResult,
    ResultCode,
    ServerAssignmentType,
    Vendor,
)
from imsp2pd.diameter.message import Message
from imsp2pd.diameter.node import DiameterNode, PeerConfig
from imsp2pd.diameter.peer import LocalConfig, PeerInfo
from imsp2pd.ims import milenage
from imsp2pd.ims.profile import from_xml
from tests.integration.labkit import (
    Daemon,
    admin_json,
    free_ports,
    twistd_to_the_end,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REALM = "ims.example.org"
SCSCF = cx.Origin("scscf.ims.example.org", REALM)
SCSCF_URI = "sip:127.0.0.1:6060"
ALICE, ALICE_IMPU = "alice@ims.example.org", "sip:alice@ims.example.org"


class HssDaemonTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        (self.dir / "etc").mkdir(parents=True)
        self.admin_port, self.cx_port = free_ports(2)
        (self.dir / "etc" / "subscribers.toml").write_text(
            (ROOT / "etc" / "subscribers.toml").read_text()
        )
        self.config = self.dir / "etc" / "imsp2pd.toml"
        self.config.write_text(
            '[daemon]\nstate_dir = "../var"\n'
            f'[admin]\nlisten = "tcp:{self.admin_port}:interface=127.0.0.1"\n'
            f'url = "http://127.0.0.1:{self.admin_port}"\ntoken = "t0k"\n'
            f'[ims]\ndomain = "{REALM}"\n'
            f'[hss]\nlisten = "127.0.0.1:{self.cx_port}"\nscscf_names = ["{SCSCF_URI}"]\n'
        )
        self.env = dict(os.environ, IMSP2P_CONFIG=str(self.config))
        self.requests: list[Message] = []
        self.starts = 0

    def start_daemon(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        daemon = Daemon(self.config, "hss", self.admin_port, name=f"daemon{self.starts}")
        self.addCleanup(daemon.stop)
        daemon.wait_healthy()
        return daemon.proc

    def http(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return admin_json(self.admin_port, method, path, body, token="t0k")

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        with urllib.request.urlopen(url, timeout=20) as r:
            return str(r.read().decode())

    def client(self) -> DiameterNode:
        def handler(req: Message, peer: PeerInfo) -> Message:
            self.requests.append(req)
            return node.answer(req, ResultCode.SUCCESS, [cx.cx_application()])

        node = DiameterNode(
            reactor,
            LocalConfig(SCSCF.host, REALM, vendor_applications=((Vendor.TGPP, Application.CX),)),
            peers=[PeerConfig("hss.ims.example.org", REALM, "127.0.0.1", self.cx_port)],
            handler=handler,
        )
        node.start()
        self.addCleanup(node.stop)
        return node

    @defer.inlineCallbacks
    def erin_sqn(self, node: DiameterNode, ids: cx.SessionIds, k: bytes, op: bytes) -> Any:
        """The SQN in the AKA vector the HSS gives erin (MAR), checked with her K and OP."""
        maa = yield node.request(
            cx.mar(
                SCSCF,
                ids.next(),
                REALM,
                "erin@ims.example.org",
                "sip:erin@ims.example.org",
                SCSCF_URI,
                cx.SCHEME_AKA,
            )
        )
        (vector,) = cx.auth_items(maa)
        assert vector.authenticate is not None
        opc = milenage.compute_opc(k, op)
        return milenage.verify_autn(k, opc, vector.authenticate[:16], vector.authenticate[16:])[0]

    @defer.inlineCallbacks
    def test_registration_admin_and_durability(self) -> Any:
        daemon = self.start_daemon()
        node = self.client()
        yield wait_until(lambda: node.is_available("hss.ims.example.org"), 15.0)
        ids = cx.SessionIds(SCSCF.host, reactor.seconds())

        uaa = yield node.request(cx.uar(SCSCF, ids.next(), REALM, ALICE, ALICE_IMPU, REALM))
        self.assertEqual(cx.outcome(uaa), cx.Outcome(CxResult.FIRST_REGISTRATION, True))
        self.assertEqual(cx.server_capabilities(uaa), [SCSCF_URI])
        maa = yield node.request(
            cx.mar(SCSCF, ids.next(), REALM, ALICE, ALICE_IMPU, SCSCF_URI, cx.SCHEME_DIGEST)
        )
        (item,) = cx.auth_items(maa)
        ha1 = hashlib.md5(f"{ALICE}:{REALM}:alice-pass".encode()).hexdigest()
        self.assertEqual(item.digest_ha1, ha1)
        saa = yield node.request(
            cx.sar(
                SCSCF, ids.next(), REALM, [ALICE_IMPU], SCSCF_URI, ServerAssignmentType.REGISTRATION
            )
        )
        data = cx.user_data(saa)
        assert data is not None
        ifc = from_xml(data).profiles[0].ifcs[0]
        self.assertEqual(ifc.application_server.server_name, "sip:127.0.0.1:7060")
        lia = yield node.request(cx.lir(SCSCF, ids.next(), REALM, "sip:content@ims.example.org"))
        self.assertEqual(cx.server_name(lia), "sip:127.0.0.1:7060")

        # The node's metrics on the control port.
        text = yield deferToThread(self.metrics_text)
        hss = 'node="hss.ims.example.org"'
        self.assertIn(f'imsp2pd_diameter_peer_open{{{hss},peer="{SCSCF.host}"}} 1', text)
        self.assertIn(f'imsp2pd_diameter_requests_received_total{{{hss},command="303"}} 1', text)
        self.assertIn(
            f'imsp2pd_diameter_answers_total{{{hss},direction="out",command="301",result="2001"}} 1',
            text,
        )

        status, shown = yield deferToThread(self.http, "GET", f"/admin/subscribers/{ALICE}")
        self.assertEqual(status, 200)
        self.assertEqual(shown["impus"][0]["state"], "registered")
        self.assertNotIn("ha1", json.dumps(shown))

        # A profile change reaches the serving S-CSCF as a PPR.
        status, changed = yield deferToThread(
            self.http,
            "PUT",
            f"/admin/subscribers/{ALICE}",
            {"impus": [ALICE_IMPU], "profile": "none"},
        )
        self.assertEqual((status, changed.get("ppr")), (200, ResultCode.SUCCESS))
        ppr = [r for r in self.requests if r.code == Command.PUSH_PROFILE]
        self.assertEqual(len(ppr), 1)
        # Administrative deregistration sends RTR.
        status, dereg = yield deferToThread(
            self.http, "POST", f"/admin/subscribers/{ALICE}/deregister"
        )
        self.assertEqual((status, dereg["rtr"], dereg["deregistered"]), (200, 2001, [ALICE_IMPU]))
        rtr = [r for r in self.requests if r.code == Command.REGISTRATION_TERMINATION]
        self.assertEqual(rtr[0].get_str(AvpCode.USER_NAME), ALICE)

        # A new AKA subscriber through the API, then kill -9: nothing acknowledged is lost.
        k, op = os.urandom(16), os.urandom(16)
        body = {"impus": ["sip:erin@ims.example.org"], "aka": {"k": k.hex(), "op": op.hex()}}
        status, _ = yield deferToThread(
            self.http, "PUT", "/admin/subscribers/erin@ims.example.org", body
        )
        self.assertEqual(status, 200)
        bad_status, bad = yield deferToThread(
            self.http, "PUT", "/admin/subscribers/x@y", {"impus": ["http://nope"]}
        )
        self.assertEqual((bad_status, bad["error"]), (400, "bad_subscriber"))
        self.assertEqual((yield self.erin_sqn(node, ids, k, op)), 1)

        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        yield deferToThread(self.start_daemon)
        yield wait_until(lambda: node.is_available("hss.ims.example.org"), 30)
        status, erin = yield deferToThread(
            self.http, "GET", "/admin/subscribers/erin@ims.example.org"
        )
        self.assertEqual((status, erin["aka"]), (200, True))
        self.assertEqual((yield self.erin_sqn(node, ids, k, op)), 2)
        status, _ = yield deferToThread(self.http, "GET", "/admin/subscribers/nobody@x")
        self.assertEqual(status, 404)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "imsp2p"), *args], env=self.env, capture_output=True, text=True, timeout=60
        )

    def test_admin_commands(self) -> None:
        self.start_daemon()
        r = self.cli(
            "admin",
            "subscriber",
            "set",
            "frank@ims.example.org",
            "--impu",
            "sip:frank@ims.example.org",
            "--password",
            "pw",
        )
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["digest"], True)
        r = self.cli("admin", "subscriber", "set", "frank@ims.example.org", "--profile", "none")
        self.assertEqual(r.returncode, 0, r.stderr)
        shown = json.loads(self.cli("admin", "subscriber", "show", "frank@ims.example.org").stdout)
        self.assertEqual([i["impu"] for i in shown["impus"]], ["sip:frank@ims.example.org"])
        self.assertEqual(shown["ifcs"], [])
        listed = json.loads(self.cli("admin", "subscriber", "list").stdout)["subscribers"]
        self.assertIn("alice@ims.example.org", [s["impi"] for s in listed])
        r = self.cli("admin", "psi", "set", "sip:news@ims.example.org", "sip:127.0.0.1:7060")
        self.assertEqual(r.returncode, 0, r.stderr)
        psis = json.loads(self.cli("admin", "psi", "list").stdout)["psis"]
        self.assertIn("sip:news@ims.example.org", [p["identity"] for p in psis])
        self.assertEqual(
            self.cli("admin", "psi", "delete", "sip:news@ims.example.org").returncode, 0
        )
        r = self.cli("admin", "subscriber", "set", "new@ims.example.org")
        self.assertEqual(r.returncode, 1)
        self.assertIn("--impu", r.stderr)
        r = self.cli("admin", "subscriber", "delete", "frank@ims.example.org")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.cli("admin", "subscriber", "show", "frank@ims.example.org")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("404", r.stderr)

    def test_bad_provisioning_is_one_line(self) -> None:
        text = self.config.read_text() + 'provisioning = "nope.toml"\n'
        self.config.write_text(text)
        r = twistd_to_the_end(self.dir, self.env, "hss")
        self.assertNotEqual(r.returncode, 0)
        out = r.stdout + r.stderr
        self.assertIn("[hss] provisioning: cannot read", out)
        self.assertNotIn("Traceback", out)
        (self.dir / "etc" / "nope.toml").write_text(
            "[[subscriber]]\nimpi = 'x@y'\nimpus = ['http://bad']\n"
        )
        r = twistd_to_the_end(self.dir, self.env, "hss")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("must be a sip:, sips: or tel: URI", r.stdout + r.stderr)
