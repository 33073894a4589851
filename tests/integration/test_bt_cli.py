"""``imsp2p torrent seed`` and ``imsp2p torrent fetch`` as processes over loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parents[2]


def imsp2p(*args: str) -> list[str]:
    return [sys.executable, "-m", "imsp2pd.client.cli", *args]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class TorrentCommandTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir(parents=True)
        self.data = os.urandom(1024 * 1024 + 3)
        self.src = self.dir / "src.bin"
        self.src.write_bytes(self.data)
        self.torrent = self.dir / "x.torrent"
        subprocess.run(
            imsp2p(
                "torrent",
                "make",
                str(self.src),
                "--announce",
                "http://127.0.0.1:1/announce",
                "--piece-length",
                "64K",
                "-o",
                str(self.torrent),
            ),
            check=True,
            cwd=ROOT,
            capture_output=True,
        )

    def start_seed(self, *extra: str) -> tuple[subprocess.Popen[str], int]:
        port = free_port()
        proc = subprocess.Popen(
            imsp2p(
                "torrent",
                "seed",
                str(self.torrent),
                str(self.src),
                "--port",
                str(port),
                "--announce",
                "",
                *extra,
            ),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def stop() -> None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            proc.stderr.close()

        self.addCleanup(stop)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        self.assertIn("seeding", line)
        return proc, port

    def fetch(self, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            imsp2p("torrent", "fetch", str(self.torrent), "-o", str(out), "--announce", "", *extra),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
        )

    def test_seed_then_fetch_then_resume(self) -> None:
        _, port = self.start_seed("--upload-rate", "100000", "--peer-upload-rate", "50000")
        out = self.dir / "out.bin"
        done = self.fetch(
            out, "--peer", f"127.0.0.1:{port}", "--timeout", "60", "--download-rate", "90000"
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(out.read_bytes(), self.data)
        self.assertIn("complete", done.stdout)
        again = self.fetch(out)  # already complete: nothing to fetch, exit 0
        self.assertEqual(again.returncode, 0, again.stderr)

    def test_fetch_fails_cleanly(self) -> None:
        out = self.dir / "none.bin"
        done = self.fetch(out)
        self.assertEqual(done.returncode, 1)
        self.assertIn("nowhere to fetch from", done.stderr)
        done = self.fetch(out, "--peer", f"127.0.0.1:{free_port()}", "--timeout", "2", "--quiet")
        self.assertEqual(done.returncode, 1)
        self.assertIn("timed out", done.stdout)
        bad = subprocess.run(
            imsp2p("torrent", "seed", str(self.torrent), str(out)),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(bad.returncode, 1)
        self.assertIn("does not match the torrent", bad.stderr)
