"""File-level protect, inspect and unprotect: the logic behind ``imsp2p drm …``.

These functions take paths, do the file handling the commands promise and
raise one-line typed errors (:class:`DrmFileError` for files and keys,
:class:`~imsp2pd.drm.container.ContainerError` for the container itself):

* :func:`protect_file` writes the container to a temporary file beside the
  output and renames it into place only when complete; without a key it makes
  one and writes it, as 32 hex digits, to ``OUT.key`` with mode 0600 (never
  overwriting an existing key file).
* :func:`inspect_file` reads the header (and, without the key, checks that
  the file is whole: not truncated, nothing after the last segment).
* :func:`unprotect_file` decrypts to a temporary file with mode 0600 and
  renames it only when every segment verified; to ``-`` (a stream) it
  verifies every segment first and writes only in a second pass, so a bad
  container never yields any plaintext.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from imsp2pd.drm import container
from imsp2pd.drm.container import DEFAULT_PIECE_LENGTH, Header

__all__ = [
    "DrmFileError",
    "ProtectResult",
    "format_header",
    "inspect_file",
    "protect_file",
    "read_key_file",
    "unprotect_file",
    "unprotect_to_stream",
    "write_key_file",
]

_HEX_KEY = re.compile(r"[0-9a-fA-F]{32}")


class DrmFileError(Exception):
    """A file or key the user named cannot be used; one line of text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ProtectResult:
    header: Header
    output: Path
    key_file: Path | None  # set when a new key was made and written


def parse_key(text: str, where: str = "key") -> bytes:
    """A 128-bit content key from 32 hex digits (surrounding whitespace allowed)."""
    value = text.strip()
    if not _HEX_KEY.fullmatch(value):
        raise DrmFileError(f"{where} must hold a 128-bit key as 32 hex digits")
    return bytes.fromhex(value)


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(4096)
    except OSError as exc:
        raise DrmFileError(f"cannot read key file {path}: {exc.strerror}") from None
    return parse_key(text, f"key file {path}")


def write_key_file(path: str | os.PathLike[str], key: bytes) -> None:
    """Write ``key`` as hex to a new file with mode 0600; refuse to overwrite."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise DrmFileError(f"key file {path} already exists; not overwriting it") from None
    except OSError as exc:
        raise DrmFileError(f"cannot create key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _open_input(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise DrmFileError(f"cannot open {path}: {exc.strerror}") from None
    with f:
        yield f


@contextlib.contextmanager
def _atomic_output(path: Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A temporary file beside ``path``; renamed onto it only if the block succeeds."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
    except OSError as exc:
        raise DrmFileError(f"cannot write in {directory}: {exc.strerror}") from None
    ok = False
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        ok = True
    except OSError as exc:
        raise DrmFileError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        if not ok:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def protect_file(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    doi: str,
    key_id: str,
    key: bytes | None = None,
    piece_length: int = DEFAULT_PIECE_LENGTH,
    urandom: Callable[[int], bytes] = os.urandom,
) -> ProtectResult:
    """Protect ``src`` into ``out``; make a key (written to ``out``.key) if none is given."""
    out_path = Path(out)
    container.check_piece_length(piece_length)
    key_file: Path | None = None
    if key is None:
        key = container.new_content_key(urandom)
        key_file = out_path.with_name(out_path.name + ".key")
        if key_file.exists():
            raise DrmFileError(f"key file {key_file} already exists; not overwriting it")
    with _open_input(src) as fin:
        length = os.fstat(fin.fileno()).st_size
        with _atomic_output(out_path, 0o644) as fout:
            header = container.protect_stream(
                fin,
                fout,
                key,
                doi=doi,
                key_id=key_id,
                plaintext_length=length,
                piece_length=piece_length,
                urandom=urandom,
            )
            if key_file is not None:
                # Inside the block: if the key cannot be written, no container
                # that nobody can open is left behind.
                write_key_file(key_file, key)
    return ProtectResult(header=header, output=out_path, key_file=key_file)


def inspect_file(path: str | os.PathLike[str]) -> Header:
    """The header of the container at ``path``, after checking the file is whole."""
    with _open_input(path) as f:
        return container.verify_structure(f)


def format_header(header: Header) -> str:
    """The header as ``name: value`` lines."""
    rows = header.describe()
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name + ':':<{width + 1}} {value}" for name, value in rows) + "\n"


class _NullSink:
    def write(self, data: bytes | bytearray | memoryview) -> int:
        return len(data)


def unprotect_to_stream(src: str | os.PathLike[str], dst: BinaryIO, key: bytes) -> Header:
    """Verify all of ``src``, then decrypt it to ``dst``: nothing is written from a bad file."""
    with _open_input(src) as f:
        container.open_stream(f, _NullSink(), key)  # type: ignore[arg-type]
        f.seek(0)
        return container.open_stream(f, dst, key)


def unprotect_file(src: str | os.PathLike[str], out: str | os.PathLike[str], key: bytes) -> Header:
    """Decrypt ``src`` to the file ``out``, which appears only if every segment verified."""
    with _open_input(src) as fin, _atomic_output(Path(out)) as fout:
        return container.open_stream(fin, fout, key)
