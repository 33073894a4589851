"""The user's commands: ``imsp2p register | buy | subscribe | browse | publish | download | play``.

They are a real IMS client (:mod:`imsp2pd.client.ue`): each registers through
the P-CSCF with the user's digest credentials (``--user``/``[client] user``;
the password from ``--password-file``, ``$IMSP2P_PASSWORD`` or ``[client]
password``), talks to the content service's PSI, and de-registers when done.
What they get is kept under ``[client] home``/USER: grants (``grants/``),
.torrents, publications. The BitTorrent and DRM work is done by the lower
level commands' code (``imsp2p torrent fetch|seed``, ``imsp2p drm
register|protect|license|play``), not a second implementation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from imsp2pd.client.cli import CommandLine, Context, UserError

PASSWORD_ENV = "IMSP2P_PASSWORD"


def register(cli: CommandLine) -> None:
    p = cli.command("register", "register with the IMS (and stay, with --stay)", register_cmd)
    _account_options(p)
    p.add_argument("--stay", action="store_true", help="stay registered and print what arrives")
    p = cli.command("buy", "buy an offer of a DOI; waits for the grant", buy_cmd)
    _account_options(p)
    p.add_argument("doi", metavar="DOI")
    p.add_argument("--offer", required=True, metavar="ID")
    p.add_argument("--purchase-id", metavar="UUID", help="repeat a purchase (never charged twice)")
    p.add_argument("-o", "--output", metavar="GRANT.json", help="where to keep the grant")
    p = cli.command("subscribe", "follow a content list (SUBSCRIBE/NOTIFY)", subscribe_cmd)
    _account_options(p)
    p.add_argument("genre", nargs="?", help="only this genre")
    p.add_argument("--series", help="only this series")
    p.add_argument("--count", type=int, default=0, help="stop after this many NOTIFYs (0: never)")
    p = cli.command("browse", "list what the content index offers", browse_cmd)
    p.add_argument("--genre")
    p.add_argument("--json", action="store_true", help="the index's JSON as is")
    p = cli.command("download", "download bought content from its swarm", download_cmd)
    p.add_argument("grant", metavar="GRANT.json")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--port", type=int, default=0, help="peer-wire port (default: any free)")
    p.add_argument("--timeout", type=float, help="give up after S seconds")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = cli.command("play", "get a license for this device and decrypt", play_cmd)
    p.add_argument("grant", metavar="GRANT.json")
    p.add_argument("file", metavar="FILE", help="the downloaded protected file")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="a file, or - for stdout")
    p.add_argument("--keystore")
    p.add_argument("--passphrase-file")


def _account_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", help="user name or IMPU (default: [client] user)")
    p.add_argument("--password-file", help=f"file holding the password (else ${PASSWORD_ENV})")


# -- accounts and the UE ---------------------------------------------------------


def account(args: argparse.Namespace, ctx: Context) -> Any:
    from imsp2pd.client.ue import Account

    client = ctx.config["client"]
    user = args.user or client["user"]
    if not user:
        raise UserError("no user: give --user or set [client] user")
    if args.password_file:
        try:
            password = Path(args.password_file).read_text().splitlines()[0]
        except (OSError, IndexError):
            raise UserError(f"cannot read a password from {args.password_file}") from None
    else:
        password = os.environ.get(PASSWORD_ENV) or client["password"]
    if not password:
        raise UserError(
            f"no password: give --password-file, set ${PASSWORD_ENV} or [client] password"
        )
    return Account.lab(user, password, ctx.config["ims"]["domain"])


def home(ctx: Context, acc: Any, *parts: str) -> Path:
    user = acc.impu.removeprefix("sip:").split("@")[0]
    path = ctx.config.path(ctx.config["client"]["home"]).joinpath(user, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def with_ue(args: argparse.Namespace, ctx: Context, body: Any) -> int:
    """Run ``body(reactor, ue, service)`` registered; de-register afterwards."""
    from twisted.internet.defer import inlineCallbacks
    from twisted.internet.task import react

    from imsp2pd.client.content import ContentService
    from imsp2pd.client.ue import UeError, UserEquipment
    from imsp2pd.config import split_host_port

    acc = account(args, ctx)
    pcscf = split_host_port(ctx.config["client"]["pcscf"])
    outcome: dict[str, Any] = {}

    @inlineCallbacks
    def main(reactor: Any) -> Any:
        ue = UserEquipment(reactor, acc, pcscf)
        # Interrupted (Ctrl-C while seeding or following a list): de-register first.
        reactor.addSystemEventTrigger("before", "shutdown", ue.stop)
        try:
            yield ue.start()
            outcome["result"] = yield body(
                reactor, ue, ContentService(ue, ctx.config["client"]["psi"])
            )
        except UeError as e:
            outcome["error"] = str(e)
        finally:
            yield ue.stop()

    try:
        react(main)
    except SystemExit as e:  # react() always exits; what matters is the outcome
        if e.code and "error" not in outcome:
            raise
    if "error" in outcome:
        raise UserError(outcome["error"])
    result = outcome.get("result")
    return result if isinstance(result, int) else 0


# -- commands ----------------------------------------------------------------------


def register_cmd(args: argparse.Namespace, ctx: Context) -> int:
    from twisted.internet.defer import Deferred

    def body(reactor: Any, ue: Any, svc: Any) -> Any:
        ctx.print(
            f"registered {ue.account.impu} at {ue.pcscf.host}:{ue.pcscf.port} "
            f"(contact {ue.contact}, service route {', '.join(ue.service_route) or 'none'})"
        )
        if not args.stay:
            return None
        ue.ua.on("MESSAGE", lambda req, src: _show(ctx, req))
        ue.ua.on("NOTIFY", lambda req, src: _show(ctx, req))
        return Deferred()  # until interrupted

    return with_ue(args, ctx, body)


def _show(ctx: Context, req: Any) -> int:
    ctx.print(
        f"{req.method} from {req.from_.uri} ({req.content_type}): {req.body.decode('utf-8', 'replace')}"
    )
    return 200


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def buy_cmd(args: argparse.Namespace, ctx: Context) -> int:
    acc = account(args, ctx)

    def body(reactor: Any, ue: Any, svc: Any) -> Any:
        d = svc.buy(args.doi, args.offer, args.purchase_id)

        def granted(grant: dict[str, Any]) -> None:
            out = (
                Path(args.output)
                if args.output
                else home(ctx, acc, "grants")
                / (_safe(grant["doi"]) + f"-{grant['purchase_id']}.json")
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # tokens inside
            with os.fdopen(fd, "w") as f:
                json.dump(grant, f, indent=2)
            ctx.print(
                f"bought {grant['doi']} offer {grant['offer']} (purchase {grant['purchase_id']}); "
                f"grant in {out}"
            )

        return d.addCallback(granted)

    return with_ue(args, ctx, body)


def subscribe_cmd(args: argparse.Namespace, ctx: Context) -> int:
    from twisted.internet.defer import inlineCallbacks

    @inlineCallbacks
    def body(reactor: Any, ue: Any, svc: Any) -> Any:
        assets = yield svc.subscribe(args.genre, args.series)
        seen = 1
        _print_assets(ctx, assets)
        while not args.count or seen < args.count:
            assets = yield svc.next_notify(timeout=365 * 86400)
            seen += 1
            _print_assets(ctx, assets)

    return with_ue(args, ctx, body)


def _print_assets(ctx: Context, assets: list[dict[str, Any]]) -> None:
    if not assets:
        ctx.print("(nothing listed)")
    for a in assets:
        offers = ", ".join(f"{o['id']} {o['price']} {o['currency']}" for o in a.get("offers", []))
        ctx.print(f"{a['doi']}  {a['title']}  [{a.get('genre') or '-'}]  {offers}")
    if hasattr(ctx.stdout, "flush"):
        ctx.stdout.flush()


def _get(url: str, what: str) -> bytes:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return bytes(r.read())
    except urllib.error.HTTPError as e:
        raise UserError(f"{what}: {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise UserError(
            f"{what}: cannot reach {url.split('?')[0]}: {getattr(e, 'reason', e)}"
        ) from None


def browse_cmd(args: argparse.Namespace, ctx: Context) -> None:
    from urllib.parse import quote

    url = ctx.config["client"]["index_url"].rstrip("/") + "/api/assets"
    if args.genre:
        url += f"?genre={quote(args.genre)}"
    data = json.loads(_get(url, "the content index"))
    if args.json:
        ctx.print_json(data)
        return
    _print_assets(ctx, data.get("assets", data) if isinstance(data, dict) else data)


def _grant(path: str) -> dict[str, Any]:
    try:
        grant = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a grant ({e})") from None
    needed = {"doi", "torrent_url", "announce_url", "license_url", "license_token"}
    if not isinstance(grant, dict) or not needed <= set(grant):
        raise UserError(f"{path}: not a grant (needs {', '.join(sorted(needed))})")
    return grant


def lower(*argv: str) -> argparse.Namespace:
    """The arguments of a lower-level command (``torrent fetch …``, ``drm play …``) as
    its own parser makes them, defaults included; its handler is ``._handler``."""
    from imsp2pd.client.cli import build_cli

    return build_cli().parser.parse_args(list(argv))


def run_lower(ctx: Context, *argv: str) -> Any:
    ns = lower(*argv)
    return ns._handler(ns, ctx)


def download_cmd(args: argparse.Namespace, ctx: Context) -> int:
    grant = _grant(args.grant)
    torrent = Path(args.output + ".torrent")
    torrent.write_bytes(_get(grant["torrent_url"], "the .torrent"))
    argv = ["torrent", "fetch", str(torrent), "-o", args.output,
            "--announce", grant["announce_url"], "--port", str(args.port)]  # fmt: skip
    if args.timeout:
        argv += ["--timeout", str(args.timeout)]
    if args.quiet:
        argv.append("--quiet")
    return int(run_lower(ctx, *argv) or 0)


def play_cmd(args: argparse.Namespace, ctx: Context) -> None:
    grant = _grant(args.grant)
    server = grant["license_url"].removesuffix("/license")
    license_path = args.file + ".license"
    common = []
    if args.keystore:
        common += ["--keystore", args.keystore]
    if args.passphrase_file:
        common += ["--passphrase-file", args.passphrase_file]
    run_lower(ctx, "drm", "license", "--token", grant["license_token"], "--server", server,
              "-o", license_path, *common)  # fmt: skip
    run_lower(ctx, "drm", "play", license_path, args.file, "-o", args.output, *common)
    if args.output != "-":
        print(f"played {grant['doi']} into {args.output}", file=sys.stderr)


def register_publish(cli: CommandLine) -> None:
    p = cli.command(
        "publish",
        "publish a file: publisher token, DRM registration, protection, private torrent, PUBLISH",
        publish_cmd,
    )
    _account_options(p)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--title", required=True)
    p.add_argument("--description", default="")
    p.add_argument("--genre")
    p.add_argument("--series")
    p.add_argument(
        "--offer",
        action="append",
        required=True,
        metavar="SPEC",
        help="ID,PRICE,CURRENCY,RIGHT=VALUE[,devices=N] (rights: plays, play_until, "
        "play_seconds_from_first_use), or the offer as JSON; repeatable",
    )
    p.add_argument("--piece-length", type=int, default=256 * 1024, help="bytes (default 256 KiB)")
    p.add_argument("--seed", action="store_true", help="then seed it until interrupted")
    _seed_options(p)
    p = cli.command(
        "seed",
        "seed a publication (from `imsp2p publish`) and keep its seeding presence at the AS",
        seed_cmd,
    )
    _account_options(p)
    p.add_argument("publication", metavar="PUBLISHED.json")
    _seed_options(p)


def _seed_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--upload-rate", type=float, metavar="KiB/s", help="upload limit")
    p.add_argument("--port", type=int, default=0, help="peer-wire port (default: any free)")


def parse_offer_spec(spec: str) -> dict[str, Any]:
    """``rent,2.50,EUR,play_seconds_from_first_use=172800,devices=2`` (or JSON) as an offer."""
    if spec.lstrip().startswith("{"):
        try:
            given = json.loads(spec)
        except ValueError as e:
            raise UserError(f"--offer: not JSON: {e}") from None
        if not isinstance(given, dict):
            raise UserError("--offer: a JSON offer is an object")
        return given
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) < 4:
        raise UserError(f"--offer {spec!r}: give ID,PRICE,CURRENCY,RIGHT=VALUE")
    offer: dict[str, Any] = {"id": parts[0], "price": parts[1], "currency": parts[2], "rights": {}}
    for item in parts[3:]:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--offer {spec!r}: {item!r} is not NAME=VALUE")
        if key == "devices":
            offer["devices"] = int(value) if value.isdigit() else value
        else:
            offer["rights"][key] = int(value) if value.isdigit() else value
    return offer


def publish_cmd(args: argparse.Namespace, ctx: Context) -> int:
    from twisted.internet.defer import inlineCallbacks
    from twisted.internet.threads import deferToThread

    from imsp2pd.bittorrent.metainfo import make_metainfo
    from imsp2pd.content.catalogue import CatalogueError, parse_metadata
    from imsp2pd.drm import container, files, player
    from imsp2pd_roles.drm import ca_path

    acc = account(args, ctx)
    if not Path(args.file).is_file():
        raise UserError(f"{args.file}: no such file")
    metadata = {
        "title": args.title,
        "description": args.description,
        "offers": [parse_offer_spec(s) for s in args.offer],
    }
    for key in ("genre", "series"):
        if getattr(args, key):
            metadata[key] = getattr(args, key)
    try:
        parse_metadata(metadata)  # refuse bad offers before anything is registered
    except CatalogueError as e:
        raise UserError(str(e)) from None
    drm_url = ctx.config["drm"]["url"]
    transport = player.urllib_transport(str(ca_path(ctx.config)))
    work = home(ctx, acc, "published")

    @inlineCallbacks
    def body(reactor: Any, ue: Any, svc: Any) -> Any:
        token = yield svc.publisher_token()
        key = container.new_content_key()
        doi, key_id = yield deferToThread(
            player.register_content, drm_url, token, key, transport=transport
        )
        stem = work / _safe(doi)
        files.write_key_file(str(stem) + ".key", key)
        protected = Path(str(stem) + ".imsp2p")
        yield deferToThread(
            files.protect_file,
            args.file,
            protected,
            doi=doi,
            key_id=key_id,
            key=key,
            piece_length=args.piece_length,
        )
        meta = make_metainfo(protected, None, doi=doi, piece_length=args.piece_length)
        torrent_path = Path(str(stem) + ".torrent")
        torrent_path.write_bytes(meta.to_bytes())
        seeding, etag = yield svc.publish(meta.to_bytes(), {**metadata, "doi": doi})
        info = Path(str(stem) + ".json")
        fd = os.open(info, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(
                {
                    **seeding,
                    "etag": etag,
                    "protected": str(protected),
                    "torrent": str(torrent_path),
                },
                f,
                indent=2,
            )
        ctx.print(f"published {doi} ({meta.info_hash_hex}); muted until a seeder completes it")
        if args.seed:
            yield seed_publication(reactor, svc, json.loads(info.read_text()), args, ctx)
        else:
            ctx.print(f"seed it: imsp2p seed {info}")

    return with_ue(args, ctx, body)


def seed_publication(
    reactor: Any, svc: Any, publication: dict[str, Any], args: Any, ctx: Context
) -> Any:
    """Seed a publication until interrupted, refreshing the seeding presence at the AS."""
    from twisted.internet.defer import Deferred
    from twisted.internet.task import LoopingCall

    from imsp2pd.bittorrent import commands as torrent_commands
    from imsp2pd.bittorrent.peer import Torrent
    from imsp2pd.bittorrent.storage import Storage, StorageError

    meta = torrent_commands._load(publication["torrent"])
    try:
        storage = Storage(meta, publication["protected"], create=False)
        have = storage.check()
    except StorageError as e:
        raise UserError(str(e)) from None
    if not all(have):
        storage.close()
        raise UserError(f"{publication['protected']} does not match its .torrent")
    rate = None if args.upload_rate is None else args.upload_rate * 1024
    torrent = Torrent(reactor, meta, storage, have=have, upload_rate=rate)
    start = lower("torrent", "seed", publication["torrent"], publication["protected"],
                  "--announce", publication["announce_url"], "--port", str(args.port))  # fmt: skip
    port, announcer = torrent_commands._start(reactor, start, torrent)
    ctx.print(f"seeding {publication['doi']} on 127.0.0.1:{port.getHost().port}; Ctrl-C stops")
    if hasattr(ctx.stdout, "flush"):
        ctx.stdout.flush()
    etag = {"value": publication.get("etag")}

    def refresh() -> Any:
        if not etag["value"]:
            return None
        d = svc.refresh(etag["value"], 600)
        d.addCallback(lambda new: etag.update(value=new))
        d.addErrback(
            lambda f: ctx.print(f"imsp2p: seeding presence not refreshed: {f.getErrorMessage()}")
        )
        return d

    presence = LoopingCall(refresh)
    presence.clock = reactor
    presence.start(300, now=True)

    def shutdown() -> Any:
        if presence.running:
            presence.stop()
        torrent.stop()
        storage.close()
        return announcer.stop() if announcer is not None else None

    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    return Deferred()  # until interrupted


def seed_cmd(args: argparse.Namespace, ctx: Context) -> int:
    try:
        publication = json.loads(Path(args.publication).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{args.publication}: not a publication ({e})") from None
    if not isinstance(publication, dict) or not {"torrent", "protected", "announce_url"} <= set(
        publication
    ):
        raise UserError(f"{args.publication}: not a publication written by `imsp2p publish`")

    def body(reactor: Any, ue: Any, svc: Any) -> Any:
        return seed_publication(reactor, svc, publication, args, ctx)

    return with_ue(args, ctx, body)
