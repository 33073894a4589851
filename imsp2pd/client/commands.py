"""Core commands: ``imsp2p lab``, ``imsp2p admin health``, ``imsp2p admin roles``."""

from __future__ import annotations

import argparse

from imsp2pd.client.cli import CommandLine, Context


def register(cli: CommandLine) -> None:
    admin = cli.group("admin", "operate a running daemon through its control port")
    p = admin.command("health", "show the health of the daemon (exit 1 unless ok)", health)
    p.add_argument("--url", help="control port URL (default: [admin] url of the config)")
    p = admin.command("roles", "list the roles and admin routes of the daemon", roles)
    p.add_argument("--url", help="control port URL (default: [admin] url of the config)")
    from imsp2pd.client import user

    user.register(cli)
    user.register_publish(cli)
    p = cli.command("demo", "run both use cases of the paper end to end on a lab", _demo)
    p.add_argument("--consumers", type=int, default=10, help="consumers who buy (default 10)")
    p.add_argument("--size", type=int, default=64, help="MiB of content (default 64)")
    p.add_argument(
        "--origin-kib",
        type=int,
        default=4096,
        help="upload limit of carol and of the operator's seeder, KiB/s (default 4096)",
    )
    p = cli.command("lab", "start the lab (every role in one daemon) and report its health", _lab)
    p.add_argument("--roles", default="all", help="roles to run (default: all)")
    p.add_argument("--keep", action="store_true", help="keep the lab running until Ctrl-C")


def health(args: argparse.Namespace, ctx: Context) -> int:
    from imsp2pd.client.cli import UserError

    try:
        answer = ctx.admin("GET", "/health", base_url=args.url)
    except UserError as e:
        # 503 carries the body too; a degraded daemon is still an answer.
        if " 503 " not in str(e):
            raise
        ctx.print(str(e))
        return 1
    ctx.print_json(answer)
    return 0 if answer.get("status") == "ok" else 1


def roles(args: argparse.Namespace, ctx: Context) -> None:
    ctx.print_json(ctx.admin("GET", "/admin/roles", base_url=args.url))


def _demo(args: argparse.Namespace, ctx: Context) -> int:
    from imsp2pd.client.demo import run

    return run(args, ctx)


def _lab(args: argparse.Namespace, ctx: Context) -> int:
    from imsp2pd.client.lab import run

    return run(args, ctx)
