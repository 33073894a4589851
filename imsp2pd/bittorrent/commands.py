"""``imsp2p torrent …`` and the tracker's ``imsp2p admin swarm|token …`` commands.

* ``imsp2p torrent make FILE --announce URL [--no-private] [--piece-length N]
  [--doi DOI] -o X.torrent``
* ``imsp2p torrent info X.torrent`` (JSON)
* ``imsp2p admin swarm register --infohash HEX [--doi DOI] [--state S]``
* ``imsp2p admin swarm mute|unmute|disable --infohash HEX``
* ``imsp2p admin swarm stats [--infohash HEX]`` (JSON)
* ``imsp2p admin token issue --user IMPU --infohash HEX [--role R] [--ttl S]``:
  a tracker token signed with the AS key under the config's state directory
  (lab helper; prints the token, and with ``--announce URL`` the announce URL).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from imsp2pd.client.cli import CommandLine, Context, UserError

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")


def register(cli: CommandLine) -> None:
    torrent = cli.group("torrent", "make and read .torrent files")
    p = torrent.command("make", "make a .torrent for a file or directory", make)
    p.add_argument("path", metavar="FILE")
    p.add_argument("--announce", required=True, metavar="URL")
    p.add_argument("--no-private", action="store_true", help="not private (BEP 27 off)")
    p.add_argument("--private", action="store_true", help="private (the default)")
    p.add_argument("--piece-length", type=_size, metavar="N", help="bytes; K and M suffixes")
    p.add_argument("--doi", help="the DOI of the content (kept in the info dictionary)")
    p.add_argument("--comment")
    p.add_argument("-o", "--output", required=True, metavar="X.torrent")
    p = torrent.command("info", "show a .torrent as JSON", info)
    p.add_argument("torrent", metavar="X.torrent")
    p = torrent.command("seed", "seed a file (until interrupted)", seed)
    p.add_argument("torrent", metavar="X.torrent")
    p.add_argument("file", metavar="FILE", help="the content (for a directory torrent: its parent)")
    _peer_options(p)
    p.add_argument("--upload-rate", type=float, metavar="KiB/s", help="upload limit, all peers")
    p.add_argument(
        "--peer-upload-rate", type=float, metavar="KiB/s", help="upload limit, each peer"
    )
    p.add_argument("--super-seed", action="store_true", help="BEP 16 initial seeding")
    p = torrent.command("fetch", "download (resuming a partial file); exit 0 when verified", fetch)
    p.add_argument("torrent", metavar="X.torrent")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    _peer_options(p)
    p.add_argument(
        "--peer", action="append", default=[], metavar="HOST:PORT", help="dial this peer"
    )
    p.add_argument("--sequential", action="store_true", help="pieces in order (play while loading)")
    p.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds")
    p.add_argument("--download-rate", type=float, metavar="KiB/s", help="download limit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    admin = cli.group("admin", "operate a running daemon through its control port")
    swarm = admin.group("swarm", "swarms at the tracker")
    p = swarm.command("register", "register a swarm (muted unless --state)", swarm_register)
    p.add_argument("--infohash", required=True, type=_infohash)
    p.add_argument("--doi")
    p.add_argument("--state", choices=("muted", "active", "disabled"), default="muted")
    _url(p)
    for action, text in (
        ("mute", "mute a swarm: only the provider and the operator's seeders"),
        ("unmute", "open a swarm to consumers"),
        ("disable", "take a swarm down: every announce fails"),
    ):
        p = swarm.command(action, text, swarm_action)
        p.add_argument("--infohash", required=True, type=_infohash)
        p.set_defaults(action=action)
        _url(p)
    p = swarm.command("stats", "swarm statistics (JSON)", swarm_stats)
    p.add_argument("--infohash", type=_infohash)
    _url(p)

    token = admin.group("token", "entitlement tokens (lab helper, signs with the local AS key)")
    p = token.command("issue", "print a tracker token signed with the AS key", token_issue)
    p.add_argument("--user", required=True, metavar="IMPU")
    p.add_argument("--infohash", required=True, type=_infohash)
    p.add_argument("--role", choices=("consumer", "provider", "seeder"), default="consumer")
    p.add_argument("--ttl", type=int, default=86400, help="seconds of validity (default a day)")
    p.add_argument("--announce", metavar="URL", help="also print URL?token=TOKEN")


def _peer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=0, help="peer-wire port (default: any free)")
    p.add_argument("--interface", default="127.0.0.1", help="address to listen on")
    p.add_argument(
        "--announce",
        metavar="URL",
        help="tracker URL with its token (default: the torrent's; empty: none)",
    )


def _url(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="control port URL (default: [admin] url of the config)")


def _infohash(text: str) -> str:
    if not _HEX40.fullmatch(text):
        raise argparse.ArgumentTypeError("an info-hash is 40 hex digits")
    return text.lower()


def _size(text: str) -> int:
    mult = {"K": 1024, "M": 1024 * 1024}.get(text[-1:].upper(), 1)
    digits = text[:-1] if mult > 1 else text
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(digits) * mult


def make(args: argparse.Namespace, ctx: Context) -> None:
    from imsp2pd.bittorrent.metainfo import MetainfoError, make_metainfo

    try:
        meta = make_metainfo(
            args.path,
            args.announce,
            piece_length=args.piece_length,
            private=not args.no_private,
            doi=args.doi,
            comment=args.comment,
        )
    except MetainfoError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"{args.path}: {exc.strerror}") from None
    out = Path(args.output)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_bytes(meta.to_bytes())
        os.replace(tmp, out)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror}") from None
    ctx.print(
        f"{out}: info-hash {meta.info_hash_hex}, {meta.num_pieces} pieces of {meta.piece_length}"
    )


def info(args: argparse.Namespace, ctx: Context) -> None:
    from imsp2pd.bittorrent.metainfo import MetainfoError, parse_metainfo

    try:
        meta = parse_metainfo(Path(args.torrent).read_bytes())
    except OSError as exc:
        raise UserError(f"{args.torrent}: {exc.strerror}") from None
    except MetainfoError as exc:
        raise UserError(f"{args.torrent}: {exc}") from None
    ctx.print_json(
        {
            "name": meta.name,
            "info_hash": meta.info_hash_hex,
            "private": meta.private,
            "doi": meta.doi,
            "piece_length": meta.piece_length,
            "pieces": meta.num_pieces,
            "total_length": meta.total_length,
            "files": [{"path": "/".join(f.path), "length": f.length} for f in meta.files],
            "trackers": [_redact(u) for u in meta.trackers()],
            "comment": meta.comment,
            "created_by": meta.created_by,
            "creation_date": meta.creation_date,
        }
    )


def _redact(url: str) -> str:
    """Announce URLs carry the token in their query: never print it."""
    base, sep, _ = url.partition("?")
    return base + ("?…" if sep else "")


def swarm_register(args: argparse.Namespace, ctx: Context) -> None:
    body = {"info_hash": args.infohash, "doi": args.doi, "state": args.state}
    ctx.print_json(ctx.admin("POST", "/admin/swarms", body, base_url=args.url))


def swarm_action(args: argparse.Namespace, ctx: Context) -> None:
    path = f"/admin/swarms/{args.infohash}/{args.action}"
    ctx.print_json(ctx.admin("POST", path, base_url=args.url))


def swarm_stats(args: argparse.Namespace, ctx: Context) -> None:
    if args.infohash:
        ctx.print_json(ctx.admin("GET", f"/admin/swarms/{args.infohash}", base_url=args.url))
    else:
        ctx.print_json(ctx.admin("GET", "/admin/swarms", base_url=args.url))


def token_issue(args: argparse.Namespace, ctx: Context) -> None:
    from imsp2pd import entitlement

    try:
        key = entitlement.load_or_create_private_key(ctx.config.state_path("keys"))
        token = entitlement.Issuer(key).issue_tracker(
            args.user, bytes.fromhex(args.infohash), args.role, int(time.time()) + args.ttl
        )
    except entitlement.KeyConfigError as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.announce:
        sep = "&" if "?" in args.announce else "?"
        ctx.print(f"{args.announce}{sep}token={quote(token, safe='')}")
    else:
        ctx.print(token)


# -- seeding and fetching ------------------------------------------------------


def _load(path: str) -> Any:
    from imsp2pd.bittorrent.metainfo import MetainfoError, parse_metainfo

    try:
        return parse_metainfo(Path(path).read_bytes())
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}") from None
    except MetainfoError as exc:
        raise UserError(f"{path}: {exc}") from None


def _http_get(url: str) -> Any:
    import treq

    d = treq.get(url, persistent=False, timeout=15)
    d.addCallback(treq.content)
    return d


def _run(main: Any, *args: Any) -> int:
    from twisted.internet.task import react

    try:
        react(main, args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _start(reactor: Any, args: argparse.Namespace, torrent: Any) -> tuple[Any, Any]:
    from twisted.internet.error import CannotListenError

    from imsp2pd.bittorrent.announce import Announcer

    try:
        port = torrent.listen(args.port, args.interface)
    except CannotListenError as exc:
        raise UserError(
            f"cannot listen on {args.interface}:{args.port}: {exc.socketError}"
        ) from None
    torrent.start()
    url = torrent.meta.announce if args.announce is None else args.announce
    announcer = None
    if url:
        announcer = Announcer(reactor, torrent, [url], port.getHost().port, _http_get)
        announcer.start()
    return port, announcer


def seed(args: argparse.Namespace, ctx: Context) -> int:
    from imsp2pd.bittorrent.peer import Torrent
    from imsp2pd.bittorrent.storage import Storage, StorageError

    meta = _load(args.torrent)
    try:
        storage = Storage(meta, args.file, create=False)
        have = storage.check()
    except StorageError as exc:
        raise UserError(str(exc)) from None
    if not all(have):
        raise UserError(
            f"{args.file} does not match the torrent ({sum(have)} of {len(have)} pieces verify)"
        )

    def main(reactor: Any) -> Any:
        from twisted.internet.defer import Deferred

        rate = None if args.upload_rate is None else args.upload_rate * 1024
        peer_rate = None if args.peer_upload_rate is None else args.peer_upload_rate * 1024
        torrent = Torrent(
            reactor,
            meta,
            storage,
            have=have,
            super_seed=args.super_seed,
            upload_rate=rate,
            peer_upload_rate=peer_rate,
        )
        port, announcer = _start(reactor, args, torrent)
        ctx.print(f"seeding {meta.info_hash_hex} on {args.interface}:{port.getHost().port}")
        if hasattr(ctx.stdout, "flush"):
            ctx.stdout.flush()
        forever: Deferred[None] = Deferred()

        def shutdown() -> Any:
            torrent.stop()
            return announcer.stop() if announcer is not None else None

        reactor.addSystemEventTrigger("before", "shutdown", shutdown)
        return forever

    try:
        return _run(main)
    finally:
        storage.close()


def fetch(args: argparse.Namespace, ctx: Context) -> int:
    from imsp2pd.bittorrent.peer import Torrent
    from imsp2pd.bittorrent.storage import Storage, StorageError

    meta = _load(args.torrent)
    peers = []
    for text in args.peer:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"--peer must be HOST:PORT, not {text!r}")
        peers.append((host.strip("[]"), int(port)))
    try:
        storage = Storage(meta, args.output, create=True)
        have = storage.check()
    except StorageError as exc:
        raise UserError(str(exc)) from None
    url = meta.announce if args.announce is None else args.announce
    if not (url or peers) and not all(have):
        storage.close()
        raise UserError("no tracker and no --peer: nowhere to fetch from")

    def main(reactor: Any) -> Any:
        from twisted.internet.defer import succeed

        down = None if args.download_rate is None else args.download_rate * 1024
        torrent = Torrent(
            reactor, meta, storage, have=have, sequential=args.sequential, download_rate=down
        )
        if torrent.complete:
            ctx.print(f"{args.output}: complete, {meta.num_pieces} pieces verified")
            return succeed(None)
        port, announcer = _start(reactor, args, torrent)
        for host, p in peers:
            torrent.connect(host, p)
        started = reactor.seconds()
        progress = _Progress(ctx, torrent, started, quiet=args.quiet)
        loop = _every(reactor, 1.0, progress.show)

        def finished(_: Any) -> Any:
            loop.stop()
            progress.show(final=True)
            torrent.stop()
            # Every piece was read back from the disk and its SHA-1 checked
            # when it completed, and the file was synced: it is verified.
            ctx.print(f"{args.output}: complete, {meta.num_pieces} pieces verified")
            d = announcer.stop() if announcer is not None else None
            return d

        d = torrent.done
        if args.timeout:
            d.addTimeout(args.timeout, reactor)

        def timed_out(failure: Any) -> None:
            from twisted.internet.defer import TimeoutError as Timeout

            failure.trap(Timeout)
            if loop.running:
                loop.stop()
            progress.show(final=True)
            torrent.stop()
            ctx.print(
                f"imsp2p: timed out with {torrent.picker.have_count} of {meta.num_pieces} pieces"
            )
            raise SystemExit(1)

        d.addCallbacks(finished, timed_out)
        return d

    try:
        return _run(main)
    finally:
        storage.close()


def _every(reactor: Any, seconds: float, fn: Any) -> Any:
    from twisted.internet.task import LoopingCall

    loop = LoopingCall(fn)
    loop.clock = reactor
    loop.start(seconds, now=False)
    return loop


class _Progress:
    def __init__(self, ctx: Context, torrent: Any, started: float, quiet: bool) -> None:
        self.ctx = ctx
        self.torrent = torrent
        self.started = started
        self.quiet = quiet

    def show(self, final: bool = False) -> None:
        if self.quiet:
            return
        t = self.torrent
        n = t.meta.num_pieces
        done = t.picker.have_count
        elapsed = max(t.now() - self.started, 1e-6)
        rate = t.downloaded / elapsed / (1024 * 1024)
        width = 30
        filled = width * done // n
        bar = "#" * filled + "." * (width - filled)
        line = f"\r[{bar}] {100 * done / n:5.1f}% {rate:7.2f} MiB/s peers {len(t.peers)}"
        self.ctx.stderr.write(line + ("\n" if final else ""))
        self.ctx.stderr.flush()
