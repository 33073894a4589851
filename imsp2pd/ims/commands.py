"""Operator commands for the IMS roles: ``imsp2p admin balance …``, ``imsp2p admin charging …``."""

from __future__ import annotations

import argparse
from urllib.parse import quote

from imsp2pd.client.cli import CommandLine, Context


def register(cli: CommandLine) -> None:
    admin = cli.group("admin", "operate a running daemon through its control port")
    balance = admin.group("balance", "prepaid balances at the OCS")
    p = balance.command("show", "show one balance, or all", balance_show)
    p.add_argument("user", nargs="?", help="IMPU, e.g. sip:alice@ims.example.org")
    p = balance.command("credit", "add (or, negative, take) an amount", balance_credit)
    p.add_argument("user", help="IMPU")
    p.add_argument("amount", help='decimal amount, e.g. "10.00"')
    p = balance.command("set", "set a balance (makes the account if needed)", balance_set)
    p.add_argument("user", help="IMPU")
    p.add_argument("amount", help='decimal amount, e.g. "10.00"')
    p.add_argument("--currency", help="ISO 4217 code of a new account (default EUR)")
    charging = admin.group("charging", "charging records at the OCS")
    p = charging.command("records", "list charging records", charging_records)
    p.add_argument("--user", help="only this IMPU")


def _path(impu: str) -> str:
    return "/admin/balances/" + quote(impu, safe=":@")


def balance_show(args: argparse.Namespace, ctx: Context) -> None:
    ctx.print_json(ctx.admin("GET", _path(args.user) if args.user else "/admin/balances"))


def balance_credit(args: argparse.Namespace, ctx: Context) -> None:
    ctx.print_json(ctx.admin("POST", _path(args.user), {"credit": args.amount}))


def balance_set(args: argparse.Namespace, ctx: Context) -> None:
    body = {"balance": args.amount}
    if args.currency:
        body["currency"] = args.currency
    ctx.print_json(ctx.admin("POST", _path(args.user), body))


def charging_records(args: argparse.Namespace, ctx: Context) -> None:
    path = "/admin/charging-records" + (f"?user={quote(args.user, safe='')}" if args.user else "")
    ctx.print_json(ctx.admin("GET", path))
