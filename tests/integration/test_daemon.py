"""The daemon as a user runs it: twistd in a subprocess, real sockets, kill -9."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.integration.labkit import admin_request, twistd_to_the_end

ROOT = Path(__file__).resolve().parents[2]
DROPIN = Path(__file__).resolve().parent / "dropin"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaemonTests(TestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        (self.dir / "etc").mkdir(parents=True)
        self.port = free_port()
        self.config = self.dir / "etc" / "imsp2pd.toml"
        self.config.write_text(
            '[daemon]\nstate_dir = "../var"\n'
            f'[admin]\nlisten = "tcp:{self.port}:interface=127.0.0.1"\n'
            f'url = "http://127.0.0.1:{self.port}"\ntoken = "t0k"\n'
            "[notes]\nlimit = 5\n"
        )
        self.env = dict(os.environ, PYTHONPATH=str(DROPIN), IMSP2P_CONFIG=str(self.config))
        self.procs: list[subprocess.Popen] = []
        self.addCleanup(self.stop_all)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()

    def start(self, *roles: str) -> subprocess.Popen:
        p = subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", "imsp2p", f"--role={','.join(roles)}"],
            cwd=self.dir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.procs.append(p)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if p.poll() is not None:
                self.fail(f"daemon exited: {p.stderr.read().decode()} {p.stdout.read().decode()}")
            try:
                if self.http("GET", "/health")[0] == 200:
                    return p
            except OSError:
                pass
            time.sleep(0.1)
        self.fail("daemon did not come up")

    def http(self, method: str, path: str, body=None, token: str | None = "t0k"):
        return admin_request(self.port, method, path, body, token=token, timeout=10)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "imsp2p"), *args], env=self.env, capture_output=True, text=True, timeout=60
        )

    def test_roles_serve_and_writes_survive_kill_9(self) -> None:
        p = self.start("notes")
        status, body = self.http("GET", "/health")
        self.assertEqual(json.loads(body)["roles"], {"notes": "up"})
        self.assertEqual(self.http("PUT", "/admin/notes/a", {"text": "hello"})[0], 200)
        self.assertEqual(self.http("PUT", "/admin/notes/b", {"text": "x"}, token=None)[0], 401)
        self.assertEqual(self.http("PUT", "/admin/notes/b", {"text": 3})[0], 400)
        status, metrics = self.http("GET", "/metrics", token=None)
        self.assertIn(b"notes_written_total 1", metrics)
        self.assertIn(b'imsp2pd_role_up{role="notes"} 1', metrics)

        health = self.cli("admin", "health")
        self.assertEqual(health.returncode, 0, health.stderr)
        self.assertEqual(json.loads(health.stdout)["status"], "ok")

        p.send_signal(signal.SIGKILL)
        p.wait(10)
        self.start("notes")
        status, body = self.http("GET", "/admin/notes/a")
        self.assertEqual((status, json.loads(body)), (200, {"author": "admin", "text": "hello"}))

    def test_unknown_role_is_one_line(self) -> None:
        r = twistd_to_the_end(self.dir, self.env, "notes,nope")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
        self.assertIn("unknown role 'nope'", r.stderr)
        self.assertIn("notes", r.stderr)

    def test_bad_config_names_the_key(self) -> None:
        self.config.write_text(self.config.read_text() + "colour = 1\n")
        r = twistd_to_the_end(self.dir, self.env, "all")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(
            r.stderr.strip(), "imsp2p: config: unknown key [notes] colour (known keys: limit)"
        )
        r = self.cli("admin", "health")
        self.assertEqual(r.returncode, 1)
        self.assertIn("unknown key [notes] colour", r.stderr)
        r = self.cli("--config", str(self.dir / "missing.toml"), "admin", "health")
        self.assertEqual((r.returncode, r.stderr.count("\n")), (1, 1))
        self.assertIn("file not found", r.stderr)

    def test_cli_without_daemon_and_version(self) -> None:
        r = self.cli("admin", "health")
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot reach the control port", r.stderr)
        self.assertNotIn("Traceback", r.stderr)
        r = self.cli("--version")
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith("imsp2p "))

    def test_tac_runs_the_roles(self) -> None:
        p = subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", "-y", str(ROOT / "twistd.tac")],
            cwd=self.dir,
            env=dict(self.env, IMSP2P_ROLES="notes"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.procs.append(p)
        deadline = time.monotonic() + 30
        status, body = 0, b""
        while time.monotonic() < deadline and p.poll() is None:
            try:
                status, body = self.http("GET", "/health")
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        if status != 200:
            p.kill()
            self.fail(f"tac did not come up: {p.stderr.read().decode()[-2000:]}")
        self.assertEqual(json.loads(body)["roles"], {"notes": "up"})


class LabConfigTests(TestCase):
    """The lab config as shipped: every role, the control port on 127.0.0.1:9100."""

    def test_lab_comes_up_and_stops_on_sigterm(self) -> None:
        d = Path(self.mktemp()).resolve()
        (d / "etc").mkdir(parents=True)
        for f in (ROOT / "etc").iterdir():
            (d / "etc" / f.name).write_bytes(f.read_bytes())
        env = {k: v for k, v in os.environ.items() if k not in ("IMSP2P_CONFIG", "PYTHONPATH")}
        p = subprocess.Popen(
            [
                str(BIN / "twistd"),
                "-n",
                "--pidfile=",
                "imsp2p",
                "--role=all",
                "--config",
                "etc/imsp2pd.toml",
            ],
            cwd=d,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait(), p.stdout.close()))
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and p.poll() is None:
            try:
                with urllib.request.urlopen("http://127.0.0.1:9100/health", timeout=5) as r:
                    health = json.loads(r.read())
                    break
            except urllib.error.HTTPError as e:
                health = json.loads(e.read())
            except OSError:
                pass
            time.sleep(0.2)
        self.assertIsNotNone(
            health, p.stdout.read().decode() if p.poll() is not None else "no answer"
        )
        self.assertEqual(health["status"], "ok", health)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        # twistd shuts the reactor down cleanly, then ends itself with the same
        # signal so that its exit status says why it stopped.
        self.assertIn(p.wait(10), (0, -signal.SIGTERM))
        self.assertLess(time.monotonic() - t0, 5.0)
        self.assertIn(b"Server Shut Down.", p.stdout.read())
