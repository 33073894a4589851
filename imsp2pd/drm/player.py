"""The DRM client: register content (provider), fetch a license and play (consumer).

Client side, synchronous (it runs in the ``imsp2p`` command). Talks HTTPS to
the DRM server trusting only the lab CA given; keeps device keys and player
state in the sealed keystore (:mod:`imsp2pd.drm.keystore`).

* :func:`register_content` sends a provider's content key with its publisher
  token and returns the DOI and key id to protect the file with.
* :func:`fetch_license` learns the DRM server's signing key from ``GET /key``
  (over the verified TLS connection; it is then kept in the keystore), sends
  ``POST /license`` with a fresh nonce, checks the answer with
  :class:`~imsp2pd.drm.license.LicenseGuard` and saves the state.
* :func:`play` checks the license (device, signature, window against the
  high-water mark, play count), checks that it is for this content, verifies
  every segment, then counts the play and writes the plaintext (to a file
  that appears only when complete, or to a stream).
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from imsp2pd.drm import container, files
from imsp2pd.drm.keystore import Keystore
from imsp2pd.drm.license import (
    License,
    LicenseError,
    LicenseGuard,
    PlayerState,
    TamperedLicense,
    make_request,
    observe,
)
from imsp2pd.entitlement import KeyConfigError, load_public_key, public_key_to_config

__all__ = [
    "PlayerError",
    "Transport",
    "fetch_license",
    "play",
    "register_content",
    "urllib_transport",
]

MAX_ANSWER = 1 << 20


class PlayerError(Exception):
    """Something went wrong fetching a license or playing; one line of text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# (method, url, JSON body or None) -> (status, JSON answer)
Transport = Callable[[str, str, Any], tuple[int, Any]]


def urllib_transport(ca_path: str | os.PathLike[str], timeout: float = 30) -> Transport:
    """HTTPS with urllib, trusting only the CA certificate at ``ca_path``."""
    try:
        context = ssl.create_default_context(cafile=str(ca_path))
    except (OSError, ssl.SSLError) as exc:
        raise PlayerError(f"cannot use CA certificate {ca_path}: {exc}") from None

    def call(method: str, url: str, body: Any) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
                status, raw = resp.status, resp.read(MAX_ANSWER)
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read(MAX_ANSWER)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PlayerError(f"cannot reach the DRM server at {url}: {reason}") from None
        try:
            return status, json.loads(raw)
        except ValueError:
            raise PlayerError(f"the DRM server's answer to {method} {url} is not JSON") from None

    return call


@dataclass(frozen=True)
class Fetched:
    license: License
    path: Path


def _server_error(what: str, status: int, answer: Any) -> PlayerError:
    if isinstance(answer, dict) and "error" in answer:
        return PlayerError(f"{what}: {status} {answer.get('error')}: {answer.get('message', '')}")
    return PlayerError(f"{what}: HTTP {status}")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.part")
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise PlayerError(f"cannot write {path}: {exc.strerror}") from None


def fetch_license(
    server_url: str,
    token: str,
    keystore: Keystore,
    passphrase: str,
    out: str | os.PathLike[str],
    *,
    transport: Transport,
    now: Callable[[], float],
    urandom: Callable[[int], bytes] = os.urandom,
) -> Fetched:
    """Ask the DRM server for a license bound to this device; write it to ``out``."""
    base = server_url.rstrip("/")
    status, answer = transport("GET", base + "/key", None)
    if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("ed25519"), str):
        raise _server_error("GET /key", status, answer)
    try:
        server_key = load_public_key(answer["ed25519"])
    except KeyConfigError:
        raise PlayerError("the DRM server's key is not an Ed25519 key") from None
    nonce = urandom(16)
    request = make_request(keystore.device, token, nonce)
    status, answer = transport("POST", base + "/license", {"request": request})
    if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("license"), str):
        raise _server_error("POST /license", status, answer)
    guard = LicenseGuard(server_key, keystore.device)
    try:
        lic, _key, state = guard.accept(answer["license"], keystore.state, now(), nonce)
    except LicenseError as exc:
        raise PlayerError(f"license refused: {exc.message}") from None
    key_b64 = public_key_to_config(server_key)
    if key_b64 not in state.trusted_keys:
        state = replace(state, trusted_keys=(*state.trusted_keys, key_b64))
    keystore.with_state(state).save(passphrase)
    path = Path(out)
    _write_atomically(path, lic.blob + "\n")
    return Fetched(lic, path)


def register_content(
    server_url: str, publisher_token: str, content_key: bytes, *, transport: Transport
) -> tuple[str, str]:
    """The provider's side of ``POST /content``: (DOI, key id) for ``content_key``."""
    status, answer = transport(
        "POST",
        server_url.rstrip("/") + "/content",
        {"publisher_token": publisher_token, "content_key": content_key.hex()},
    )
    if (
        status != 201
        or not isinstance(answer, dict)
        or not isinstance(answer.get("doi"), str)
        or not isinstance(answer.get("key_id"), str)
    ):
        raise _server_error("POST /content", status, answer)
    return answer["doi"], answer["key_id"]


def _read_license(path: str | os.PathLike[str]) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read(64 * 1024).strip()
    except OSError as exc:
        raise PlayerError(f"cannot read license {path}: {exc.strerror}") from None


def _authorise(blob: str, keystore: Keystore, now: float) -> tuple[License, bytes, PlayerState]:
    if not keystore.state.trusted_keys:
        raise PlayerError("no DRM server key is known yet: fetch a license first")
    last: LicenseError | None = None
    for key_b64 in keystore.state.trusted_keys:
        guard = LicenseGuard(load_public_key(key_b64), keystore.device)
        try:
            return guard.authorize_play(blob, keystore.state, now)
        except TamperedLicense as exc:
            last = exc
            continue
        except LicenseError as exc:
            raise PlayerError(f"license refused: {exc.message}") from None
    assert last is not None
    raise PlayerError(f"license refused: {last.message}")


def play(
    license_path: str | os.PathLike[str],
    content: str | os.PathLike[str],
    out: str | os.PathLike[str] | BinaryIO,
    keystore: Keystore,
    passphrase: str,
    *,
    now: Callable[[], float],
) -> License:
    """Check the license, verify the content, count the play, write the plaintext."""
    blob = _read_license(license_path)
    when = now()
    try:
        observed = observe(keystore.state, when)
    except LicenseError as exc:
        raise PlayerError(f"license refused: {exc.message}") from None
    if observed != keystore.state:
        keystore = keystore.with_state(observed)
        keystore.save(passphrase)
    lic, key, state = _authorise(blob, keystore, when)
    try:
        header = container.read_header_from_path(content)
    except OSError as exc:
        raise PlayerError(f"cannot open {content}: {exc.strerror}") from None
    if (header.doi, header.key_id) != (lic.doi, lic.key_id):
        raise PlayerError(
            f"the license is for {lic.doi} (key {lic.key_id}), the file is "
            f"{header.doi} (key {header.key_id})"
        )
    # Verify every segment before the play counts or any plaintext is written.
    with open(content, "rb") as f:
        container.open_stream(f, files._NullSink(), key)  # type: ignore[arg-type]
    keystore.with_state(state).save(passphrase)
    if isinstance(out, str | os.PathLike):
        files.unprotect_file(content, out, key)
    else:
        with open(content, "rb") as f:
            container.open_stream(f, out, key)
    return lic
