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
import signal
import subprocess
import time
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.integration.labkit import BIN, Daemon, write_lab

ROLES = "hss,pcscf,icscf,scscf,ocs,drm,tracker,as,index,seeder"


class CliLab(TestCase):
    """A daemon with every role on a lab config, and the `imsp2p` commands against it."""

    timeout = 300
    seeder_kib = 0  # the operator seeder's upload limit (0: none)

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        self.config, self.p = write_lab(
            self.dir,
            balances={"alice": "10.00", "dave": "0.00"},
            listing="auto",
            seeder_upload_kib=self.seeder_kib,
        )
        self.env = {k: v for k, v in os.environ.items() if k not in ("IMSP2P_CONFIG", "PYTHONPATH")}
        self.env["IMSP2P_CONFIG"] = str(self.config)
        self.env["IMSP2P_KEYSTORE_PASSPHRASE"] = "device-pass"
        self.procs: list[subprocess.Popen] = []
        self.addCleanup(self._stop)
        self.daemon = Daemon(self.config, ROLES, self.p["ctl"])
        self.addCleanup(self.daemon.stop)
        self.daemon.wait_healthy()

    def spawn(self, name: str, *cmd: str, password: str | None = None) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "wb")
        env = dict(self.env, IMSP2P_PASSWORD=password) if password else self.env
        p = subprocess.Popen(cmd, cwd=self.dir, env=env, stdout=log, stderr=subprocess.STDOUT)
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

    def publish_and_seed(self, size: int, upload_kib: int | None = None) -> tuple[Path, dict, str]:
        """carol publishes ``size`` random bytes and seeds them; returns (original, publication, DOI)
        once the AS lists the content."""
        original = self.dir / "film.bin"
        original.write_bytes(os.urandom(size))
        r = self.imsp2p("publish", str(original), "--user", "carol", "--title", "Film One",
                        "--genre", "drama", "--offer", "rent,2.50,EUR,plays=3,devices=2",
                        password="carol-pass")  # fmt: skip
        self.assertIn("published 10.5555/", r.stdout)
        (info,) = (self.dir / "var" / "client" / "carol" / "published").glob("*.json")
        published = json.loads(info.read_text())
        doi = published["doi"]
        rate = ["--upload-rate", str(upload_kib)] if upload_kib else []
        seeder = self.spawn("seed", str(BIN / "imsp2p"), "seed", str(info), "--user", "carol", *rate,
                            password="carol-pass")  # fmt: skip
        # the AS lists the content once the operator's seeder has all of it
        for _ in range(300):
            if seeder.poll() is not None:
                self.fail("seeder exited: " + self.tail("seed"))
            if doi in self.imsp2p("browse", "--json").stdout:
                break
            time.sleep(0.2)
        else:
            self.fail(f"{doi} never listed; seeder: {self.tail('seed')}")
        return original, published, doi


class CliEndToEndTests(CliLab):
    def test_publish_seed_buy_download_play(self) -> None:
        original, published, doi = self.publish_and_seed(3 * 1024 * 1024 + 12345)
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


class RestartTests(CliLab):
    """kill -9 of the daemon (and of the client) in the middle of a download loses nothing."""

    seeder_kib = 256

    def test_kill_mid_download_then_resume(self) -> None:
        from imsp2pd.bittorrent.metainfo import parse_metainfo
        from imsp2pd.bittorrent.storage import Storage

        original, published, doi = self.publish_and_seed(4 * 1024 * 1024)
        # from now on only the operator's seeder (256 KiB/s) serves the swarm
        self.procs[-1].terminate()
        self.procs[-1].wait()
        status = json.loads(self.imsp2p("admin", "seeder", "status").stdout)
        self.assertEqual(status["upload_rate"], 256 * 1024)
        grant = self.dir / "grant.json"
        self.imsp2p(
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
        first = json.loads(grant.read_text())
        download = self.dir / "film.dl"
        fetch = self.spawn(
            "fetch", str(BIN / "imsp2p"), "download", str(grant), "-o", str(download), "--quiet"
        )
        time.sleep(3)
        fetch.kill()
        fetch.wait()
        self.daemon.stop(signal.SIGKILL)
        meta = parse_metainfo(Path(str(download) + ".torrent").read_bytes())
        storage = Storage(meta, download, create=False)
        have = sum(storage.check())
        storage.close()
        self.assertTrue(
            0 < have < meta.num_pieces, f"{have} of {meta.num_pieces} pieces at the kill"
        )

        self.daemon = Daemon(self.config, ROLES, self.p["ctl"], name="daemon2")
        self.addCleanup(self.daemon.stop)
        self.daemon.wait_healthy()
        # the purchase survived: the same purchase id gives the same grant, charged once
        self.imsp2p("buy", doi, "--offer", "rent", "--user", "alice", "--purchase-id", first["purchase_id"],
                    "-o", str(grant), password="alice-pass")  # fmt: skip
        self.assertEqual(json.loads(grant.read_text()), first)
        balance = json.loads(
            self.imsp2p("admin", "balance", "show", "sip:alice@ims.example.org").stdout
        )
        self.assertEqual(balance["balance"], "7.50")
        records = json.loads(
            self.imsp2p(
                "admin", "charging", "records", "--user", "sip:alice@ims.example.org"
            ).stdout
        )["records"]
        self.assertEqual(
            [(r["action"], r["amount"], r["result_code"]) for r in records],
            [("DIRECT_DEBITING", "2.50", 2001)],
        )
        # the partial download resumes and completes; the license comes from the restarted DRM server
        self.imsp2p(
            "download", str(grant), "-o", str(download), "--timeout", "120", "--quiet", timeout=180
        )
        out = self.dir / "film.out"
        self.imsp2p("play", str(grant), str(download), "-o", str(out),
                    "--keystore", str(self.dir / "alice.keystore"))  # fmt: skip
        self.assertEqual(out.read_bytes(), original.read_bytes())
