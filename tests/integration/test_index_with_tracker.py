"""The index and the real tracker in one daemon (``twistd -n imsp2p --role=tracker,index``):
swarm health read from the tracker's operator API, and by BEP 48 scrape with a
token the index signs, as real peers announce."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.trial.unittest import TestCase

from imsp2pd.bittorrent.metainfo import make_metainfo
from imsp2pd.content.catalogue import MIGRATIONS, AssetState, Catalogue, parse_metadata
from imsp2pd.entitlement import Issuer, TrackerRole, load_or_create_private_key
from imsp2pd.store import SQLiteStore

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class IndexWithTrackerTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        (self.dir / "etc").mkdir(parents=True)
        self.control, self.tport, self.iport = free_port(), free_port(), free_port()
        tracker = f"http://127.0.0.1:{self.tport}"
        config = self.dir / "etc" / "imsp2pd.toml"
        config.write_text(
            '[daemon]\nstate_dir = "../var"\n'
            f'[admin]\nlisten = "tcp:{self.control}:interface=127.0.0.1"\n'
            f'url = "http://127.0.0.1:{self.control}"\ntoken = "t0k"\n'
            f'[tracker]\nlisten = "127.0.0.1:{self.tport}"\nrevocations = "off"\n'
            f'[index]\nlisten = "127.0.0.1:{self.iport}"\nurl = "http://127.0.0.1:{self.iport}"\n'
            "scrape_interval = 1.0\nscrape_timeout = 0.5\n"
            f'[index.tracker_admin]\n"{tracker}" = "http://127.0.0.1:{self.control}"\n'
        )
        state = self.dir / "var"
        self.issuer = Issuer(load_or_create_private_key(state / "keys"))
        # asset "admin" is on a tracker URL the index knows the operator API of;
        # asset "scrape" names the same tracker by another host, so it is scraped
        self.info_hashes = self.make_catalogue(
            state / "imsp2pd.sqlite",
            {"10.5555/admin": tracker, "10.5555/scrape": f"http://localhost:{self.tport}"},
        )
        env = dict(os.environ, IMSP2P_CONFIG=str(config))
        self.daemon = subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", "imsp2p", "--role=tracker,index"],
            cwd=self.dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(self.stop)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                assert self.daemon.stdout is not None
                self.fail(f"daemon exited: {self.daemon.stdout.read().decode()}")
            try:
                if self.http(f"http://127.0.0.1:{self.control}/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            self.fail("daemon did not come up")

    def make_catalogue(self, path: Path, trackers: dict[str, str]) -> dict[str, str]:
        store = SQLiteStore(path)
        store.migrate(MIGRATIONS)
        cat = Catalogue(store, time.time)
        out = {}
        for doi, url in trackers.items():
            f = self.dir / doi.split("/")[1]
            f.write_bytes(doi.encode() * 4000)
            t = make_metainfo(f, f"{url}/announce", doi=doi).to_bytes()
            meta = parse_metadata(
                {
                    "title": doi,
                    "offers": [
                        {"id": "o", "price": "1", "currency": "EUR", "rights": {"plays": 1}}
                    ],
                }
            )
            got: list[Any] = []
            cat.add(
                meta,
                publisher="sip:carol@ims.example.org",
                torrent=t,
                tracker=url,
                state=AssetState.LISTED,
            ).addBoth(got.append)
            out[doi] = got[0].info_hash
        store.close()
        return out

    def stop(self) -> None:
        if self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(15)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(5)
        assert self.daemon.stdout is not None
        self.daemon.stdout.close()

    def http(self, url: str, body: Any = None) -> tuple[int, bytes]:
        req = urllib.request.Request(
            url,
            data=None if body is None else json.dumps(body).encode(),
            method="GET" if body is None else "POST",
        )
        req.add_header("Authorization", "Bearer t0k")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def announce(
        self,
        info_hash: str,
        role: TrackerRole,
        peer: int,
        left: int,
        up: int,
        event: str = "started",
    ) -> None:
        token = self.issuer.issue_tracker(
            f"sip:p{peer}@ims.example.org", bytes.fromhex(info_hash), role, int(time.time()) + 600
        )
        query = (
            f"info_hash={quote(bytes.fromhex(info_hash), safe='')}"
            f"&peer_id={quote(f'-IX0001-{peer:012d}', safe='')}&port={7000 + peer}"
            f"&uploaded={up}&downloaded=0&left={left}&compact=1&event={event}"
            f"&token={quote(token, safe='')}"
        )
        status, body = self.http(f"http://127.0.0.1:{self.tport}/announce?{query}")
        self.assertEqual(status, 200)
        self.assertNotIn(b"failure reason", body)

    def page_until(self, path: str, pattern: bytes) -> bytes:
        deadline = time.monotonic() + 15
        body = b""
        while time.monotonic() < deadline:
            _, body = self.http(f"http://127.0.0.1:{self.iport}{path}")
            if re.search(pattern, body):
                return body
            time.sleep(0.3)
        self.fail(f"{path} never matched {pattern!r}: {body.decode()[-600:]}")

    def test_swarm_health_from_the_real_tracker(self) -> None:
        admin_ih, scrape_ih = self.info_hashes["10.5555/admin"], self.info_hashes["10.5555/scrape"]
        for doi, ih in self.info_hashes.items():
            status, _ = self.http(
                f"http://127.0.0.1:{self.control}/admin/swarms",
                {"info_hash": ih, "doi": doi, "state": "active"},
            )
            self.assertEqual(status, 200)
        self.announce(admin_ih, TrackerRole.PROVIDER, 1, left=0, up=0)
        self.announce(admin_ih, TrackerRole.PROVIDER, 1, left=0, up=4096, event="")
        self.announce(admin_ih, TrackerRole.CONSUMER, 2, left=1000, up=0)
        self.announce(admin_ih, TrackerRole.CONSUMER, 3, left=500, up=0)
        self.announce(scrape_ih, TrackerRole.PROVIDER, 4, left=0, up=0)
        self.announce(scrape_ih, TrackerRole.CONSUMER, 5, left=10, up=0)

        body = self.page_until(
            "/assets/10.5555/admin",
            rb'Seeders <b class="seeders">1</b> \S+ leechers <b class="leechers">2</b>',
        )
        self.assertNotIn(b"Swarm health: unknown", body)
        # the other asset is scraped, with a seeder token the real tracker accepts
        self.page_until(
            "/assets/10.5555/scrape",
            rb'Seeders <b class="seeders">1</b> \S+ leechers <b class="leechers">1</b>',
        )
        status, body = self.http(f"http://127.0.0.1:{self.control}/admin/content/10.5555/scrape")
        self.assertEqual(status, 200)
        history = json.loads(body)["history"]
        self.assertTrue(any(h.get("leechers") == 1 for h in history))
        # a scrape has no upload totals; the operator API has them
        self.assertEqual({h.get("uploaded") for h in history}, {None})
        _, body = self.http(f"http://127.0.0.1:{self.control}/admin/content/10.5555/admin")
        self.assertEqual(json.loads(body)["health"]["uploaded"], 4096)

        page = self.page_until("/dashboard", rb'<polyline class="leechers"')
        self.assertIn(f'data-infohash="{admin_ih}"'.encode(), page)
        status, metrics = self.http(f"http://127.0.0.1:{self.control}/metrics")
        self.assertIn(b'imsp2pd_index_scrapes_total{result="ok"}', metrics)
