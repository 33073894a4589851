"""``imsp2p lab``: start every role in one daemon, wait until it is healthy, report.

The daemon is ``twistd -n imsp2p --role=all`` with the same config as this
command; its log goes to ``var/log/lab.log`` under the state directory. With
``--keep`` the lab stays up until interrupted; otherwise it is stopped once
the report is printed. Exit status 0 only when every role came up.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from imsp2pd.client.cli import Context, UserError


def die_with_parent() -> None:
    """In a child before exec (Linux): be sent SIGTERM when the parent dies, so that a
    killed `imsp2p lab` or `imsp2p demo` leaves no daemon behind holding the lab's ports."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def twistd_command() -> list[str]:
    twistd = Path(sys.executable).with_name("twistd")
    return [str(twistd)] if twistd.exists() else [shutil.which("twistd") or "twistd"]


def get_health(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            return json.loads(e.read())
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


class Lab:
    """A daemon with every role, run as a child process."""

    def __init__(self, ctx: Context, roles: str = "all", log_path: Path | None = None) -> None:
        self.ctx = ctx
        self.roles = roles
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = log_path or ctx.config.state_path("log", "lab.log")

    def start(self, timeout: float = 60.0) -> dict[str, Any]:
        url = self.ctx.config["admin"]["url"]
        if get_health(url) is not None:
            raise UserError(f"a daemon already answers at {url}; stop it first")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        cmd = [
            *twistd_command(),
            "-n",
            "--pidfile=",
            "imsp2p",
            f"--role={self.roles}",
            f"--config={self.ctx.config.file}",
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
        log.close()
        deadline = time.monotonic() + timeout
        health = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
                raise UserError(f"the daemon exited ({self.proc.returncode}): {' | '.join(tail)}")
            health = get_health(url)
            if health is not None and health.get("status") == "ok":
                return health
            time.sleep(0.2)
        raise UserError(f"the daemon did not become healthy in {timeout:.0f}s: {health}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run(args: argparse.Namespace, ctx: Context) -> int:
    lab = Lab(ctx, args.roles)
    t0 = time.monotonic()
    try:
        health = lab.start()
        ctx.print(f"lab: daemon up in {time.monotonic() - t0:.1f}s (log: {lab.log_path})")
        for role, state in sorted(health["roles"].items()):
            ctx.print(f"lab: role {role:<8} {state}")
        for name, check in sorted(health.get("checks", {}).items()):
            ctx.print(f"lab: check {name:<16} {'ok' if check.get('ok') else 'FAILED'}")
        if args.keep:
            ctx.print(f"lab: running; control port {ctx.config['admin']['url']}; Ctrl-C stops it")
            assert lab.proc is not None
            lab.proc.wait()
        up = sum(1 for s in health["roles"].values() if s == "up")
        ctx.print(f"lab: {up}/{len(health['roles'])} roles up, status {health['status']}")
        return 0 if health["status"] == "ok" else 1
    except KeyboardInterrupt:
        return 0
    finally:
        lab.stop()
