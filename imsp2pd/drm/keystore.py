"""The player's keystore: device keys and player state, sealed under a passphrase.

The file is JSON::

    {"format": "imsp2p-keystore", "v": 1,
     "kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": B64URL(16)},
     "nonce": B64URL(12), "sealed": B64URL}

``sealed`` is AES-256-GCM under ``scrypt(passphrase, salt, n, r, p, 32)`` of
the canonical JSON ``{"x25519": B64URL(32), "ed25519": B64URL(32),
"state": PLAYER-STATE}``; the AAD is the canonical JSON of every outer member
but ``sealed``, so the KDF parameters cannot be swapped. Every save uses a new
salt and nonce and replaces the file atomically (mode 0600). The device keys
are made at first use.

The passphrase comes from ``--passphrase-file``, else
``$IMSP2P_KEYSTORE_PASSPHRASE``, else a terminal prompt; with no terminal and
neither of the others, :func:`get_passphrase` raises a clear error.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from imsp2pd import canonjson
from imsp2pd.drm.license import DeviceKeys, PlayerState
from imsp2pd.entitlement import b64url_decode, b64url_encode

__all__ = [
    "DEFAULT_SCRYPT_N",
    "PASSPHRASE_ENV",
    "Keystore",
    "KeystoreError",
    "get_passphrase",
]

FORMAT = "imsp2p-keystore"
DEFAULT_SCRYPT_N = 2**15
MIN_SCRYPT_N = 2**10
MAX_SCRYPT_N = 2**20
PASSPHRASE_ENV = "IMSP2P_KEYSTORE_PASSPHRASE"
MAX_FILE = 1 << 20


class KeystoreError(Exception):
    """The keystore cannot be opened or written; one line of text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _kdf(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


@dataclass(frozen=True)
class Keystore:
    """An opened keystore. Immutable: :meth:`with_state` then :meth:`save`."""

    path: Path
    device: DeviceKeys
    state: PlayerState
    scrypt_n: int = DEFAULT_SCRYPT_N

    @classmethod
    def open_or_create(
        cls,
        path: str | os.PathLike[str],
        passphrase: str,
        *,
        scrypt_n: int = DEFAULT_SCRYPT_N,
    ) -> Keystore:
        """Open the keystore at ``path``; make it, with new device keys, if missing."""
        if not passphrase:
            raise KeystoreError("the keystore passphrase is empty")
        p = Path(path)
        if not p.exists():
            store = cls(p, DeviceKeys.generate(), PlayerState(), scrypt_n)
            store.save(passphrase, exclusive=True)
            return store
        return cls.open(p, passphrase)

    @classmethod
    def open(cls, path: str | os.PathLike[str], passphrase: str) -> Keystore:
        p = Path(path)
        try:
            raw = p.read_bytes()[: MAX_FILE + 1]
        except OSError as exc:
            raise KeystoreError(f"cannot read keystore {p}: {exc.strerror}") from None
        try:
            if len(raw) > MAX_FILE:
                raise ValueError("too large")
            outer = json.loads(raw)
            kdf = outer["kdf"]
            if outer["format"] != FORMAT or outer["v"] != 1 or kdf["name"] != "scrypt":
                raise ValueError("unknown format")
            n, r, par = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
            if (
                not MIN_SCRYPT_N <= n <= MAX_SCRYPT_N
                or n & (n - 1)
                or not (1 <= r <= 32 and 1 <= par <= 16)
            ):
                raise ValueError("scrypt parameters out of range")
            salt = b64url_decode(kdf["salt"])
            nonce = b64url_decode(outer["nonce"])
            sealed = b64url_decode(outer["sealed"])
            aad = canonjson.dumps({k: v for k, v in outer.items() if k != "sealed"})
        except (ValueError, KeyError, TypeError, AttributeError):
            raise KeystoreError(f"{p} is not an imsp2p keystore") from None
        try:
            plain = AESGCM(_kdf(passphrase, salt, n, r, par)).decrypt(nonce, sealed, aad)
        except (InvalidTag, ValueError):
            raise KeystoreError(
                f"cannot open keystore {p}: wrong passphrase, or the file was changed"
            ) from None
        try:
            inner = canonjson.loads(plain)
            device = DeviceKeys.from_raw(
                b64url_decode(inner["x25519"]), b64url_decode(inner["ed25519"])
            )
            state = PlayerState.from_json(inner["state"])
        except Exception:  # sealed by us, so only a bug gets here; still one line
            raise KeystoreError(f"keystore {p} holds damaged contents") from None
        return cls(p, device, state, n)

    def with_state(self, state: PlayerState) -> Keystore:
        return replace(self, state=state)

    def _document(self, passphrase: str) -> bytes:
        salt = os.urandom(16)
        nonce = os.urandom(12)
        outer: dict[str, Any] = {
            "format": FORMAT,
            "v": 1,
            "kdf": {
                "name": "scrypt",
                "n": self.scrypt_n,
                "r": 8,
                "p": 1,
                "salt": b64url_encode(salt),
            },
            "nonce": b64url_encode(nonce),
        }
        x, ed = self.device.private_raw()
        inner = canonjson.dumps(
            {
                "x25519": b64url_encode(x),
                "ed25519": b64url_encode(ed),
                "state": self.state.to_json(),
            }
        )
        key = _kdf(passphrase, salt, self.scrypt_n, 8, 1)
        outer["sealed"] = b64url_encode(AESGCM(key).encrypt(nonce, inner, canonjson.dumps(outer)))
        return json.dumps(outer, indent=1).encode("ascii") + b"\n"

    def save(self, passphrase: str, *, exclusive: bool = False) -> None:
        """Seal and write atomically (mode 0600)."""
        data = self._document(passphrase)
        directory = self.path.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        except OSError as exc:
            raise KeystoreError(f"cannot write keystore in {directory}: {exc.strerror}") from None
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if exclusive:
                try:
                    os.link(tmp, self.path)  # fails if another process made it first
                except FileExistsError:
                    raise KeystoreError(
                        f"keystore {self.path} appeared while being created; run again"
                    ) from None
            else:
                os.replace(tmp, self.path)
        except OSError as exc:
            raise KeystoreError(f"cannot write keystore {self.path}: {exc.strerror}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def get_passphrase(
    passphrase_file: str | os.PathLike[str] | None,
    environ: Mapping[str, str],
    isatty: Callable[[], bool],
    prompt: Callable[[str], str],
) -> str:
    """The keystore passphrase: from a file, the environment, or a prompt."""
    if passphrase_file is not None:
        try:
            with open(passphrase_file, encoding="utf-8") as f:
                text = f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeystoreError(f"cannot read passphrase file {passphrase_file}: {exc}") from None
        if not text:
            raise KeystoreError(f"passphrase file {passphrase_file} is empty")
        return text
    value = environ.get(PASSPHRASE_ENV)
    if value:
        return value
    if isatty():
        text = prompt("keystore passphrase: ")
        if text:
            return text
        raise KeystoreError("the keystore passphrase is empty")
    raise KeystoreError(
        f"no keystore passphrase: use --passphrase-file or set ${PASSPHRASE_ENV} "
        "(there is no terminal to ask on)"
    )
