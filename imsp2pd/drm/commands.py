"""``imsp2p drm …``: protect, inspect and unprotect content files.

Every fault is one line (``imsp2p: …``) and exit status 1; ``unprotect``
exits 0 only when every segment verified, and leaves no plaintext behind
otherwise.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, BinaryIO

from imsp2pd.client.cli import CommandLine, Context, UserError
from imsp2pd.drm import container, files
from imsp2pd.drm.keystore import PASSPHRASE_ENV

KEYSTORE_ENV = "IMSP2P_KEYSTORE"
DEFAULT_KEYSTORE = "~/.imsp2p/keystore.json"


def register(cli: CommandLine) -> None:
    drm = cli.group("drm", "protect content and play protected content")
    p = drm.command("protect", "encrypt a file into a protected container", protect)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--doi", required=True, help="the DOI the DRM server gave the content")
    p.add_argument("--key-id", required=True, help="the key id the DRM server gave")
    p.add_argument(
        "--key-file",
        metavar="K",
        help="file with the 128-bit content key as 32 hex digits (default: make a new "
        "key and write it to OUT.key, mode 0600)",
    )
    p.add_argument(
        "--piece-length",
        type=_size,
        default=container.DEFAULT_PIECE_LENGTH,
        metavar="N",
        help="piece length in bytes, a power of two from 16 KiB to 64 MiB; K and M "
        "suffixes allowed (default 256K)",
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p = drm.command("inspect", "show the header of a protected file", inspect)
    p.add_argument("file", metavar="FILE")
    p = drm.command("unprotect", "verify and decrypt a protected file with its key", unprotect)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--key-file", required=True, metavar="K")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="a file, or - for stdout")
    p = drm.command(
        "register",
        "register new content at the DRM server: send its key, get its DOI and key id",
        register_,
    )
    p.add_argument("--publisher-token", required=True, help="the token (or @FILE holding it)")
    p.add_argument(
        "--key-file",
        required=True,
        metavar="K",
        help="the content key (32 hex digits); made, mode 0600, if the file does not exist",
    )
    p.add_argument("--server", help="DRM server URL (default: [drm] url of the config)")
    p.add_argument("--ca", help="CA certificate to trust (default: [drm] ca of the config)")
    p = drm.command("license", "get a license for this device from the DRM server", license_)
    p.add_argument("--token", required=True, help="the license token (or @FILE holding it)")
    p.add_argument("--server", help="DRM server URL (default: [drm] url of the config)")
    p.add_argument("-o", "--output", required=True, metavar="LICENSE")
    _player_options(p)
    p.add_argument("--ca", help="CA certificate to trust (default: [drm] ca of the config)")
    p = drm.command("play", "check a license, then verify and decrypt the content", play)
    p.add_argument("license", metavar="LICENSE")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="a file, or - for stdout")
    _player_options(p)

    admin = cli.group("admin", "operate a running daemon through its control port").group(
        "drm", "the DRM server: content and the revocation list"
    )
    p = admin.command("content", "show a DOI's owner, key id, info-hash and state", admin_content)
    p.add_argument("doi", metavar="DOI")
    p = admin.command("revoke", "revoke a user, device, DOI or token id", admin_revoke)
    p.add_argument("kind", choices=["impu", "device", "doi", "token"])
    p.add_argument("value", help="IMPU, device fingerprint, DOI or token id")
    p.add_argument("--reason", default="", help="a note kept with the entry")
    p = admin.command("revocations", "list the revocation list", admin_revocations)
    p.add_argument("--since", type=float, default=0.0, help="only entries from this Unix time")


def admin_content(args: argparse.Namespace, ctx: Context) -> None:
    from urllib.parse import quote

    ctx.print_json(ctx.admin("GET", "/admin/drm/content/" + quote(args.doi, safe="/")))


def admin_revoke(args: argparse.Namespace, ctx: Context) -> None:
    body = {"kind": args.kind, "value": args.value, "reason": args.reason}
    ctx.print_json(ctx.admin("POST", "/admin/drm/revocations", body))


def admin_revocations(args: argparse.Namespace, ctx: Context) -> None:
    ctx.print_json(ctx.admin("GET", f"/admin/drm/revocations?since={args.since}"))


def _player_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--keystore",
        help=f"device keystore (default: ${KEYSTORE_ENV}, else {DEFAULT_KEYSTORE})",
    )
    p.add_argument(
        "--passphrase-file",
        help=f"file whose first line is the keystore passphrase (else ${PASSPHRASE_ENV}, "
        "else a prompt on the terminal)",
    )


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024 * 1024}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        if t and t[-1] in units:
            return int(t[:-1]) * units[t[-1]]
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None


def _fail(exc: Exception) -> UserError:
    return UserError(str(exc))


def protect(args: argparse.Namespace, ctx: Context) -> None:
    try:
        key = None if args.key_file is None else files.read_key_file(args.key_file)
        result = files.protect_file(
            args.file,
            args.output,
            doi=args.doi,
            key_id=args.key_id,
            key=key,
            piece_length=args.piece_length,
        )
    except (files.DrmFileError, container.ContainerError) as exc:
        raise _fail(exc) from None
    h = result.header
    ctx.print(
        f"protected {args.file} -> {result.output}: {h.plaintext_length} bytes in "
        f"{h.segment_count} segments of {h.piece_length}-byte pieces"
    )
    if result.key_file is not None:
        ctx.print(f"new content key written to {result.key_file} (mode 0600)")


def inspect(args: argparse.Namespace, ctx: Context) -> None:
    try:
        header = files.inspect_file(args.file)
    except (files.DrmFileError, container.ContainerError) as exc:
        raise _fail(exc) from None
    ctx.stdout.write(files.format_header(header))


def binary_stdout(ctx: Context) -> BinaryIO:
    stream: Any = getattr(ctx.stdout, "buffer", None)
    if stream is None:
        stream = sys.stdout.buffer
    ctx.stdout.flush()
    return stream


def unprotect(args: argparse.Namespace, ctx: Context) -> None:
    try:
        key = files.read_key_file(args.key_file)
        if args.output == "-":
            out = binary_stdout(ctx)
            files.unprotect_to_stream(args.file, out, key)
            out.flush()
        else:
            files.unprotect_file(args.file, args.output, key)
    except (files.DrmFileError, container.ContainerError) as exc:
        raise _fail(exc) from None


def _open_keystore(args: argparse.Namespace) -> tuple[Any, str]:
    import getpass
    import os

    from imsp2pd.drm.keystore import Keystore, KeystoreError, get_passphrase

    path = os.path.expanduser(args.keystore or os.environ.get(KEYSTORE_ENV) or DEFAULT_KEYSTORE)
    try:
        passphrase = get_passphrase(
            args.passphrase_file, os.environ, sys.stdin.isatty, getpass.getpass
        )
        return Keystore.open_or_create(path, passphrase), passphrase
    except KeystoreError as exc:
        raise UserError(exc.message) from None


def _token(value: str) -> str:
    if not value.startswith("@"):
        return value
    try:
        with open(value[1:], encoding="ascii", errors="replace") as f:
            return f.read(8192).strip()
    except OSError as exc:
        raise UserError(f"cannot read token file {value[1:]}: {exc.strerror}") from None


def _server_and_ca(args: argparse.Namespace, ctx: Context) -> tuple[str, str]:
    server = args.server or ctx.config["drm"]["url"]
    if args.ca:
        return server, args.ca
    from imsp2pd_roles.drm import ca_path

    return server, str(ca_path(ctx.config))


def register_(args: argparse.Namespace, ctx: Context) -> None:
    import os

    from imsp2pd.drm import player

    token = _token(args.publisher_token)
    server, ca = _server_and_ca(args, ctx)
    try:
        if os.path.exists(args.key_file):
            key = files.read_key_file(args.key_file)
        else:
            # Kept first: a registration whose key was lost could never be used.
            key = container.new_content_key()
            files.write_key_file(args.key_file, key)
        doi, key_id = player.register_content(
            server, token, key, transport=player.urllib_transport(ca)
        )
    except (player.PlayerError, files.DrmFileError) as exc:
        raise UserError(exc.message) from None
    ctx.print_json({"doi": doi, "key_id": key_id, "key_file": args.key_file})


def license_(args: argparse.Namespace, ctx: Context) -> None:
    import time

    from imsp2pd.drm import player

    token = _token(args.token)
    server, ca = _server_and_ca(args, ctx)
    keystore, passphrase = _open_keystore(args)
    try:
        fetched = player.fetch_license(
            server,
            token,
            keystore,
            passphrase,
            args.output,
            transport=player.urllib_transport(ca),
            now=time.time,
        )
    except player.PlayerError as exc:
        raise UserError(exc.message) from None
    lic = fetched.license
    ctx.print(
        f"license {lic.license_id} for {lic.doi} written to {fetched.path} "
        f"(rights {lic.rights.to_json()}, until {lic.not_after})"
    )


def play(args: argparse.Namespace, ctx: Context) -> None:
    import time

    from imsp2pd.drm import player
    from imsp2pd.drm.keystore import KeystoreError

    keystore, passphrase = _open_keystore(args)
    out: Any = binary_stdout(ctx) if args.output == "-" else args.output
    try:
        player.play(args.license, args.file, out, keystore, passphrase, now=time.time)
    except (player.PlayerError, files.DrmFileError, KeystoreError) as exc:
        raise UserError(exc.message) from None
    except container.ContainerError as exc:
        raise _fail(exc) from None
    if args.output == "-":
        out.flush()
