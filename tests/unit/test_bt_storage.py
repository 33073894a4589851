"""Storage: pre-allocation, block I/O across files, pad files, resume check."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from imsp2pd.bittorrent.bencoding import bencode
from imsp2pd.bittorrent.metainfo import make_metainfo, parse_metainfo
from imsp2pd.bittorrent.storage import Storage, StorageError

KiB = 1024


def test_single_file_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    data = os.urandom(100 * KiB + 7)
    src.write_bytes(data)
    meta = make_metainfo(src, None, piece_length=32 * KiB)
    out = tmp_path / "out" / "copy.bin"
    st = Storage(meta, out)
    assert out.stat().st_size == len(data)
    assert list(st.check()) == [0, 0, 0, 0]
    for i in range(meta.num_pieces):
        size = meta.piece_size(i)
        for begin in range(0, size, 16 * KiB):
            n = min(16 * KiB, size - begin)
            st.write(i, begin, data[i * 32 * KiB + begin : i * 32 * KiB + begin + n])
    assert all(st.check())
    st.sync()
    st.close()
    assert out.read_bytes() == data
    seed = Storage(meta, src, create=False)
    assert seed.read(3, 0, 4 * KiB + 7) == data[96 * KiB :]
    with pytest.raises(StorageError):
        seed.read(3, 0, 4 * KiB + 8)
    seed.close()


def test_multi_file_spans_and_resume(tmp_path: Path) -> None:
    root = tmp_path / "pack"
    (root / "d").mkdir(parents=True)
    a, b, c = os.urandom(10 * KiB), b"", os.urandom(30 * KiB)
    (root / "a").write_bytes(a)
    (root / "b").write_bytes(b)
    (root / "d" / "c").write_bytes(c)
    meta = make_metainfo(root, None, piece_length=16 * KiB)
    joined = a + b + c
    dest = tmp_path / "dest"
    st = Storage(meta, dest)
    st.write(0, 0, joined[: 16 * KiB])  # spans a and c
    assert st.read(0, 5 * KiB, 10 * KiB) == joined[5 * KiB : 15 * KiB]
    assert list(st.check()) == [1, 0, 0]
    st.close()
    assert (dest / "pack" / "b").exists() and (dest / "pack" / "b").stat().st_size == 0
    again = Storage(meta, dest)  # a restart: what was written still verifies
    assert list(again.check()) == [1, 0, 0]
    again.close()
    with pytest.raises(StorageError, match="not"):
        Storage(meta, tmp_path / "nothing", create=False)


def test_pad_files_read_as_zeros(tmp_path: Path) -> None:
    a = os.urandom(10 * KiB)
    b = os.urandom(16 * KiB)
    joined = a + bytes(6 * KiB) + b
    info = {
        b"name": b"x",
        b"piece length": 16 * KiB,
        b"pieces": hashlib.sha1(joined[: 16 * KiB]).digest()
        + hashlib.sha1(joined[16 * KiB :]).digest(),
        b"files": [
            {b"length": len(a), b"path": [b"a"]},
            {b"attr": b"p", b"length": 6 * KiB, b"path": [b".pad", b"6144"]},
            {b"length": len(b), b"path": [b"b"]},
        ],
    }
    meta = parse_metainfo(bencode({b"info": info}))
    st = Storage(meta, tmp_path)
    st.write(0, 0, joined[: 16 * KiB])
    st.write(1, 0, joined[16 * KiB :])
    assert list(st.check()) == [1, 1]
    assert not (tmp_path / "x" / ".pad").exists()
    st.close()


def test_fresh_files_need_no_check(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(40 * KiB))
    meta = make_metainfo(src, None, piece_length=16 * KiB)
    st = Storage(meta, tmp_path / "new.bin")
    assert st.fresh and list(st.check()) == [0, 0, 0]
    st.write(0, 0, src.read_bytes()[: 16 * KiB])
    st.close()
    again = Storage(meta, tmp_path / "new.bin")
    assert not again.fresh and list(again.check()) == [1, 0, 0]
    again.close()
    assert not Storage(meta, src, create=False).fresh
