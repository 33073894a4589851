"""Tracker benchmark: announces/s and p99 latency with wrk, ours against opentracker.

Usage: ``.venv/bin/python bench/tracker_wrk.py [--swarms 10000] [--peers 10000]
[--duration 10] [--connections 50]``.

Both trackers get the same load in the same run: wrk (one thread per core
given, ``--connections`` connections) announces with a Lua script that picks
a random swarm (info_hash) and a random peer (peer_id and port) out of
``--peers``, so the swarms fill up to that many peers. Our tracker runs in
one process (one core), with every swarm registered and active and a valid
entitlement token per swarm in the announce URL (verification cached by
token id, as in production); opentracker runs with a whitelist of the same
info-hashes. Each is measured twice: with HTTP keep-alive and with
``Connection: close`` (opentracker closes every connection anyway, so wrk
counts a read error per request against it: those are answered requests).
The last lines print the ratios ours/opentracker. Targets (issue 5): at
least 5,000 announces/s on one core and p99 at most 20 ms with 10,000 peers.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, seconds: float = 20) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def serve(port: int, keyfile: str, hashes_file: str) -> None:
    """Our tracker, alone in this process (the benchmark's subject)."""
    from cryptography.hazmat.primitives import serialization
    from twisted.internet import reactor as _reactor

    from imsp2pd.bittorrent.tracker import SwarmState, Tracker, TrackerConfig
    from imsp2pd.bittorrent.tracker_http import TrackerResource
    from imsp2pd.entitlement import Verifier
    from imsp2pd.web import make_site

    reactor: Any = _reactor
    key: Any = serialization.load_pem_private_key(Path(keyfile).read_bytes(), None)
    tracker = Tracker(Verifier(key.public_key()), TrackerConfig(max_peers=1_000_000))
    for line in Path(hashes_file).read_text().split():
        tracker.register(bytes.fromhex(line), None, SwarmState.ACTIVE)
    site: Any = make_site(TrackerResource(tracker, reactor.seconds), reactor=reactor)
    site.noisy = False
    site.log = lambda request: None  # no access log in the benchmark
    reactor.listenTCP(port, site, backlog=1024, interface="127.0.0.1")
    reactor.run()


LUA = """
local swarms = {%s}
local tokens = {%s}
local npeers = %d
math.randomseed(os.time())
request = function()
  local i = math.random(#swarms)
  local p = math.random(npeers) - 1
  local pid = string.format("-BE0001-%%012d", p)
  local path = "/announce?info_hash=" .. swarms[i] .. "&peer_id=" .. pid ..
    "&port=" .. (10000 + p %% 50000) .. "&uploaded=0&downloaded=0&left=" .. (p %% 3) ..
    "&compact=1&numwant=50" .. tokens[i]
  return wrk.format("GET", path, headers)
end
"""


def write_lua(path: Path, hashes: list[bytes], tokens: list[str], npeers: int) -> None:
    def esc(b: bytes) -> str:
        return '"' + quote_from_bytes(b, safe="") + '"'

    swarms = ",".join(esc(h) for h in hashes)
    toks = ",".join(f'"&token={t}"' if t else '""' for t in tokens)
    headers = "headers = {}\n"
    path.write_text(headers + LUA % (swarms, toks, npeers))


def run_wrk(
    url: str, script: Path, seconds: int, conns: int, close: bool
) -> tuple[float, float, int]:
    cmd = [
        "wrk",
        "-t",
        "1",
        "-c",
        str(conns),
        "-d",
        f"{seconds}s",
        "--latency",
        "-s",
        str(script),
    ]
    if close:
        cmd += ["-H", "Connection: close"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert found is not None, out
    rps = float(found.group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Socket errors:.*read (\d+)", out)
    return rps, float(p99.group(1)) * scale, int(errors.group(1)) if errors else 0


def check_answer(url: str, info_hash: bytes, token: str) -> None:
    """One announce by hand: the benchmark must measure admissions, not refusals."""
    import urllib.request

    from imsp2pd.bittorrent.bencoding import bdecode

    query = (
        f"?info_hash={quote_from_bytes(info_hash, safe='')}&peer_id=-BE0001-000000000000"
        f"&port=10000&uploaded=0&downloaded=0&left=1&compact=1&token={token}"
    )
    with urllib.request.urlopen(url + query, timeout=10) as resp:
        body = bdecode(resp.read())
    if b"failure reason" in body:
        raise SystemExit(f"our tracker refused the benchmark's announce: {body}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--swarms", type=int, default=10_000)
    ap.add_argument("--peers", type=int, default=10_000)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    ap.add_argument("--hashes", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.key, args.hashes)
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian package wrk)")
        return 2

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from imsp2pd.entitlement import Issuer

    tmp = Path(tempfile.mkdtemp(prefix="imsp2p-bench-"))
    os.chmod(tmp, 0o755)
    key = Ed25519PrivateKey.generate()
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    hashes = [os.urandom(20) for _ in range(args.swarms)]
    (tmp / "hashes.txt").write_text("\n".join(h.hex() for h in hashes) + "\n")
    (tmp / "hashes.txt").chmod(0o644)
    issuer = Issuer(key)
    tokens = [
        issuer.issue_tracker("sip:bench@ims.example.org", h, "consumer", 2**40) for h in hashes
    ]
    write_lua(tmp / "ours.lua", hashes, tokens, args.peers)
    write_lua(tmp / "theirs.lua", hashes, [""] * len(hashes), args.peers)

    results: dict[tuple[str, bool], tuple[float, float, int]] = {}
    ours_port = free_port()
    ours = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            str(ours_port),
            "--key",
            str(tmp / "key.pem"),
            "--hashes",
            str(tmp / "hashes.txt"),
        ],
        cwd=ROOT,
    )
    try:
        wait_port(ours_port)
        url = f"http://127.0.0.1:{ours_port}/announce"
        check_answer(url, hashes[0], tokens[0])
        run_wrk(url, tmp / "ours.lua", 2, args.connections, False)  # warm-up: fill the swarms
        for close in (False, True):
            results[("ours", close)] = run_wrk(
                url, tmp / "ours.lua", args.duration, args.connections, close
            )
    finally:
        ours.send_signal(signal.SIGTERM)
        ours.wait(10)
    if shutil.which("opentracker"):
        ot_port = free_port()
        ot = subprocess.Popen(
            [
                "opentracker",
                "-i",
                "127.0.0.1",
                "-p",
                str(ot_port),
                "-P",
                str(ot_port),
                "-w",
                str(tmp / "hashes.txt"),
                "-d",
                str(tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(ot_port)
            url = f"http://127.0.0.1:{ot_port}/announce"
            run_wrk(url, tmp / "theirs.lua", 2, args.connections, False)
            for close in (False, True):
                results[("opentracker", close)] = run_wrk(
                    url, tmp / "theirs.lua", args.duration, args.connections, close
                )
        finally:
            ot.send_signal(signal.SIGTERM)
            ot.wait(10)
    shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"tracker benchmark: {args.swarms} swarms, up to {args.peers} peers, "
        f"{args.connections} connections, {args.duration} s each"
    )
    for (who, close), (rps, p99, errors) in sorted(results.items()):
        mode = "Connection: close" if close else "keep-alive"
        note = f" ({errors} read errors: connections closed by the server)" if errors else ""
        print(f"  {who:12s} {mode:18s} {rps:10.0f} announces/s  p99 {p99:7.2f} ms{note}")
    for close in (False, True):
        if ("opentracker", close) in results:
            ratio = results[("ours", close)][0] / results[("opentracker", close)][0]
            print(f"ratio ours/opentracker ({'close' if close else 'keep-alive'}): {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
