"""Build and parse .torrent files (BEP 3 metainfo, v1), strictly.

**Where the DOI lives.** The DOI of protected content is carried *inside the
info dictionary*, as ``info["doi"]`` (a UTF-8 string). It is therefore
covered by the info-hash: nobody can re-label a swarm with another DOI
without changing its info-hash, which the DRM server binds to the DOI. Other
clients ignore the unknown key (and, being inside ``info``, it survives
metadata exchange).

**Private flag.** ``info["private"] = 1`` (BEP 27) is set by default; pass
``private=False`` only for unprotected test content.

**Piece length.** Chosen from the total size as a power of two between
256 KiB and 4 MiB (about 1,024 pieces), or given (a multiple of 16 KiB
between 16 KiB and 64 MiB, so that a protected file's piece length read from
its container header can be used as is).

**Parsing** (:func:`parse_metainfo`) is strict and raises one
:class:`MetainfoError` naming the problem: not strict bencoding, wrong types,
absurd sizes (file larger than 32 MiB, total over 1 PiB, more than 100,000
files, piece count not matching the total length), nesting deeper than 16,
unsafe names (empty, ``.``, ``..``, containing ``/``, ``\\`` or NUL, or not
UTF-8), duplicate files or a file that is also a directory.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imsp2pd.bittorrent.bencoding import BencodeError, Preencoded, bdecode, bencode

__all__ = [
    "BLOCK_SIZE",
    "FileEntry",
    "Metainfo",
    "MetainfoError",
    "choose_piece_length",
    "make_metainfo",
    "parse_metainfo",
]

BLOCK_SIZE = 16 * 1024
MIN_AUTO_PIECE = 256 * 1024
MAX_AUTO_PIECE = 4 * 1024 * 1024
MAX_PIECE = 64 * 1024 * 1024
MAX_TORRENT_BYTES = 32 * 1024 * 1024
MAX_TOTAL_LENGTH = 2**50
MAX_FILES = 100_000
MAX_PATH_DEPTH = 32
MAX_COMPONENT = 255
MAX_NESTING = 16
TARGET_PIECES = 1024


class MetainfoError(ValueError):
    """A .torrent (or the input to build one) cannot be used."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of the torrent: its path under the torrent's name, its
    length and its byte offset in the concatenated content."""

    path: tuple[str, ...]
    length: int
    offset: int
    pad: bool = False  # BEP 47 padding file (attr contains "p"): zeros, never written


@dataclass(frozen=True, slots=True)
class Metainfo:
    name: str
    piece_length: int
    pieces: bytes  # concatenated SHA-1 digests, 20 bytes per piece
    files: tuple[FileEntry, ...]
    single_file: bool
    private: bool
    info_hash: bytes
    announce: str | None = None
    announce_list: tuple[tuple[str, ...], ...] = ()
    doi: str | None = None
    comment: str | None = None
    created_by: str | None = None
    creation_date: int | None = None
    info_bytes: bytes = field(default=b"", repr=False)  # the bencoded info dictionary

    @property
    def total_length(self) -> int:
        last = self.files[-1]
        return last.offset + last.length

    @property
    def num_pieces(self) -> int:
        return len(self.pieces) // 20

    def piece_hash(self, index: int) -> bytes:
        if not 0 <= index < self.num_pieces:
            raise IndexError(index)
        return self.pieces[20 * index : 20 * index + 20]

    def piece_size(self, index: int) -> int:
        if not 0 <= index < self.num_pieces:
            raise IndexError(index)
        if index == self.num_pieces - 1:
            return self.total_length - index * self.piece_length
        return self.piece_length

    @property
    def info_hash_hex(self) -> str:
        return self.info_hash.hex()

    def trackers(self) -> list[str]:
        """Announce URLs, in BEP 12 tier order, without repeats."""
        urls: list[str] = []
        for tier in self.announce_list:
            urls.extend(u for u in tier if u not in urls)
        if self.announce and self.announce not in urls:
            urls.insert(0, self.announce)
        return urls

    def to_bytes(self) -> bytes:
        top: dict[bytes, Any] = {b"info": Preencoded(self.info_bytes)}
        if self.announce:
            top[b"announce"] = self.announce
        if self.announce_list:
            top[b"announce-list"] = [list(t) for t in self.announce_list]
        if self.comment:
            top[b"comment"] = self.comment
        if self.created_by:
            top[b"created by"] = self.created_by
        if self.creation_date is not None:
            top[b"creation date"] = self.creation_date
        return bencode(top)


# -- building ----------------------------------------------------------------


def choose_piece_length(total: int) -> int:
    """A power of two in [256 KiB, 4 MiB] giving about 1,024 pieces."""
    length = MIN_AUTO_PIECE
    while length < MAX_AUTO_PIECE and length * TARGET_PIECES < total:
        length *= 2
    return length


def _check_given_piece_length(n: int) -> None:
    if type(n) is not int or n < BLOCK_SIZE or n > MAX_PIECE or n % BLOCK_SIZE:
        raise MetainfoError(
            f"piece length {n!r} must be a multiple of 16 KiB between 16 KiB and 64 MiB"
        )


def _collect(root: Path) -> tuple[str, list[tuple[tuple[str, ...], Path, int]], bool]:
    if root.is_symlink() or not root.exists():
        raise MetainfoError(f"{root}: no such file or directory (symlinks are not followed)")
    name = root.resolve().name
    if root.is_file():
        return name, [((name,), root, root.stat().st_size)], True
    if not root.is_dir():
        raise MetainfoError(f"{root} is neither a regular file nor a directory")
    found: list[tuple[tuple[str, ...], Path, int]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
        for fname in filenames:
            p = Path(dirpath) / fname
            if p.is_symlink() or not p.is_file():
                continue
            rel = p.relative_to(root).parts
            found.append((rel, p, p.stat().st_size))
    if not found:
        raise MetainfoError(f"{root} holds no regular files")
    found.sort(key=lambda item: [c.encode("utf-8", "surrogateescape") for c in item[0]])
    return name, found, False


def _hash_pieces(paths: Sequence[Path], piece_length: int) -> bytes:
    digests: list[bytes] = []
    buf = bytearray()
    for path in paths:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(piece_length - len(buf))
                if not chunk:
                    break
                buf += chunk
                if len(buf) == piece_length:
                    digests.append(hashlib.sha1(buf).digest())
                    buf.clear()
    if buf:
        digests.append(hashlib.sha1(buf).digest())
    return b"".join(digests)


def make_metainfo(
    path: str | os.PathLike[str],
    announce: str | None,
    *,
    piece_length: int | None = None,
    private: bool = True,
    doi: str | None = None,
    announce_list: Sequence[Sequence[str]] = (),
    comment: str | None = None,
    created_by: str | None = "imsp2pd",
    creation_date: int | None = None,
    name: str | None = None,
) -> Metainfo:
    """Build the metainfo of a file or a directory (files in byte order of
    their paths; symlinks skipped). *creation_date* defaults to now."""
    root = Path(path)
    default_name, entries, single = _collect(root)
    name = name or default_name
    _check_component(name, "name")
    total = sum(size for _, _, size in entries)
    if total == 0:
        raise MetainfoError(f"{root} is empty: a torrent needs at least one byte")
    if piece_length is None:
        piece_length = choose_piece_length(total)
    else:
        _check_given_piece_length(piece_length)
    pieces = _hash_pieces([p for _, p, _ in entries], piece_length)
    info: dict[bytes, Any] = {b"name": name, b"piece length": piece_length, b"pieces": pieces}
    if single:
        info[b"length"] = total
    else:
        for rel, _, _ in entries:
            for comp in rel:
                _check_component(comp, "file name")
        info[b"files"] = [{b"length": size, b"path": list(rel)} for rel, _, size in entries]
    if private:
        info[b"private"] = 1
    if doi is not None:
        if not doi or not doi.isprintable():
            raise MetainfoError("the DOI must be a non-empty printable string")
        info[b"doi"] = doi
    top: dict[bytes, Any] = {b"info": info}
    if announce:
        top[b"announce"] = announce
    if announce_list:
        top[b"announce-list"] = [list(t) for t in announce_list]
    if comment:
        top[b"comment"] = comment
    if created_by:
        top[b"created by"] = created_by
    top[b"creation date"] = int(time.time()) if creation_date is None else creation_date
    return parse_metainfo(bencode(top))


# -- parsing -----------------------------------------------------------------


def _text(value: Any, what: str) -> str:
    if not isinstance(value, bytes):
        raise MetainfoError(f"{what} must be a string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise MetainfoError(f"{what} is not UTF-8") from None


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if not isinstance(value, int):
        raise MetainfoError(f"{what} must be an integer")
    if not lo <= value <= hi:
        raise MetainfoError(f"{what} {value} is out of range [{lo}, {hi}]")
    return value


def _check_component(comp: str, what: str) -> None:
    if (
        not comp
        or comp in (".", "..")
        or any(c in comp for c in "/\\\x00")
        or len(comp.encode("utf-8", "surrogatepass")) > MAX_COMPONENT
        or not comp.isprintable()
    ):
        raise MetainfoError(f"unsafe {what} {comp!r}")
    # Windows drive letters ("C:") would escape a directory on that platform.
    if len(comp) >= 2 and comp[1] == ":" and comp[0].isalpha():
        raise MetainfoError(f"unsafe {what} {comp!r}")


def _component(value: Any, what: str) -> str:
    comp = _text(value, what)
    _check_component(comp, what)
    return comp


def _url(value: Any, what: str) -> str:
    url = _text(value, what)
    if len(url) > 2048 or not url.startswith(("http://", "https://", "udp://")):
        raise MetainfoError(f"{what} must be an http, https or udp URL")
    return url


def _iter_files(info: dict[bytes, Any]) -> Iterator[tuple[tuple[str, ...], int, bool]]:
    files = info.get(b"files")
    if not isinstance(files, list) or not files:
        raise MetainfoError("info.files must be a non-empty list")
    if len(files) > MAX_FILES:
        raise MetainfoError(f"more than {MAX_FILES} files")
    for i, entry in enumerate(files):
        if not isinstance(entry, dict):
            raise MetainfoError(f"info.files[{i}] must be a dictionary")
        length = _int(entry.get(b"length"), f"info.files[{i}].length", 0, MAX_TOTAL_LENGTH)
        raw_path = entry.get(b"path")
        if not isinstance(raw_path, list) or not raw_path or len(raw_path) > MAX_PATH_DEPTH:
            raise MetainfoError(f"info.files[{i}].path must be a list of 1-{MAX_PATH_DEPTH} names")
        path = tuple(_component(c, f"info.files[{i}].path name") for c in raw_path)
        attr = entry.get(b"attr", b"")
        pad = isinstance(attr, bytes) and b"p" in attr
        yield path, length, pad


def parse_metainfo(data: bytes) -> Metainfo:
    """Parse and check a .torrent file's bytes."""
    if not isinstance(data, (bytes, bytearray)):
        raise MetainfoError("a .torrent must be bytes")
    if len(data) > MAX_TORRENT_BYTES:
        raise MetainfoError(f"a .torrent larger than {MAX_TORRENT_BYTES} bytes is refused")
    try:
        top = bdecode(bytes(data), max_depth=MAX_NESTING)
    except BencodeError as exc:
        raise MetainfoError(f"not a .torrent: {exc}") from None
    if not isinstance(top, dict):
        raise MetainfoError("a .torrent must be a dictionary")
    info = top.get(b"info")
    if not isinstance(info, dict):
        raise MetainfoError("info must be a dictionary")
    name = _component(info.get(b"name"), "info.name")
    piece_length = _int(info.get(b"piece length"), "info.piece length", BLOCK_SIZE, MAX_PIECE)
    if piece_length % BLOCK_SIZE:
        raise MetainfoError("info.piece length must be a multiple of 16 KiB")
    pieces = info.get(b"pieces")
    if not isinstance(pieces, bytes) or not pieces or len(pieces) % 20:
        raise MetainfoError("info.pieces must be a non-empty string of 20-byte hashes")
    if b"length" in info and b"files" in info:
        raise MetainfoError("info has both length and files")
    files: list[FileEntry] = []
    if b"length" in info:
        length = _int(info[b"length"], "info.length", 1, MAX_TOTAL_LENGTH)
        files.append(FileEntry((name,), length, 0))
        single = True
    else:
        offset = 0
        seen: set[tuple[str, ...]] = set()
        dirs: set[tuple[str, ...]] = set()
        for path, length, pad in _iter_files(info):
            if path in seen or path in dirs:
                raise MetainfoError(f"file {'/'.join(path)!r} appears twice")
            for i in range(1, len(path)):
                prefix = path[:i]
                if prefix in seen:
                    raise MetainfoError(f"{'/'.join(prefix)!r} is both a file and a directory")
                dirs.add(prefix)
            seen.add(path)
            files.append(FileEntry(path, length, offset, pad))
            offset += length
            if offset > MAX_TOTAL_LENGTH:
                raise MetainfoError("total length is absurd")
        if offset == 0:
            raise MetainfoError("the torrent holds no data")
        single = False
    total = files[-1].offset + files[-1].length
    expected = -(-total // piece_length)
    if len(pieces) // 20 != expected:
        raise MetainfoError(
            f"info.pieces holds {len(pieces) // 20} hashes but {total} bytes need {expected}"
        )
    private_raw = info.get(b"private", 0)
    if private_raw not in (0, 1) or isinstance(private_raw, bytes):
        raise MetainfoError("info.private must be 0 or 1")
    doi = None
    if b"doi" in info:
        doi = _text(info[b"doi"], "info.doi")
        if not doi or not doi.isprintable() or len(doi) > 512:
            raise MetainfoError("info.doi must be a non-empty printable string")
    announce = _url(top[b"announce"], "announce") if b"announce" in top else None
    tiers: list[tuple[str, ...]] = []
    if b"announce-list" in top:
        raw_tiers = top[b"announce-list"]
        if not isinstance(raw_tiers, list) or len(raw_tiers) > 64:
            raise MetainfoError("announce-list must be a list of at most 64 tiers")
        for tier in raw_tiers:
            if not isinstance(tier, list) or len(tier) > 64:
                raise MetainfoError("each announce-list tier must be a list of at most 64 URLs")
            if tier:
                tiers.append(tuple(_url(u, "announce-list URL") for u in tier))
    comment = _text(top[b"comment"], "comment") if b"comment" in top else None
    created_by = _text(top[b"created by"], "created by") if b"created by" in top else None
    creation_date = None
    if b"creation date" in top:
        creation_date = _int(top[b"creation date"], "creation date", 0, 2**40)
    info_bytes = bencode(info)  # the same bytes as the input: the decoder is strict
    return Metainfo(
        name=name,
        piece_length=piece_length,
        pieces=pieces,
        files=tuple(files),
        single_file=single,
        private=bool(private_raw),
        info_hash=hashlib.sha1(info_bytes).digest(),
        announce=announce,
        announce_list=tuple(tiers),
        doi=doi,
        comment=comment,
        created_by=created_by,
        creation_date=creation_date,
        info_bytes=info_bytes,
    )
