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
