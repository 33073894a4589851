"""Pieces on disk: pre-allocated files, block reads and writes, SHA-1 checks.

A single-file torrent is stored at one path (``imsp2p torrent fetch -o
FILE``); a multi-file torrent under a directory, as ``DIR/name/path…``
(paths were checked safe by the metainfo parser; BEP 47 pad files are never
written, they read as zeros). Files are opened once and pre-allocated to
their length; reads and writes use ``pread``/``pwrite`` on block ranges, so
seeding never loads a whole file into memory. :meth:`Storage.check` hashes
what is already on disk (resume after a restart) and returns the pieces
that verify.

The calls are synchronous file I/O: cheap for 16 KiB blocks on a local
disk; the Twisted peer calls them from the reactor thread.
"""

from __future__ import annotations

import hashlib
import os
from bisect import bisect_right
from pathlib import Path

from imsp2pd.bittorrent.metainfo import FileEntry, Metainfo

__all__ = ["Storage", "StorageError"]


class StorageError(Exception):
    """The content cannot be read or written (one line naming the file)."""


class Storage:
    def __init__(
        self, meta: Metainfo, target: str | os.PathLike[str], *, create: bool = True
    ) -> None:
        """*target* is the file of a single-file torrent, or the directory a
        multi-file torrent's folder goes in. With ``create=False`` (seeding)
        the files must exist with their full length."""
        self.meta = meta
        target = Path(target)
        self.files: list[FileEntry] = list(meta.files)
        self._offsets = [f.offset for f in self.files]
        self.paths: list[Path | None] = []
        for f in self.files:
            if f.pad:
                self.paths.append(None)
            elif meta.single_file:
                self.paths.append(target)
            else:
                self.paths.append(target.joinpath(meta.name, *f.path))
        self._fds: list[int | None] = []
        self.fresh = create  # every file made here and empty: nothing to check
        try:
            for f, path in zip(self.files, self.paths, strict=True):
                if path is not None and create and path.exists() and path.stat().st_size > 0:
                    self.fresh = False
                self._fds.append(None if path is None else self._open(path, f.length, create))
        except StorageError:
            self.close()
            raise

    @staticmethod
    def _open(path: Path, length: int, create: bool) -> int:
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                if os.fstat(fd).st_size != length:
                    os.ftruncate(fd, length)
            else:
                fd = os.open(path, os.O_RDONLY)
                if os.fstat(fd).st_size != length:
                    os.close(fd)
                    raise StorageError(f"{path} is not {length} bytes long")
        except OSError as exc:
            raise StorageError(f"{path}: {exc.strerror}") from None
        return fd

    def close(self) -> None:
        for fd in self._fds:
            if fd is not None:
                os.close(fd)
        self._fds = [None] * len(self._fds)

    def _spans(self, offset: int, length: int) -> list[tuple[int, int, int]]:
        """(file index, offset in file, length) covering [offset, offset+length)."""
        if offset < 0 or length < 0 or offset + length > self.meta.total_length:
            raise StorageError("range outside the torrent")
        spans = []
        i = bisect_right(self._offsets, offset) - 1
        while length > 0:
            f = self.files[i]
            start = offset - f.offset
            n = min(length, f.length - start)
            if n > 0:
                spans.append((i, start, n))
                offset += n
                length -= n
            i += 1
        return spans

    def read(self, index: int, begin: int, length: int) -> bytes:
        """Bytes of piece *index* from *begin*."""
        offset = index * self.meta.piece_length + begin
        out = bytearray()
        for i, start, n in self._spans(offset, length):
            fd = self._fds[i]
            if fd is None:
                out += bytes(n)
                continue
            try:
                data = os.pread(fd, n, start)
            except OSError as exc:
                raise StorageError(f"{self.paths[i]}: {exc.strerror}") from None
            if len(data) != n:
                raise StorageError(f"{self.paths[i]} is shorter than the torrent says")
            out += data
        return bytes(out)

    def write(self, index: int, begin: int, data: bytes) -> None:
        self.fresh = False
        offset = index * self.meta.piece_length + begin
        pos = 0
        for i, start, n in self._spans(offset, len(data)):
            fd = self._fds[i]
            if fd is not None:
                try:
                    os.pwrite(fd, data[pos : pos + n], start)
                except OSError as exc:
                    raise StorageError(f"{self.paths[i]}: {exc.strerror}") from None
            pos += n

    def verify(self, index: int) -> bool:
        data = self.read(index, 0, self.meta.piece_size(index))
        return hashlib.sha1(data).digest() == self.meta.piece_hash(index)

    def check(self) -> bytearray:
        """Which pieces on disk verify (1) — for resuming."""
        if self.fresh:
            return bytearray(self.meta.num_pieces)
        return bytearray(1 if self.verify(i) else 0 for i in range(self.meta.num_pieces))

    def sync(self) -> None:
        for fd in self._fds:
            if fd is not None:
                try:
                    os.fsync(fd)
                except OSError:
                    pass
