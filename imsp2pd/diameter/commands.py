"""Operator commands for the HSS: ``imsp2p admin subscriber …`` and ``imsp2p admin psi …``.

They call the HSS admin routes of a running daemon (imsp2pd_roles/hss.py).
Passwords are sent to the control port over its (loopback or management)
link and turned into digest HA1 by the HSS; prefer ``--password-file`` to
keep them out of the process list.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from urllib.parse import quote

from imsp2pd.client.cli import CommandLine, Context, UserError


def register(cli: CommandLine) -> None:
    admin = cli.group("admin", "operate a running daemon through its control port")
    sub = admin.group("subscriber", "subscribers at the HSS")
    sub.command("list", "list subscribers", subscriber_list)
    p = sub.command("show", "show one subscriber (identities, registration state)", subscriber_show)
    p.add_argument("impi", help="private identity, e.g. alice@ims.example.org")
    p = sub.command("set", "create or change a subscriber", subscriber_set)
    p.add_argument("impi", help="private identity")
    p.add_argument("--impu", action="append", help="public identity (repeat; default: keep)")
    p.add_argument("--password", help="SIP digest password (stored as HA1 only)")
    p.add_argument("--password-file", type=Path, help="read the password from this file")
    p.add_argument("--ha1", help="SIP digest HA1 (32 hex digits) instead of a password")
    p.add_argument("--aka-k", help="AKA subscriber key K (32 hex digits)")
    p.add_argument("--aka-op", help="AKA operator key OP (32 hex digits)")
    p.add_argument("--aka-opc", help="AKA OPc instead of OP (32 hex digits)")
    p.add_argument("--barred", action="append", default=[], help="a barred public identity")
    p.add_argument("--profile", choices=["content", "none"], help="iFC profile (default content)")
    p = sub.command("delete", "delete a subscriber and its identities", subscriber_delete)
    p.add_argument("impi", help="private identity")
    p = sub.command(
        "deregister", "deregister a subscriber (RTR to its S-CSCF)", subscriber_deregister
    )
    p.add_argument("impi", help="private identity")
    psi = admin.group("psi", "public service identities at the HSS")
    psi.command("list", "list PSIs and the AS hosting each", psi_list)
    p = psi.command("set", "create or change a PSI", psi_set)
    p.add_argument("psi", help="e.g. sip:content@ims.example.org")
    p.add_argument("application_server", help="SIP URI of the AS, e.g. sip:127.0.0.1:7060")
    p = psi.command("delete", "delete a PSI", psi_delete)
    p.add_argument("psi", help="the PSI")


def _sub(impi: str) -> str:
    return "/admin/subscribers/" + quote(impi, safe="@")


def _psi(psi: str) -> str:
    return "/admin/psis/" + quote(psi, safe=":@")


def subscriber_list(args: argparse.Namespace, ctx: Context) -> None:
    ctx.print_json(ctx.admin("GET", "/admin/subscribers"))


def subscriber_show(args: argparse.Namespace, ctx: Context) -> None:
    ctx.print_json(ctx.admin("GET", _sub(args.impi)))


def subscriber_set(args: argparse.Namespace, ctx: Context) -> None:
    body: dict[str, Any] = {}
    if args.impu:
        body["impus"] = args.impu
    else:
        try:
            current = ctx.admin("GET", _sub(args.impi))
        except UserError:
            raise UserError(f"{args.impi} is new: give its public identities with --impu") from None
        body["impus"] = [i["impu"] for i in current["impus"]]
    if args.password_file is not None:
        try:
            body["password"] = args.password_file.read_text().strip()
        except OSError as e:
            raise UserError(f"cannot read {args.password_file}: {e.strerror}") from None
    elif args.password is not None:
        body["password"] = args.password
    elif args.ha1 is not None:
        body["ha1"] = args.ha1
    if args.aka_k is not None:
        if (args.aka_op is None) == (args.aka_opc is None):
            raise UserError("--aka-k needs exactly one of --aka-op or --aka-opc")
        aka = {"k": args.aka_k}
        aka["op" if args.aka_op else "opc"] = args.aka_op or args.aka_opc
        body["aka"] = aka
    if args.barred:
        body["barred"] = args.barred
    if args.profile:
        body["profile"] = args.profile
    ctx.print_json(ctx.admin("PUT", _sub(args.impi), body))


def subscriber_delete(args: argparse.Namespace, ctx: Context) -> None:
    ctx.print_json(ctx.admin("DELETE", _sub(args.impi)))


def subscriber_deregister(args: argparse.Namespace, ctx: Context) -> None:
    ctx.print_json(ctx.admin("POST", _sub(args.impi) + "/deregister"))


def psi_list(args: argparse.Namespace, ctx: Context) -> None:
    ctx.print_json(ctx.admin("GET", "/admin/psis"))


def psi_set(args: argparse.Namespace, ctx: Context) -> None:
    ctx.print_json(
        ctx.admin("PUT", _psi(args.psi), {"application_server": args.application_server})
    )


def psi_delete(args: argparse.Namespace, ctx: Context) -> None:
    ctx.print_json(ctx.admin("DELETE", _psi(args.psi)))
