"""Swarm benchmark: a flash crowd of leechers and one origin seed.

Usage: ``.venv/bin/python bench/bt_swarm.py [--leechers 50] [--size-mib 8]
[--rate-kib 512] [--super-seed]``.

Everything runs in this process on loopback: our tracker (every peer holds a
valid token), one origin seed and ``--leechers`` leecher engines, every one
of them (origin included) upload-limited to ``--rate-kib`` KiB/s like a home
line. All leechers arrive at once. When the last one has the whole file the
benchmark prints how many bytes the origin uploaded, as a multiple of the
file size: client-server delivery would cost ``leechers`` times the file.
Targets (issue 5): at most 2.0x with normal seeding, 1.25x with super-seeding.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--leechers", type=int, default=50)
    ap.add_argument("--size-mib", type=int, default=8)
    ap.add_argument("--piece-kib", type=int, default=256)
    ap.add_argument("--rate-kib", type=int, default=512)
    ap.add_argument("--super-seed", action="store_true")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from twisted.internet import reactor as _reactor
    from twisted.internet.defer import DeferredList, inlineCallbacks

    from imsp2pd.bittorrent.announce import Announcer
    from imsp2pd.bittorrent.metainfo import make_metainfo
    from imsp2pd.bittorrent.peer import Torrent
    from imsp2pd.bittorrent.storage import Storage
    from imsp2pd.bittorrent.tracker import SwarmState, Tracker, TrackerConfig
    from imsp2pd.bittorrent.tracker_http import TrackerResource
    from imsp2pd.entitlement import Issuer, Verifier
    from imsp2pd.web import make_site

    reactor: Any = _reactor
    tmp = Path(tempfile.mkdtemp(prefix="imsp2p-swarm-"))
    size = args.size_mib << 20
    src = tmp / "content.bin"
    src.write_bytes(os.urandom(size))
    issuer = Issuer(Ed25519PrivateKey.generate())
    tracker = Tracker(
        Verifier(issuer.public_key),
        TrackerConfig(interval=10, min_interval=5, peer_expiry=60, default_numwant=80),
    )
    site: Any = make_site(TrackerResource(tracker, reactor.seconds), reactor=reactor)
    site.log = lambda request: None
    tport = reactor.listenTCP(0, site, interface="127.0.0.1")
    base = f"http://127.0.0.1:{tport.getHost().port}/announce"
    meta = make_metainfo(src, base, piece_length=args.piece_kib << 10)
    tracker.register(meta.info_hash, None, SwarmState.ACTIVE)
    rate = args.rate_kib * 1024

    def local_get(url: str) -> Any:
        # In-process announces (no HTTP client needed inside one reactor).
        from twisted.internet.defer import succeed

        from imsp2pd.bittorrent.tracker import parse_announce

        query = url.partition("?")[2].encode()
        return succeed(tracker.announce(parse_announce(query, "127.0.0.1"), reactor.seconds()))

    engines: list[tuple[Torrent, Announcer, Storage]] = []

    def engine(target: Path, seed: bool, user: str) -> Torrent:
        storage = Storage(meta, target, create=not seed)
        have = storage.check() if seed else None
        t = Torrent(
            reactor, meta, storage, have=have, upload_rate=rate, super_seed=seed and args.super_seed
        )
        t.start()
        port = t.listen()
        role = "provider" if seed else "consumer"
        token = issuer.issue_tracker(f"sip:{user}@ims.example.org", meta.info_hash, role, 2**40)
        ann = Announcer(reactor, t, [f"{base}?token={token}"], port.getHost().port, local_get)
        engines.append((t, ann, storage))
        return t

    origin = engine(src, True, "carol")
    result: dict[str, float] = {}

    @inlineCallbacks
    def run() -> Any:
        yield engines[0][1].start()
        leechers = [engine(tmp / f"l{i}.bin", False, f"u{i}") for i in range(args.leechers)]
        start = reactor.seconds()
        for _, ann, _ in engines[1:]:
            ann.start()
        dl = DeferredList([t.done for t in leechers], fireOnOneErrback=True)
        dl.addTimeout(args.timeout, reactor)
        yield dl
        result["seconds"] = reactor.seconds() - start
        result["origin"] = origin.uploaded
        result["total"] = sum(t.uploaded for t, _, _ in engines)

    def finish(outcome: Any) -> None:
        result.setdefault("error", 0.0)
        if not isinstance(outcome, type(None)):
            result["error"] = 1.0
            print(f"swarm benchmark failed: {outcome}")
        for t, _, _ in engines:
            t.stop()
        reactor.callLater(0.5, reactor.stop)

    d = run()
    d.addBoth(finish)
    t0 = time.perf_counter()
    reactor.run()
    for _, _, storage in engines:
        storage.close()
    shutil.rmtree(tmp, ignore_errors=True)
    if result.get("error") or "origin" not in result:
        return 1
    mode = "super-seeding" if args.super_seed else "normal seeding"
    print(
        f"swarm benchmark: {args.leechers} leechers, {args.size_mib} MiB, every peer at "
        f"{args.rate_kib} KiB/s upload, {mode}"
    )
    print(f"  all complete in {result['seconds']:.1f} s (wall {time.perf_counter() - t0:.1f} s)")
    print(f"  swarm uploaded {result['total'] / size:.2f}x the file")
    target = 1.25 if args.super_seed else 2.0
    print(
        f"origin upload: {result['origin'] / size:.2f}x the file size "
        f"(client-server: {args.leechers}x; target <= {target}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
