"""Peer-wire benchmark: one file over loopback, our seeder to our leecher and
libtorrent to libtorrent in the same run; prints MiB/s and the ratio.

Usage: ``.venv/bin/python bench/bt_loopback.py [--size-mib 256] [--piece-kib 256]``.

Ours: ``imsp2p torrent seed`` and ``imsp2p torrent fetch`` as two processes
(so each has its own core, as libtorrent's threads do), timed from the
start of the fetch process to its exit (session start, connection, the
SHA-1 check of every piece and the final check of the file included).
libtorrent: two sessions in this process, timed from adding the leecher's
torrent to ``is_seeding``. Target (issue 5): at least half of libtorrent's
rate (stretch 0.8).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
            block = block[1:] + block[:1]  # pieces differ from each other


def ours(tmp: Path, torrent: Path, src: Path) -> float:
    imsp2p = [sys.executable, "-m", "imsp2pd.client.cli", "torrent"]
    port = free_port()
    seed = subprocess.Popen(
        [*imsp2p, "seed", str(torrent), str(src), "--port", str(port), "--announce", ""],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert seed.stdout is not None
        seed.stdout.readline()  # "seeding …": listening
        out = tmp / "ours.out"
        start = time.perf_counter()
        subprocess.run(
            [
                *imsp2p,
                "fetch",
                str(torrent),
                "-o",
                str(out),
                "--announce",
                "",
                "--quiet",
                "--peer",
                f"127.0.0.1:{port}",
            ],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - start
    finally:
        seed.send_signal(signal.SIGTERM)
        seed.wait(10)
        if seed.stdout is not None:
            seed.stdout.close()
    if out.stat().st_size != src.stat().st_size:
        raise SystemExit("our leecher's file has the wrong size")
    out.unlink()
    return elapsed


def libtorrent(tmp: Path, torrent: Path, src: Path) -> float | None:
    try:
        import libtorrent as lt
    except ImportError:
        return None
    settings = {
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
    }
    lt_any: Any = lt
    info = lt_any.torrent_info(str(torrent))
    seed_s = lt_any.session(settings)
    p = lt_any.add_torrent_params()
    p.ti = info
    p.save_path = str(src.parent)
    seed_h = seed_s.add_torrent(p)
    while not seed_h.status().is_seeding:
        time.sleep(0.05)
    (tmp / "lt").mkdir()
    start = time.perf_counter()
    leech_s = lt_any.session(settings)
    p = lt_any.add_torrent_params()
    p.ti = lt_any.torrent_info(str(torrent))
    p.save_path = str(tmp / "lt")
    leech_h = leech_s.add_torrent(p)
    leech_h.connect_peer(("127.0.0.1", seed_s.listen_port()))
    while not leech_h.status().is_seeding:
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    del leech_h, seed_h
    del leech_s, seed_s
    shutil.rmtree(tmp / "lt", ignore_errors=True)
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--piece-kib", type=int, default=256)
    args = ap.parse_args()
    from imsp2pd.bittorrent.metainfo import make_metainfo

    tmp = Path(tempfile.mkdtemp(prefix="imsp2p-bt-bench-"))
    try:
        size = args.size_mib << 20
        src = tmp / "content.bin"
        make_file(src, size)
        meta = make_metainfo(src, "http://127.0.0.1:1/announce", piece_length=args.piece_kib << 10)
        torrent = tmp / "content.torrent"
        torrent.write_bytes(meta.to_bytes())
        t_lt = libtorrent(tmp, torrent, src)
        t_ours = ours(tmp, torrent, src)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mib = size / (1 << 20)
    print(f"peer-wire benchmark: {args.size_mib} MiB, {args.piece_kib} KiB pieces, loopback")
    print(f"  ours -> ours             {mib / t_ours:8.1f} MiB/s ({t_ours:.2f} s)")
    if t_lt is None:
        print("  libtorrent: not installed (pip install libtorrent); no ratio")
        return 0
    print(f"  libtorrent -> libtorrent {mib / t_lt:8.1f} MiB/s ({t_lt:.2f} s)")
    print(f"ratio ours/libtorrent: {t_lt / t_ours:.3f} (target >= 0.5, stretch 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
