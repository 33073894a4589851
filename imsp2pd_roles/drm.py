"""The ``drm`` role: the DRM server over HTTPS (DESIGN.md §3).

At first start it makes, under ``[daemon] state_dir``: ``keys/drm_ed25519.pem``
(the key licenses are signed with), ``keys/drm_master.key`` (the master key
content keys are sealed under, unless ``[drm] master_key`` gives it) and the
lab CA and ``drm`` certificate under ``tls/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, cast

from twisted.application.service import IService
from twisted.plugin import IPlugin
from zope.interface import implementer

from imsp2pd.config import Config, ConfigError, Field
from imsp2pd.roles import Hub, IRole, Role
from imsp2pd.store import Migration, Store

DRM_KEY_FILENAME = "drm_ed25519.pem"
MASTER_KEY_FILENAME = "drm_master.key"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _hex64_or_empty(value: str) -> str | None:
    return None if value == "" or _HEX64.fullmatch(value) else "must be 64 hex digits or empty"


def _doi_prefix(value: str) -> str | None:
    return None if re.fullmatch(r"10\.[0-9]{4,9}", value) else "must look like 10.5555"


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0: any free port, for tests); IPv6 hosts in brackets."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"must be HOST:PORT, not {value!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _listen_check(value: str) -> str | None:
    try:
        split_listen(value)
    except ValueError as exc:
        return str(exc)
    return None


def keys_dir(config: Config) -> Path:
    return config.state_path("keys")


def tls_dir(config: Config) -> Path:
    return config.state_path("tls")


def ca_path(config: Config) -> Path:
    """The CA certificate clients of the DRM server trust."""
    value = config["drm"]["ca"]
    return config.path(value) if value else tls_dir(config) / "ca.pem"


def load_or_create_master_key(directory: Path) -> bytes:
    """32 random bytes kept as hex in ``directory/drm_master.key`` (mode 0600)."""
    path = directory / MASTER_KEY_FILENAME
    if not path.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = os.urandom(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(key.hex() + "\n")
                f.flush()
                os.fsync(f.fileno())
            return key
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the DRM master key {path}: {exc.strerror}") from None
    if not _HEX64.fullmatch(text):
        raise ConfigError(f"{path} must hold 64 hex digits")
    return bytes.fromhex(text)


@implementer(IPlugin, IRole)
class DrmRole(Role):
    name = "drm"
    description = "DRM server: content keys, rights, device-bound licenses, revocation (HTTPS)"
    section = "drm"
    order = 50
    schema = {
        "listen": Field(str, "127.0.0.1:8443", "HTTPS address, HOST:PORT", check=_listen_check),
        "url": Field(str, "https://127.0.0.1:8443", "the URL clients and the AS use"),
        "ca": Field(str, "", "CA certificate clients trust; empty: STATE/tls/ca.pem"),
        "doi_prefix": Field(str, "10.5555", "DOI prefix of the operator", check=_doi_prefix),
        "service_token": Field(
            str,
            "",
            "bearer credential of the AS, tracker and operator; empty: the [admin] token",
        ),
        "as_public_key": Field(
            str,
            "",
            "AS Ed25519 public key (PEM, PEM file, base64url or hex); empty: the AS key "
            "under STATE/keys (made there if missing, as in the lab)",
        ),
        "master_key": Field(
            str,
            "",
            "64 hex digits; empty: STATE/keys/drm_master.key, made at first start",
            check=_hex64_or_empty,
        ),
        "tls_names": Field(
            list, ["localhost", "127.0.0.1", "::1"], "names in the lab certificate", item=str
        ),
    }

    def migrations(self) -> tuple[Migration, ...]:
        from imsp2pd.drm.server import MIGRATIONS

        return MIGRATIONS

    def check(self, config: Config) -> None:
        if not config["drm"]["tls_names"]:
            raise ConfigError("config: [drm] tls_names must name at least one host")

    def build(self, config: Config, store: Store, reactor: Any, hub: Hub) -> IService:
        from imsp2pd import entitlement, tlslab
        from imsp2pd.drm.http import make_router, make_service
        from imsp2pd.drm.server import DrmCore, MasterKey

        section = config["drm"]
        keys = keys_dir(config)
        try:
            signing = entitlement.load_or_create_private_key(keys, DRM_KEY_FILENAME)
            if section["as_public_key"]:
                as_key = entitlement.load_public_key(section["as_public_key"])
            else:
                as_key = entitlement.load_or_create_private_key(keys).public_key()
        except entitlement.KeyConfigError as exc:
            raise ConfigError(f"config: [drm]: {exc}") from None
        master = (
            bytes.fromhex(section["master_key"])
            if section["master_key"]
            else load_or_create_master_key(keys)
        )
        try:
            lab = tlslab.ensure_server_cert(tls_dir(config), "drm", section["tls_names"])
        except tlslab.TlsLabError as exc:
            raise ConfigError(f"config: [drm] TLS: {exc}") from None
        core = DrmCore(
            signing_key=signing,
            as_verifier=entitlement.Verifier(as_key),
            master_key=MasterKey(master),
            doi_prefix=section["doi_prefix"],
        )
        token = section["service_token"] or config["admin"]["token"]
        router = make_router(core, store, reactor, token, hub.metrics, hub.admin)
        host, port = split_listen(section["listen"])
        service = make_service(router, reactor, port, host, tlslab.server_options(lab))

        def health() -> dict[str, Any]:
            listening = service.port is not None
            return {"ok": listening, "url": section["url"], "listening": listening}

        hub.add_check("drm", health)
        return cast(IService, service)


drm = DrmRole()
