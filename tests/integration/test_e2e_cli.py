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
import socket
import subprocess
import sys
import time
from pathlib import Path

from twisted.trial.unittest import TestCase

BIN = Path(sys.executable).parent
ROLES = "hss,pcscf,icscf,scscf,ocs,drm,tracker,as,index,seeder"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class CliEndToEndTests(TestCase):
    timeout = 300

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        etc = self.dir / "etc"
        etc.mkdir(parents=True)
        names = [
            "ctl",
            "hss",
            "pcscf",
            "pcscf_tls",
            "icscf",
            "scscf",
            "ocs",
            "drm",
            "trk",
            "as",
            "idx",
        ]
        p = dict(zip(names, free_ports(len(names)), strict=True))
        (etc / "subscribers.toml").write_text(
            f'[[psi]]\nidentity = "sip:content@ims.example.org"\n'
            f'application_server = "sip:127.0.0.1:{p["as"]}"\n'
            + "".join(
                f'[[subscriber]]\nimpi = "{u}@ims.example.org"\nimpus = ["sip:{u}@ims.example.org"]\n'
                f'password = "{u}-pass"\n'
                for u in ("alice", "carol", "dave")
            )
        )
        self.config = etc / "imsp2pd.toml"
        self.config.write_text(f"""
[daemon]
state_dir = "../var"
[admin]
listen = "tcp:{p["ctl"]}:interface=127.0.0.1"
url = "http://127.0.0.1:{p["ctl"]}"
token = "adm"
[client]
pcscf = "127.0.0.1:{p["pcscf"]}"
index_url = "http://127.0.0.1:{p["idx"]}"
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
"sip:dave@ims.example.org" = "0.00"
[drm]
listen = "127.0.0.1:{p["drm"]}"
url = "https://127.0.0.1:{p["drm"]}"
[tracker]
listen = "127.0.0.1:{p["trk"]}"
[index]
listen = "127.0.0.1:{p["idx"]}"
url = "http://127.0.0.1:{p["idx"]}"
scrape_interval = 2.0
scrape_timeout = 0.5
[index.tracker_admin]
"http://127.0.0.1:{p["trk"]}" = "http://127.0.0.1:{p["ctl"]}"
[as]
listen = "127.0.0.1:{p["as"]}"
scscf = "127.0.0.1:{p["scscf"]}"
ocs = "127.0.0.1:{p["ocs"]}"
trackers = ["http://127.0.0.1:{p["trk"]}"]
index_url = "http://127.0.0.1:{p["idx"]}"
listing = "auto"
[seeder]
poll = 0.3
[as.tracker_admin]
"http://127.0.0.1:{p["trk"]}" = "http://127.0.0.1:{p["ctl"]}"
""")
        self.env = {k: v for k, v in os.environ.items() if k not in ("IMSP2P_CONFIG", "PYTHONPATH")}
        self.env["IMSP2P_CONFIG"] = str(self.config)
        self.env["IMSP2P_KEYSTORE_PASSPHRASE"] = "device-pass"
        self.procs: list[subprocess.Popen] = []
        self.addCleanup(self._stop)
        self.daemon = self.spawn(
            "daemon", str(BIN / "twistd"), "-n", "--pidfile=", "imsp2p", f"--role={ROLES}"
        )
        for _ in range(300):
            if self.daemon.poll() is not None:
                self.fail("daemon exited: " + self.tail("daemon"))
            r = self.imsp2p("admin", "health", check=False)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        else:
            self.fail("daemon not healthy: " + self.tail("daemon"))

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
                + self.tail("daemon")
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
        self.assertEqual((swarm["doi"], swarm["state"], swarm["reported_complete"]), (doi, "seeding", True))
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
