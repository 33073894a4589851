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
