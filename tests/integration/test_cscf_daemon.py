"""The pcscf, icscf and scscf roles with the hss role in a real daemon
(`twistd imsp2p`): registration over loopback UDP and TLS, a wrong
password, and an RTR from the HSS that deregisters the user."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, ssl, task
from twisted.trial.unittest import TestCase

from imsp2pd.sip.proxy import LocalAddress, SipCore, Target
from imsp2pd.sip.transport import SipNode
from imsp2pd.sip.ua import UserAgent, build_request
from tests.integration.labkit import admin_json, admin_request, end_process, free_port, listen_sip

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


class CscfDaemonTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        (self.dir / "etc").mkdir(parents=True)
        (self.dir / "etc" / "subscribers.toml").write_text(
            (ROOT / "etc" / "subscribers.toml").read_text()
        )
        self.admin = free_port()
        cx, self.p, self.tls, i, self.s = (free_port() for _ in range(5))
        self.config = self.dir / "etc" / "imsp2pd.toml"
        self.config.write_text(
            '[daemon]\nstate_dir = "../var"\n'
            f'[admin]\nlisten = "tcp:{self.admin}:interface=127.0.0.1"\n'
            f'url = "http://127.0.0.1:{self.admin}"\ntoken = "t0k"\n'
            '[ims]\ndomain = "ims.example.org"\n'
            f'[hss]\nlisten = "127.0.0.1:{cx}"\nscscf_names = ["sip:127.0.0.1:{self.s}"]\n'
            f'[pcscf]\nlisten = "127.0.0.1:{self.p}"\ntls_listen = "127.0.0.1:{self.tls}"\nicscf = "127.0.0.1:{i}"\n'
            f'[icscf]\nlisten = "127.0.0.1:{i}"\nhss = "127.0.0.1:{cx}"\n'
            f'[scscf]\nlisten = "127.0.0.1:{self.s}"\nhss = "127.0.0.1:{cx}"\nicscf = "127.0.0.1:{i}"\n'
        )
        self.addCleanup(self._stop)
        self._start()
        core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 0)])
        self.ue = UserAgent(core)
        ca = ssl.Certificate.loadPEM((self.dir / "var" / "tls" / "ca.pem").read_bytes())
        self.node = SipNode(
            reactor,
            core,
            self.ue,
            client_tls=lambda host: ssl.optionsForClientTLS("127.0.0.1", trustRoot=ca),
        )
        self.ue.node = self.node
        self.ue_port = listen_sip(self.node, core)
        self.addCleanup(self.node.stop)

    def _start(self) -> None:
        """Start the daemon and wait until every check is ok."""
        env = dict(os.environ, IMSP2P_CONFIG=str(self.config))
        self.proc = subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", "imsp2p", "--role=hss,pcscf,icscf,scscf"],
            cwd=self.dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                assert self.proc.stderr is not None and self.proc.stdout is not None
                self.fail(
                    f"daemon exited: {self.proc.stderr.read().decode()} {self.proc.stdout.read().decode()}"
                )
            try:
                status, health = self.http("GET", "/health")
                if status == 200 and all(c.get("ok") for c in health.get("checks", {}).values()):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            self.fail("daemon did not come up")

    def _stop(self) -> None:
        end_process(self.proc)
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()

    def http(self, method: str, path: str) -> tuple[int, Any]:
        return admin_json(self.admin, method, path, token="t0k")

    def register(self, target: Target, password: str) -> defer.Deferred[Any]:
        req = build_request(
            "REGISTER",
            "sip:ims.example.org",
            from_uri="sip:alice@ims.example.org",
            contact=f"<sip:alice@127.0.0.1:{self.ue_port}>",
            extra=(("Expires", "600"),),
        )
        return self.ue.request(req, target=target, credentials=("alice@ims.example.org", password))

    def registrations(self) -> int:
        _, health = self.http("GET", "/health")
        return int(health["checks"]["scscf"]["registrations"])

    @defer.inlineCallbacks
    def test_register_udp_then_tls_wrong_password_and_rtr(self) -> Any:
        resp = yield self.register(Target("UDP", "127.0.0.1", self.p), "not-it")
        self.assertEqual(resp.status, 403)
        self.assertEqual(self.registrations(), 0)
        resp = yield self.register(Target("UDP", "127.0.0.1", self.p), "alice-pass")
        self.assertEqual(resp.status, 200, resp.reason)
        self.assertEqual(resp.get_all("Service-Route"), [f"<sip:orig@127.0.0.1:{self.s};lr>"])
        self.assertEqual(resp.get_all("Path"), [f"<sip:term@127.0.0.1:{self.p};lr>"])
        self.assertEqual(self.registrations(), 1)
        # each SIP role's counts on /metrics: two REGISTER round trips passed
        # the P-CSCF, none refused for overload
        status, raw = admin_request(self.admin, "GET", "/metrics", token=None)
        metrics = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in raw.decode().splitlines()
            if line.startswith(("imsp2p_sip_", "imsp2p_local_hops"))
        }
        for role in ("pcscf", "icscf", "scscf"):
            self.assertGreaterEqual(
                metrics[f'imsp2p_sip_messages_total{{role="{role}",kind="in"}}'], 4
            )
            self.assertEqual(metrics[f'imsp2p_sip_overloaded_total{{role="{role}"}}'], 0)
            self.assertIn(f'imsp2p_sip_transactions_pending{{role="{role}"}}', metrics)
        # the roles' hops to each other (P to I to S and back, twice) were taken
        # as sent, not parsed again; each was parsed all the same (the tests set
        # IMSP2P_CHECK_LOCAL_HOPS) and found equal to what was taken
        self.assertGreaterEqual(metrics['imsp2p_local_hops_total{protocol="sip",kind="taken"}'], 8)
        self.assertEqual(metrics['imsp2p_local_hops_total{protocol="sip",kind="mismatch"}'], 0)
        # and so were the Cx requests and answers between the I-/S-CSCF and the HSS
        # (UAR, MAR, UAR, SAR and their answers), each decoded all the same
        self.assertGreaterEqual(
            metrics['imsp2p_local_hops_total{protocol="diameter",kind="taken"}'], 8
        )
        self.assertEqual(metrics['imsp2p_local_hops_total{protocol="diameter",kind="mismatch"}'], 0)
        # the same over TLS to the P-CSCF's TLS port (the lab CA is trusted)
        resp = yield self.register(Target("TLS", "127.0.0.1", self.tls), "alice-pass")
        self.assertEqual(resp.status, 200)
        # an administrative deregistration at the HSS reaches the S-CSCF as an RTR
        status, _ = self.http("POST", "/admin/subscribers/alice@ims.example.org/deregister")
        self.assertEqual(status, 200)
        for _ in range(100):
            if self.registrations() == 0:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(self.registrations(), 0)

    @defer.inlineCallbacks
    def test_a_registered_ue_stays_registered_after_kill_9(self) -> Any:
        """Durable before acknowledged: after a kill -9 the P-CSCF still
        knows the UE (it is not refused with 403) and the S-CSCF its
        registration."""
        resp = yield self.register(Target("UDP", "127.0.0.1", self.p), "alice-pass")
        self.assertEqual(resp.status, 200, resp.reason)
        end_process(self.proc, signal.SIGKILL)
        self._stop()
        self._start()
        _, health = self.http("GET", "/health")
        self.assertEqual(health["checks"]["pcscf"]["ues"], 1)
        self.assertEqual(self.registrations(), 1)
        msg = build_request(
            "MESSAGE",
            "sip:nobody@ims.example.org",
            from_uri="sip:alice@ims.example.org",
            body=b"hello",
            content_type="text/plain",
        )
        resp = yield self.ue.request(msg, target=Target("UDP", "127.0.0.1", self.p))
        # past the P-CSCF (no 403 Not Registered): the S-CSCF answers for nobody
        self.assertNotEqual(resp.status, 403, resp.reason)
        self.assertGreaterEqual(resp.status, 400)
