"""The paper's two use cases as a user runs them: the `imsp2p` commands against a daemon.

carol publishes a file (publisher token, DRM registration, protection, private
torrent, PUBLISH) and seeds it; the operator's seeder takes it over while the
swarm is muted and tells the AS, which unmutes the swarm and lists it;
alice finds it on the index, buys it, downloads it from the swarm, gets a
license for her device and plays identical bytes; dave, without credit, gets
402 and nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.integration.labkit import BIN, Daemon, write_lab

ROLES = "hss,pcscf,icscf,scscf,ocs,drm,tracker,as,index,seeder"


class CliEndToEndTests(TestCase):
    timeout = 300

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        self.config, self.p = write_lab(
            self.dir, balances={"alice": "10.00", "dave": "0.00"}, listing="auto"
        )
        self.env = {k: v for k, v in os.environ.items() if k not in ("IMSP2P_CONFIG", "PYTHONPATH")}
        self.env["IMSP2P_CONFIG"] = str(self.config)
        self.env["IMSP2P_KEYSTORE_PASSPHRASE"] = "device-pass"
        self.procs: list[subprocess.Popen] = []
        self.addCleanup(self._stop)
        self.daemon = Daemon(self.config, ROLES, self.p["ctl"])
        self.addCleanup(self.daemon.stop)
        self.daemon.wait_healthy()

    def spawn(self, name: str, *cmd: str) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "wb")
        p = subprocess.Popen(cmd, cwd=self.dir, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(p)
        return p

    def tail(self, name: str) -> str:
        return (self.dir / f"{name}.log").read_text(errors="replace")[-3000:]

    def _stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()

    def imsp2p(
        self, *args: str, password: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        env = dict(self.env)
        if password:
            env["IMSP2P_PASSWORD"] = password
        r = subprocess.run(
            [str(BIN / "imsp2p"), *args],
            cwd=self.dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and r.returncode != 0:
            self.fail(
                f"imsp2p {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}\n"
                + self.daemon.log()
            )
        return r

    def test_publish_seed_buy_download_play(self) -> None:
        original = self.dir / "film.bin"
        original.write_bytes(os.urandom(3 * 1024 * 1024 + 12345))
        r = self.imsp2p(
            "publish",
            str(original),
            "--user",
            "carol",
            "--title",
            "Film One",
            "--genre",
            "drama",
            "--offer",
            "rent,2.50,EUR,plays=3,devices=2",
            password="carol-pass",
        )
        self.assertIn("published 10.5555/", r.stdout)
        (info,) = (self.dir / "var" / "client" / "carol" / "published").glob("*.json")
        published = json.loads(info.read_text())
        doi = published["doi"]
        seeder = self.spawn(
            "seed",
            str(BIN / "imsp2p"),
            "torrent",
            "seed",
            published["torrent"],
            published["protected"],
            "--announce",
            published["announce_url"],
        )
        # the AS lists the content once the provider seeds the whole of it
        for _ in range(200):
            if seeder.poll() is not None:
                self.fail("seeder exited: " + self.tail("seed"))
            r = self.imsp2p("browse", "--json")
            if doi in r.stdout:
                break
            time.sleep(0.2)
        else:
            self.fail(f"{doi} never listed; seeder: {self.tail('seed')}")

        status = json.loads(self.imsp2p("admin", "seeder", "status").stdout)
        (swarm,) = status["swarms"]
        self.assertEqual(
            (swarm["doi"], swarm["state"], swarm["reported_complete"]), (doi, "seeding", True)
        )
        grant = self.dir / "grant.json"
        r = self.imsp2p(
            "buy",
            doi,
            "--offer",
            "rent",
            "--user",
            "alice",
            "-o",
            str(grant),
            password="alice-pass",
        )
        self.assertIn(f"bought {doi}", r.stdout)
        download = self.dir / "film.dl"
        self.imsp2p("download", str(grant), "-o", str(download), "--timeout", "90", "--quiet")
        out = self.dir / "film.out"
        self.imsp2p(
            "play",
            str(grant),
            str(download),
            "-o",
            str(out),
            "--keystore",
            str(self.dir / "alice.keystore"),
        )
        self.assertEqual(out.read_bytes(), original.read_bytes())

        r = self.imsp2p(
            "buy", doi, "--offer", "rent", "--user", "dave", password="dave-pass", check=False
        )
        self.assertEqual(r.returncode, 1)
        self.assertIn("402", r.stderr)
        self.assertEqual(r.stderr.count("\n"), 1)
        self.assertFalse(
            (self.dir / "var" / "client" / "dave" / "grants").exists()
            and any((self.dir / "var" / "client" / "dave" / "grants").iterdir())
        )
