"""The ``imsp2p`` command: one console script, subcommands from every package.

Each package of imsp2pd that has commands holds a ``commands.py`` module with
``register(cli)``; third parties can add theirs through the entry point group
``imsp2p.commands`` (a callable taking the same ``cli``). ``register`` adds
groups and commands::

    def register(cli: CommandLine) -> None:
        swarm = cli.group("admin", "operate a running daemon").group("swarm", "swarms")
        p = swarm.command("mute", "mute a swarm", mute)
        p.add_argument("--infohash", required=True)

    def mute(args: argparse.Namespace, ctx: Context) -> int | None: ...

A handler returns the exit status (``None`` is 0) and raises
:class:`UserError` for anything the user can fix: it is printed as one line,
``imsp2p: …``, with exit status 1. The config is found as the daemon finds
it: ``--config PATH``, else ``$IMSP2P_CONFIG``, else ``./etc/imsp2pd.toml``,
and only read when a command asks for it (``ctx.config``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import pkgutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from typing import IO, Any

import imsp2pd
from imsp2pd.config import Config, ConfigError, find_config_path, load_config


class UserError(Exception):
    """Something the user can fix; shown as one line."""


class Context:
    """What a handler gets besides its arguments."""

    def __init__(
        self, config_path: str | None, stdout: IO[str] | None = None, stderr: IO[str] | None = None
    ) -> None:
        self.config_path = config_path
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr

    @cached_property
    def config(self) -> Config:
        from imsp2pd.roles import discover_roles, role_schemas

        return load_config(find_config_path(self.config_path), role_schemas(discover_roles()))

    def print(self, *args: Any) -> None:
        print(*args, file=self.stdout)

    def print_json(self, value: Any) -> None:
        json.dump(value, self.stdout, indent=2, sort_keys=True)
        self.stdout.write("\n")

    def admin(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        base_url: str | None = None,
        timeout: float = 30,
    ) -> Any:
        """Call the control port's admin API and return the JSON answer.

        An HTTP error answer becomes a :class:`UserError` with the server's message.
        """
        admin = self.config["admin"]
        url = (base_url or admin["url"]).rstrip("/") + path
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {admin['token']}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                err = json.loads(raw)
                message = f"{err.get('error', e.code)}: {err.get('message', '')}"
            except ValueError:
                message = raw.decode(errors="replace").strip() or e.reason
            raise UserError(f"{method} {path}: {e.code} {message}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise UserError(f"cannot reach the control port at {url}: {reason}") from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise UserError(f"{method} {path}: the answer is not JSON") from None


Handler = Callable[[argparse.Namespace, Context], "int | None"]


class Group:
    """A level of subcommands (the root, ``admin``, ``admin swarm``, …)."""

    def __init__(self, parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        self.parser = parser
        self.path = path
        self._sub = parser.add_subparsers(metavar="COMMAND", title="commands")
        self._groups: dict[str, Group] = {}
        self._commands: set[str] = set()

    def group(self, name: str, help: str = "") -> Group:
        """The subgroup ``name``, made on first use (so several packages can share it)."""
        if name in self._commands:
            raise ValueError(f"{' '.join((*self.path, name))} is a command, not a group")
        if name not in self._groups:
            p = self._sub.add_parser(name, help=help, description=help)
            p.set_defaults(_group=p)
            self._groups[name] = Group(p, (*self.path, name))
        return self._groups[name]

    def command(self, name: str, help: str, handler: Handler) -> argparse.ArgumentParser:
        """Add a command; returns its parser for its arguments."""
        if name in self._groups or name in self._commands:
            raise ValueError(f"{' '.join((*self.path, name))} is defined twice")
        self._commands.add(name)
        p = self._sub.add_parser(name, help=help, description=help)
        p.set_defaults(_handler=handler)
        return p


class CommandLine(Group):
    def __init__(self) -> None:
        parser = argparse.ArgumentParser(
            prog="imsp2p",
            description="imsp2pd client and operator tool",
        )
        parser.add_argument("--version", action="version", version=f"imsp2p {imsp2pd.__version__}")
        parser.add_argument(
            "--config",
            metavar="PATH",
            help="config file (default: $IMSP2P_CONFIG, else ./etc/imsp2pd.toml)",
        )
        parser.set_defaults(_group=parser)
        super().__init__(parser, ("imsp2p",))


def command_modules() -> Iterator[str]:
    """``imsp2pd.<package>.commands`` for every package that has one, sorted."""
    for mod in sorted(pkgutil.iter_modules(imsp2pd.__path__), key=lambda m: m.name):
        if mod.ispkg:
            name = f"imsp2pd.{mod.name}.commands"
            if importlib.util.find_spec(name) is not None:
                yield name


def build_cli() -> CommandLine:
    cli = CommandLine()
    for name in command_modules():
        importlib.import_module(name).register(cli)
    for ep in importlib.metadata.entry_points(group="imsp2p.commands"):
        ep.load()(cli)
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    cli = build_cli()
    args = cli.parser.parse_args(argv)
    handler = getattr(args, "_handler", None)
    if handler is None:
        args._group.print_help()
        return 2
    ctx = Context(args.config)
    try:
        status = handler(args, ctx)
    except (UserError, ConfigError) as e:
        sys.stderr.write(f"imsp2p: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("imsp2p: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    return 0 if status is None else int(status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
