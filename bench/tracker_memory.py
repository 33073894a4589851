"""Tracker core at scale: memory and time for 100,000 peers across 10,000 swarms.

Usage: ``.venv/bin/python bench/tracker_memory.py [--swarms 10000] [--peers 100000]``.

Registers the swarms, announces every peer once (``started``, a valid token
per swarm, so the first announce of each swarm verifies a signature and the
rest hit the verifier's cache), then re-announces a fifth of them, and
prints the memory the tracker holds (tracemalloc, after the first pass) and
the mean time per announce of each pass. The anchor in the same run is the
cost of parsing the same announce queries alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path
from urllib.parse import quote_from_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--swarms", type=int, default=10_000)
    ap.add_argument("--peers", type=int, default=100_000)
    args = ap.parse_args()

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from imsp2pd.bittorrent.tracker import SwarmState, Tracker, TrackerConfig, parse_announce
    from imsp2pd.entitlement import Issuer, Verifier

    key = Ed25519PrivateKey.generate()
    issuer = Issuer(key)
    hashes = [os.urandom(20) for _ in range(args.swarms)]
    tokens = [issuer.issue_tracker("sip:b@ims.example.org", h, "consumer", 2**40) for h in hashes]
    queries = []
    for i in range(args.peers):
        s = i % args.swarms
        queries.append(
            (
                f"info_hash={quote_from_bytes(hashes[s], safe='')}&peer_id=-BE0001-{i:012d}"
                f"&port={10000 + i % 50000}&uploaded=0&downloaded=0&left={i % 2}&compact=1"
                f"&event=started&token={tokens[s]}"
            ).encode()
        )
    t0 = time.perf_counter()
    parsed = [parse_announce(q, "127.0.0.1") for q in queries]
    parse_us = (time.perf_counter() - t0) / len(queries) * 1e6

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracker = Tracker(
        Verifier(key.public_key()),
        TrackerConfig(max_peers=args.peers, max_swarms=args.swarms),
    )
    for h in hashes:
        tracker.register(h, None, SwarmState.ACTIVE)
    t0 = time.perf_counter()
    for req in parsed:
        tracker.announce(req, 1000.0)
    first_us = (time.perf_counter() - t0) / len(parsed) * 1e6
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    again = parsed[: len(parsed) // 5]
    t0 = time.perf_counter()
    for req in again:
        tracker.announce(req, 1001.0)
    again_us = (time.perf_counter() - t0) / len(again) * 1e6

    assert tracker.peer_count == args.peers, tracker.peer_count
    print(f"tracker core: {args.peers} peers in {args.swarms} swarms")
    print(f"  memory held by the tracker: {held / 2**20:.1f} MiB ({held / args.peers:.0f} B/peer)")
    print(
        f"  first announces: {first_us:.1f} us each (traced); re-announces: {again_us:.1f} us each"
    )
    print(f"  anchor, query parsing alone: {parse_us:.1f} us each")
    print(f"ratio re-announce/parse: {again_us / parse_us:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
