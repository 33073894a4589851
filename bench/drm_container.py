"""Benchmark: container encryption and decryption-with-verification, beside OpenSSL.

For each piece length (256 KiB and 1 MiB by default) it protects SIZE bytes
(1 GiB by default) into a temporary file and then verifies and decrypts it,
streaming, and prints GB/s for both (encryption also with its output
discarded, to separate the crypto from the disk) next to ``openssl speed -evp aes-128-gcm``
at the same block size, measured in the same run, and the ratio. One core:
the work runs in this one process. The plaintext comes from a reused buffer
and decrypted output goes nowhere, so what is measured is the container code
plus reading the ciphertext file (from the page cache).

Target (the issue): decrypt+verify at least 1.2 GB/s at 1 MiB pieces.

    .venv/bin/python bench/drm_container.py [--size BYTES] [--pieces 262144,1048576]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from imsp2pd.drm import container

TARGET_DECRYPT_GBS = 1.2


class RepeatingSource:
    """``size`` bytes made of one random block repeated; readinto without allocation."""

    def __init__(self, size: int, block: int) -> None:
        self.left = size
        self.block = memoryview(os.urandom(block))

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buf), self.left, len(self.block))
        buf[:n] = self.block[:n]
        self.left -= n
        return n

    def read(self, n: int = -1) -> bytes:
        return b""


class NullSink:
    def write(self, data) -> int:  # type: ignore[no-untyped-def]
        return len(data)


def openssl_gbs(block: int, seconds: int = 3) -> float | None:
    """OpenSSL's AES-128-GCM throughput in GB/s at ``block`` bytes, or None."""
    if shutil.which("openssl") is None:
        return None
    out = subprocess.run(
        ["openssl", "speed", "-evp", "aes-128-gcm", "-seconds", str(seconds), "-bytes", str(block)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    m = re.search(r"^AES-128-GCM\s+([0-9.]+)k", out, re.MULTILINE | re.IGNORECASE)
    return float(m.group(1)) * 1000 / 1e9 if m else None


def _protect(size: int, piece_length: int, key: bytes, out) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    container.protect_stream(
        RepeatingSource(size, piece_length),  # type: ignore[arg-type]
        out,
        key,
        doi="10.5555/bench",
        key_id="k-bench",
        plaintext_length=size,
        piece_length=piece_length,
    )
    if hasattr(out, "flush"):
        out.flush()
    return size / (time.perf_counter() - t0) / 1e9


def run(size: int, piece_length: int, directory: str) -> tuple[float, float, float]:
    """GB/s of: encryption (output discarded), encryption to a file, decrypt+verify of it."""
    key = container.new_content_key()
    enc = _protect(size, piece_length, key, NullSink())
    path = os.path.join(directory, f"bench-{piece_length}.imsp2p")
    try:
        with open(path, "wb") as out:
            enc_file = _protect(size, piece_length, key, out)
        with open(path, "rb") as f:
            t0 = time.perf_counter()
            container.open_stream(f, NullSink(), key)  # type: ignore[arg-type]
            dec = size / (time.perf_counter() - t0) / 1e9
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return enc, enc_file, dec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1 << 30, help="plaintext bytes (default 1 GiB)")
    p.add_argument("--pieces", default="262144,1048576", help="piece lengths, comma separated")
    p.add_argument("--dir", default=None, help="directory for the temporary container")
    args = p.parse_args(argv)
    directory = args.dir or tempfile.gettempdir()
    ok = True
    print(f"container benchmark: {args.size / 2**30:.2f} GiB per run, one core")
    print(
        f"{'piece':>9} {'encrypt':>8} {'enc->file':>10} {'decrypt+verify':>15} "
        f"{'openssl':>8} {'enc/openssl':>12} {'dec/openssl':>12}   (GB/s)"
    )
    for piece in (int(x) for x in args.pieces.split(",")):
        enc, enc_file, dec = run(args.size, piece, directory)
        anchor = openssl_gbs(piece)
        if anchor:
            tail = f"{anchor:8.2f} {enc / anchor:12.2f} {dec / anchor:12.2f}"
        else:
            tail = f"{'n/a':>8} {'n/a':>12} {'n/a':>12}"
        print(f"{piece:>9} {enc:8.2f} {enc_file:10.2f} {dec:15.2f} {tail}")
        if piece == 1 << 20 and dec < TARGET_DECRYPT_GBS:
            ok = False
    print(
        f"target: decrypt+verify >= {TARGET_DECRYPT_GBS} GB/s at 1 MiB pieces: "
        f"{'met' if ok else 'NOT met'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
