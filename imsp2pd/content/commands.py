"""Operator commands for the content service: ``imsp2p admin content …``, ``imsp2p admin seeder …``."""

from __future__ import annotations

import argparse
from urllib.parse import quote

from imsp2pd.client.cli import CommandLine, Context


def register(cli: CommandLine) -> None:
    admin = cli.group("admin", "operate a running daemon through its control port")
    content = admin.group("content", "the content service's catalogue")
    p = content.command(
        "remove", "take content down: off the index, swarm disabled, no licenses", remove
    )
    p.add_argument("doi", metavar="DOI")
    p = content.command("list", "list publications (JSON)", list_)
    p.add_argument("--state", choices=("pending", "listed", "removed"))
    p = content.command("purchases", "list purchases (JSON)", purchases)
    p.add_argument("--user", help="only this IMPU")
    seeder = admin.group("seeder", "the operator's seeding service")
    seeder.command("status", "swarms, progress, upload and budget (JSON)", seeder_status)


def remove(args: argparse.Namespace, ctx: Context) -> None:
    ctx.print_json(ctx.admin("DELETE", "/admin/content/" + quote(args.doi, safe="/")))


def list_(args: argparse.Namespace, ctx: Context) -> None:
    ctx.print_json(
        ctx.admin("GET", "/admin/publications" + (f"?state={args.state}" if args.state else ""))
    )


def purchases(args: argparse.Namespace, ctx: Context) -> None:
    ctx.print_json(
        ctx.admin(
            "GET", "/admin/purchases" + (f"?user={quote(args.user, safe='')}" if args.user else "")
        )
    )


def seeder_status(args: argparse.Namespace, ctx: Context) -> None:
    ctx.print_json(ctx.admin("GET", "/admin/seeder"))
