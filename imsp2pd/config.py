"""Configuration: one TOML file, checked against the schemas of the core and the roles.

The daemon and the ``imsp2p`` command find the file the same way
(:func:`find_config_path`): ``--config PATH``, else ``$IMSP2P_CONFIG``, else
``./etc/imsp2pd.toml``.

Every section has a schema: a mapping of key to :class:`Field`. The core owns
``[daemon]``, ``[admin]`` and ``[ims]``; each role plugin brings the schema of
its own section (``IRole.schema``). A key missing from the file takes the
field's default, so the lab file only has to say what differs; an unknown
section or key, a wrong type or a value its check refuses is a
:class:`ConfigError` whose message is one line naming the key.

Relative paths in the file (``Config.path``) are resolved against the
directory that holds the file, so ``state_dir = "../var"`` in
``etc/imsp2pd.toml`` means ``var/`` of the checkout wherever the command runs.
"""

from __future__ import annotations

import builtins
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

DEFAULT_CONFIG = Path("etc") / "imsp2pd.toml"
ENV_VAR = "IMSP2P_CONFIG"


class ConfigError(Exception):
    """A problem with the configuration, as one line that names the key or file."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "a table",
}


@dataclass(frozen=True)
class Field:
    """One key of a section.

    ``type`` is the TOML type (``str``, ``int``, ``float``, ``bool``, ``list``,
    ``dict``); ``item`` the type of a list's items; ``check`` returns an error
    message for a value of the right type that is still wrong, or ``None``.
    """

    type: builtins.type
    default: Any = REQUIRED
    help: str = ""
    item: builtins.type | None = None
    check: Callable[[Any], str | None] | None = None


Schema = Mapping[str, Field]


def _endpoint_check(value: str) -> str | None:
    if ":" not in value:
        return "must be a Twisted endpoint string such as 'tcp:9100:interface=127.0.0.1'"
    return None


def host_port_check(value: str) -> str | None:
    """Check a ``host:port`` value (IPv6 hosts in brackets)."""
    try:
        split_host_port(value)
    except ValueError as e:
        return str(e)
    return None


def split_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be HOST:PORT, not {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def endpoint_field(default: str, help: str = "") -> Field:
    """A Twisted endpoint string (``tcp:PORT:interface=…``, ``ssl:…``)."""
    return Field(str, default, help, check=_endpoint_check)


def one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


CORE_SCHEMAS: dict[str, Schema] = {
    "daemon": {
        "state_dir": Field(str, "../var", "directory for the store, keys and certificates"),
        "store": Field(str, "imsp2pd.sqlite", "SQLite file, relative to state_dir"),
        "log_format": Field(str, "text", "text or json", check=one_of("text", "json")),
    },
    "admin": {
        "listen": endpoint_field("tcp:9100:interface=127.0.0.1", "control port endpoint"),
        "url": Field(str, "http://127.0.0.1:9100", "control port URL used by `imsp2p admin`"),
        "token": Field(str, REQUIRED, "bearer token for /admin/ routes"),
    },
    "ims": {
        "domain": Field(str, "ims.example.org", "home domain and Diameter realm"),
    },
    "client": {
        "user": Field(str, "", "the client's user: a name (alice) or an IMPU"),
        "password": Field(
            str, "", "SIP digest password (else --password-file or $IMSP2P_PASSWORD)"
        ),
        "pcscf": Field(str, "127.0.0.1:4060", "the P-CSCF, HOST:PORT (TCP)", check=host_port_check),
        "psi": Field(str, "sip:content@ims.example.org", "the content service's PSI"),
        "index_url": Field(str, "http://127.0.0.1:8080", "the content index"),
        "home": Field(str, "../var/client", "grants, .torrents and downloads, one folder per user"),
    },
}


@dataclass(frozen=True)
class Config:
    """A checked configuration: every section filled in with its defaults."""

    file: Path
    sections: Mapping[str, Mapping[str, Any]] = field(repr=False)

    @property
    def base_dir(self) -> Path:
        return self.file.parent

    def section(self, name: str) -> Mapping[str, Any]:
        try:
            return self.sections[name]
        except KeyError:
            raise ConfigError(f"config: no section [{name}] in {self.file}") from None

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        return self.section(name)

    def path(self, value: str | os.PathLike[str]) -> Path:
        """Resolve a path from the config file against the file's directory."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def state_dir(self) -> Path:
        return self.path(self.sections["daemon"]["state_dir"])

    def state_path(self, *parts: str) -> Path:
        """A path under ``[daemon] state_dir``."""
        return self.state_dir.joinpath(*parts)


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--config PATH``, else ``$IMSP2P_CONFIG``, else ``./etc/imsp2pd.toml``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return DEFAULT_CONFIG


def _type_name(t: type) -> str:
    return _TYPE_NAMES.get(t, t.__name__)


def _check_value(where: str, f: Field, value: Any) -> Any:
    ok = isinstance(value, f.type) and not (f.type is int and isinstance(value, bool))
    if f.type is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(
            f"config: {where} must be {_type_name(f.type)}, not {type(value).__name__}"
        )
    if f.item is not None:
        for i, item in enumerate(value):
            if not isinstance(item, f.item):
                raise ConfigError(
                    f"config: {where}[{i}] must be {_type_name(f.item)}, not {type(item).__name__}"
                )
    if f.check is not None:
        problem = f.check(value)
        if problem:
            raise ConfigError(f"config: {where} {problem}")
    return value


def check_sections(
    raw: Mapping[str, Any], schemas: Mapping[str, Schema], origin: str = "config"
) -> dict[str, Mapping[str, Any]]:
    """Check raw sections against schemas and fill in defaults."""
    for name, value in raw.items():
        if name not in schemas:
            known = ", ".join(sorted(schemas))
            raise ConfigError(f"config: unknown section [{name}] in {origin} (known: {known})")
        if not isinstance(value, dict):
            raise ConfigError(f"config: [{name}] must be a table")
    out: dict[str, Mapping[str, Any]] = {}
    for name, schema in schemas.items():
        given = raw.get(name, {})
        for key in given:
            if key not in schema:
                known = ", ".join(sorted(schema)) or "none"
                raise ConfigError(f"config: unknown key [{name}] {key} (known keys: {known})")
        values: dict[str, Any] = {}
        for key, f in schema.items():
            where = f"[{name}] {key}"
            if key in given:
                values[key] = _check_value(where, f, given[key])
            elif f.default is REQUIRED:
                raise ConfigError(f"config: missing key {where} in {origin}")
            else:
                values[key] = f.default
        out[name] = MappingProxyType(values)
    return out


def load_config(path: str | os.PathLike[str], schemas: Mapping[str, Schema]) -> Config:
    """Read and check the TOML file at ``path`` against ``schemas`` (core ones included)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config: file not found: {p}") from None
    except OSError as e:
        raise ConfigError(f"config: cannot read {p}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config: {p} is not UTF-8 text") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {p} is not valid TOML: {e}") from None
    all_schemas = {**CORE_SCHEMAS, **schemas}
    return Config(
        file=p.resolve(), sections=MappingProxyType(check_sections(raw, all_schemas, str(p)))
    )
