"""``imsp2p demo``: both use cases of the paper, end to end, on loopback.

It starts ``twistd -n imsp2p --role=all`` on a copy of the lab config (state
under ``var/demo/``, trackers re-announcing every few seconds so that the
statistics are fresh, the origin's upload rate-limited so that peer-to-peer
matters), then, as the users would, with the ``imsp2p`` commands:

1. carol publishes a generated file (publisher token, DRM registration,
   protection, private torrent, PUBLISH) and seeds it, rate-limited;
2. the operator's seeder takes it over while the swarm is muted, and the AS
   lists it once the seeder has it all;
3. alice, bob and generated consumers (provisioned at the HSS and the OCS
   through the admin API) buy it, download it from the swarm at once, get a
   license for their device and play it; the bytes are compared with carol's;
4. dave, without credit, tries to buy it and must get 402 and nothing else.

It ends with a report (the time of each step, the charging records, the
origin's upload against the file size, where the logs and the capture are)
whose last line is ``demo: K/N consumers played identical bytes; origin
uploaded X.XX× the file size``. The exit status is 0 only when every consumer
played identical bytes and dave got nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from imsp2pd.client.cli import Context, UserError
from imsp2pd.client.lab import Lab, die_with_parent

LAB_USERS = {"alice": "alice-pass", "bob": "bob-pass", "carol": "carol-pass", "dave": "dave-pass"}
SIGNALLING_PORTS = (4060, 5060, 6060, 7060, 3868, 3869)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def dump_toml(sections: dict[str, dict[str, Any]]) -> str:
    out = []
    for name, values in sections.items():
        out.append(f"[{name}]")
        out += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in values.items()]
        out.append("")
    return "\n".join(out)


class Demo:
    def __init__(self, ctx: Context, args: argparse.Namespace) -> None:
        self.ctx = ctx
        self.args = args
        self.lab_config = ctx.config
        self.root = self.lab_config.state_path("demo")
        self.steps: list[tuple[str, float]] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.t0 = time.monotonic()
        self.last = self.t0

    # -- plumbing ------------------------------------------------------------

    def step(self, what: str) -> None:
        now = time.monotonic()
        self.steps.append((what, now - self.last))
        self.ctx.print(f"demo: {what} ({now - self.last:.1f}s)")
        if hasattr(self.ctx.stdout, "flush"):
            self.ctx.stdout.flush()
        self.last = now

    def prepare(self) -> Path:
        if self.root.exists():
            shutil.rmtree(self.root)
        (self.root / "etc").mkdir(parents=True)
        (self.root / "logs").mkdir()
        raw = tomllib.loads(self.lab_config.file.read_text())
        raw.setdefault("daemon", {})["state_dir"] = "../state"
        for role in ("hss", "ocs"):  # the lab's subscribers and balances, where they are
            section = raw.setdefault(role, {})
            prov = section.get("provisioning", "subscribers.toml")
            if prov:
                section["provisioning"] = str(self.lab_config.path(prov))
        tracker = raw.setdefault("tracker", {})
        tracker.update(interval=5, min_interval=1, peer_expiry=60)
        seeder = raw.setdefault("seeder", {})
        seeder.update(upload_kib=self.args.origin_kib, poll=0.5)
        client = raw.setdefault("client", {})
        client["home"] = "../clients"
        path = self.root / "etc" / "imsp2pd.toml"
        path.write_text(dump_toml(raw))
        return path

    def spawn(
        self, name: str, *cmd: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.root / "logs" / f"{name}.log", "ab")
        p = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env or self.env,
            preexec_fn=die_with_parent,
        )
        log.close()
        self.procs.append(p)
        return p

    def imsp2p(
        self, name: str, *args: str, password: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if password:
            env["IMSP2P_PASSWORD"] = password
        r = subprocess.run([*self.cli, *args], env=env, capture_output=True, text=True, timeout=600)
        with open(self.root / "logs" / f"{name}.log", "a") as f:
            f.write(f"$ imsp2p {' '.join(args)}\n{r.stdout}{r.stderr}exit {r.returncode}\n")
        if check and r.returncode != 0:
            raise UserError(
                f"imsp2p {args[0]} ({name}) failed: {(r.stderr or r.stdout).strip()[-300:]}"
            )
        return r

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        return self.ctx_demo.admin(method, path, body)

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()

    # -- the run ----------------------------------------------------------------

    def run(self) -> int:

        config_path = self.prepare()
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.env["IMSP2P_CONFIG"] = str(config_path)
        self.env["IMSP2P_KEYSTORE_PASSPHRASE"] = "demo-device-passphrase"
        self.cli = [str(Path(sys.executable).with_name("imsp2p"))]
        if not Path(self.cli[0]).exists():
            self.cli = [sys.executable, "-m", "imsp2pd.client.cli"]
        self.ctx_demo = Context(str(config_path))
        self.lab: Lab | None = None
        capture = self.start_capture()
        try:
            return self.use_cases(capture)
        finally:
            self.stop_all()
            if self.lab is not None:
                self.lab.stop()

    def start_capture(self) -> Path | None:
        tshark = shutil.which("tshark") or shutil.which("dumpcap")
        if tshark is None:
            return None
        path = self.root / "signalling.pcapng"
        flt = " or ".join(f"port {p}" for p in SIGNALLING_PORTS)
        self.spawn("capture", tshark, "-q", "-i", "lo", "-f", flt, "-w", str(path))
        return path

    def use_cases(self, capture: Path | None) -> int:
        args = self.args
        self.lab = Lab(self.ctx_demo, "all", log_path=self.root / "logs" / "daemon.log")
        health = self.lab.start(timeout=60)
        self.step(f"lab up with roles {', '.join(sorted(health['roles']))}")

        consumers = ["alice", "bob"] + [
            f"consumer{i}" for i in range(1, max(0, args.consumers - 2) + 1)
        ]
        consumers = consumers[: args.consumers]
        for name in consumers:
            if name in LAB_USERS:
                continue
            impi = f"{name}@ims.example.org"
            self.admin(
                "PUT",
                f"/admin/subscribers/{impi}",
                {"impus": [f"sip:{name}@ims.example.org"], "password": f"{name}-pass"},
            )
            self.admin("POST", f"/admin/balances/sip:{name}@ims.example.org", {"balance": "100.00"})
        self.step(f"{len(consumers)} consumers provisioned at the HSS and the OCS")

        original = self.root / "original.bin"
        rng = random.Random(20261126)
        with open(original, "wb") as f:
            for _ in range(args.size):
                f.write(rng.randbytes(1024 * 1024))
        digest = hashlib.sha256(original.read_bytes()).hexdigest()
        r = self.imsp2p(
            "carol",
            "publish",
            str(original),
            "--user",
            "carol",
            "--title",
            "Demo film",
            "--genre",
            "demo",
            "--description",
            "generated for the demo",
            "--offer",
            "rent,2.50,EUR,play_seconds_from_first_use=172800,devices=2",
            password=LAB_USERS["carol"],
        )
        (info,) = (self.root / "clients" / "carol" / "published").glob("*.json")
        published = json.loads(info.read_text())
        doi, ih = published["doi"], published["info_hash"]
        self.step(
            f"carol published {doi} ({args.size} MiB), swarm muted: {r.stdout.splitlines()[0]}"
        )

        carol_seed = self.spawn(
            "carol-seed",
            *self.cli,
            "seed",
            str(info),
            "--user",
            "carol",
            "--upload-rate",
            str(args.origin_kib),
            env=dict(self.env, IMSP2P_PASSWORD=LAB_USERS["carol"]),
        )
        for _ in range(6000):
            listed = self.admin("GET", "/admin/publications?state=listed")["publications"]
            if any(p["doi"] == doi for p in listed):
                break
            time.sleep(0.1)
        else:
            raise UserError("the operator's seeder never completed the swarm")
        self.step(
            "the operator's seeder fetched it from carol while muted; the AS unmuted and listed it"
        )

        grants = {}
        for name in consumers:
            grant = self.root / "clients" / f"{name}.grant.json"
            self.imsp2p(
                name,
                "buy",
                doi,
                "--offer",
                "rent",
                "--user",
                name,
                "-o",
                str(grant),
                password=LAB_USERS.get(name, f"{name}-pass"),
            )
            grants[name] = grant
        self.step(f"{len(consumers)} purchases charged at the OCS, grants received over SIP")

        downloads = {}
        for name in consumers:
            out = self.root / "clients" / f"{name}.imsp2p"
            downloads[name] = (
                out,
                self.spawn(
                    f"{name}-download",
                    *self.cli,
                    "download",
                    str(grants[name]),
                    "-o",
                    str(out),
                    "--quiet",
                    "--timeout",
                    "900",
                ),
            )
        failed_downloads = []
        for name, (_, p) in downloads.items():
            if p.wait() != 0:
                failed_downloads.append(name)
        self.step(
            f"{len(consumers) - len(failed_downloads)}/{len(consumers)} downloads complete from the swarm"
        )

        played = 0
        for name in consumers:
            if name in failed_downloads:
                continue
            out = self.root / "clients" / f"{name}.plain"
            r = self.imsp2p(
                name,
                "play",
                str(grants[name]),
                str(downloads[name][0]),
                "-o",
                str(out),
                "--keystore",
                str(self.root / "clients" / f"{name}.keystore"),
                check=False,
            )
            if r.returncode == 0 and hashlib.sha256(out.read_bytes()).hexdigest() == digest:
                played += 1
        self.step(f"{played} licenses issued and contents played")

        r = self.imsp2p(
            "dave",
            "buy",
            doi,
            "--offer",
            "rent",
            "--user",
            "dave",
            "-o",
            str(self.root / "clients" / "dave.grant.json"),
            password=LAB_USERS["dave"],
            check=False,
        )
        dave_refused = r.returncode != 0 and "402" in r.stderr
        dave_nothing = not (self.root / "clients" / "dave.grant.json").exists()
        self.step(f"dave without credit: {r.stderr.strip() or r.stdout.strip()}")

        # final statistics: carol stops (her last announce carries her totals), and the
        # seeder re-announces within one tracker interval
        carol_seed.send_signal(signal.SIGTERM)
        carol_seed.wait(30)
        time.sleep(6)
        stats = self.admin("GET", f"/admin/swarms/{ih}")
        size = Path(published["protected"]).stat().st_size
        origin = stats.get("origin_uploaded", 0) / float(size)
        records = self.admin("GET", "/admin/charging-records")["records"]

        self.ctx.print("")
        self.ctx.print("demo report")
        for what, seconds in self.steps:
            self.ctx.print(f"  {seconds:7.1f}s  {what}")
        self.ctx.print(f"  total {time.monotonic() - self.t0:.1f}s")
        self.ctx.print("charging records")
        for rec in records:
            if rec.get("action") == "ADMIN":
                continue
            self.ctx.print(
                f"  {rec['impu']:<34} {rec['action']:<16} {rec['amount']:>7} {rec['currency']} "
                f"result {rec['result_code']} icid {rec.get('icid') or '-'}"
            )
        self.ctx.print(
            f"swarm {ih}: {stats.get('completed')} completed, "
            f"{stats.get('uploaded', 0) / 2**20:.1f} MiB uploaded in all, "
            f"{stats.get('origin_uploaded', 0) / 2**20:.1f} MiB by the origin (carol and the seeder)"
        )
        self.ctx.print(
            f"logs: {self.root / 'logs'}; capture: {capture or 'none (tshark not installed)'}"
        )
        self.ctx.print(
            f"dave: {'402, nothing granted' if dave_refused and dave_nothing else 'NOT refused as he should be'}"
        )
        self.ctx.print(
            f"demo: {played}/{len(consumers)} consumers played identical bytes; "
            f"origin uploaded {origin:.2f}× the file size"
        )
        return 0 if played == len(consumers) and dave_refused and dave_nothing else 1


def run(args: argparse.Namespace, ctx: Context) -> int:
    if args.consumers < 1 or args.size < 1:
        raise UserError("--consumers and --size must be positive")
    return Demo(ctx, args).run()
