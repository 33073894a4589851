"""Metainfo: build, parse, strict refusals, and agreement with libtorrent."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd.bittorrent.bencoding import bdecode, bencode
from imsp2pd.bittorrent.metainfo import (
    FileEntry,
    MetainfoError,
    choose_piece_length,
    make_metainfo,
    parse_metainfo,
)

try:
    import libtorrent as lt
except ImportError:  # pragma: no cover
    lt = None  # type: ignore[assignment]

KiB = 1024
MiB = 1024 * KiB
ANNOUNCE = "http://127.0.0.1:6969/announce?token=abc"


def _data(n: int, seed: int = 0) -> bytes:
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (1, 256 * KiB),
        (256 * MiB, 256 * KiB),
        (256 * MiB + 1, 512 * KiB),
        (1024 * MiB, 1 * MiB),
        (100 * 1024 * MiB, 4 * MiB),
    ],
)
def test_choose_piece_length(size: int, expected: int) -> None:
    assert choose_piece_length(size) == expected


def test_single_file(tmp_path: Path) -> None:
    content = _data(700 * KiB + 3)
    f = tmp_path / "movie.bin"
    f.write_bytes(content)
    m = make_metainfo(f, ANNOUNCE, doi="10.5555/imsp2p.42", creation_date=1_700_000_000)
    assert m.name == "movie.bin" and m.single_file and m.private
    assert m.piece_length == 256 * KiB and m.num_pieces == 3
    assert m.total_length == len(content)
    assert m.files == (FileEntry(("movie.bin",), len(content), 0),)
    for i in range(3):
        piece = content[i * m.piece_length : (i + 1) * m.piece_length]
        assert m.piece_hash(i) == hashlib.sha1(piece).digest()
        assert m.piece_size(i) == len(piece)
    assert m.doi == "10.5555/imsp2p.42"
    assert m.announce == ANNOUNCE and m.trackers() == [ANNOUNCE]
    raw = m.to_bytes()
    top = bdecode(raw)
    assert top[b"info"][b"private"] == 1 and top[b"info"][b"doi"] == b"10.5555/imsp2p.42"
    assert m.info_hash == hashlib.sha1(bencode(top[b"info"])).digest()
    assert parse_metainfo(raw) == m
    with pytest.raises(IndexError):
        m.piece_hash(3)


def test_directory_and_options(tmp_path: Path) -> None:
    root = tmp_path / "album"
    (root / "b").mkdir(parents=True)
    (root / "a.txt").write_bytes(_data(10, 1))
    (root / "b" / "c.bin").write_bytes(_data(40 * KiB, 2))
    (root / "empty").write_bytes(b"")
    os.symlink(root / "a.txt", root / "link")
    m = make_metainfo(
        root,
        None,
        piece_length=16 * KiB,
        private=False,
        announce_list=[["http://a/announce"], ["udp://b:1"]],
    )
    assert not m.single_file and not m.private and m.doi is None
    assert [f.path for f in m.files] == [("a.txt",), ("b", "c.bin"), ("empty",)]
    assert [f.offset for f in m.files] == [0, 10, 10 + 40 * KiB]
    assert m.num_pieces == 3 and m.piece_size(2) == 40 * KiB + 10 - 32 * KiB
    joined = _data(10, 1) + _data(40 * KiB, 2)
    assert m.piece_hash(2) == hashlib.sha1(joined[32 * KiB :]).digest()
    assert m.trackers() == ["http://a/announce", "udp://b:1"]
    assert b"private" not in bdecode(m.to_bytes())[b"info"]


@pytest.mark.parametrize("piece_length", [1000, 8 * KiB, 128 * MiB, 24 * KiB + 1])
def test_bad_given_piece_length(tmp_path: Path, piece_length: int) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(MetainfoError, match="piece length"):
        make_metainfo(tmp_path / "f", None, piece_length=piece_length)


def test_build_errors(tmp_path: Path) -> None:
    with pytest.raises(MetainfoError, match="no such"):
        make_metainfo(tmp_path / "nope", None)
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(MetainfoError, match="empty"):
        make_metainfo(tmp_path / "empty", None)
    (tmp_path / "d").mkdir()
    with pytest.raises(MetainfoError, match="no regular files"):
        make_metainfo(tmp_path / "d", None)


def _torrent(**info_over: Any) -> dict[bytes, Any]:
    info: dict[bytes, Any] = {
        b"name": b"x",
        b"piece length": 16 * KiB,
        b"pieces": b"\x00" * 40,
        b"length": 20 * KiB,
    }
    for k, v in info_over.items():
        key = k.replace("_", " ").encode()
        if v is None:
            info.pop(key, None)
        else:
            info[key] = v
    return {b"announce": b"http://t/announce", b"info": info}


def test_minimal_parses() -> None:
    m = parse_metainfo(bencode(_torrent()))
    assert m.total_length == 20 * KiB and not m.private


def _files(*paths: list[bytes], length: int = 10 * KiB) -> list[dict[bytes, Any]]:
    return [{b"length": length, b"path": p} for p in paths]


@pytest.mark.parametrize(
    ("top", "why"),
    [
        (_torrent(name=b"../x"), "unsafe"),
        (_torrent(name=b".."), "unsafe"),
        (_torrent(name=b""), "unsafe"),
        (_torrent(name=b"a/b"), "unsafe"),
        (_torrent(name=b"C:"), "unsafe"),
        (_torrent(name=b"\xff"), "UTF-8"),
        (_torrent(name=5), "string"),
        (_torrent(piece_length=b"16384"), "integer"),
        (_torrent(piece_length=0), "range"),
        (_torrent(piece_length=2**40), "range"),
        (_torrent(piece_length=20000), "16 KiB"),
        (_torrent(pieces=b"\x00" * 41), "20-byte"),
        (_torrent(pieces=b"\x00" * 60), "need 2"),
        (_torrent(length=-1), "range"),
        (_torrent(length=2**60), "range"),
        (_torrent(length=None), "files"),
        (_torrent(files=_files([b"a"], [b"b"])), "both"),
        (_torrent(length=None, files=[]), "files"),
        (_torrent(length=None, files=_files([b"..", b"etc"], [b"b"])), "unsafe"),
        (_torrent(length=None, files=_files([b"a", b"..", b"b"], [b"c"])), "unsafe"),
        (_torrent(length=None, files=_files([b"/etc"], [b"b"])), "unsafe"),
        (_torrent(length=None, files=_files([b"a\\..\\b"], [b"c"])), "unsafe"),
        (_torrent(length=None, files=_files([b"a\x00"], [b"b"])), "unsafe"),
        (_torrent(length=None, files=_files([], [b"b"])), "path"),
        (_torrent(length=None, files=_files([b"a"], [b"a"])), "twice"),
        (_torrent(length=None, files=_files([b"a"], [b"a", b"b"])), "both a file and a directory"),
        (_torrent(length=None, files=_files([b"a", b"b"], [b"a"])), "twice"),
        (_torrent(length=None, files=_files([b"a"] * 40, [b"b"])), "path"),
        (_torrent(length=None, files=[{b"length": b"1", b"path": [b"a"]}]), "integer"),
        (_torrent(length=None, files=[5]), "dictionary"),
        (_torrent(private=2), "private"),
        (_torrent(private=b"1"), "private"),
        (_torrent(doi=b""), "doi"),
        (_torrent(doi=7), "doi"),
        ({b"info": b"x"}, "info"),
        ({b"announce": b"file:///etc/passwd", **{b"info": _torrent()[b"info"]}}, "announce"),
        ({b"announce-list": [b"http://x/"], b"info": _torrent()[b"info"]}, "tier"),
        ({b"info": _torrent()[b"info"], b"creation date": -5}, "range"),
    ],
)
def test_strict_refusals(top: dict[bytes, Any], why: str) -> None:
    with pytest.raises(MetainfoError, match=why):
        parse_metainfo(bencode(top))


def test_refuses_non_bencoding_and_deep_nesting() -> None:
    with pytest.raises(MetainfoError, match="not a .torrent"):
        parse_metainfo(b"<html>")
    with pytest.raises(MetainfoError, match="not a .torrent"):
        parse_metainfo(b"d4:infod1:xi01eee")
    with pytest.raises(MetainfoError, match="nesting"):
        parse_metainfo(b"d1:x" + b"l" * 20 + b"e" * 20 + b"e")
    with pytest.raises(MetainfoError, match="dictionary"):
        parse_metainfo(b"le")
    with pytest.raises(MetainfoError, match="larger"):
        parse_metainfo(b"x" * (33 * MiB))


def test_pad_files_are_marked() -> None:
    files = [
        {b"length": 10 * KiB, b"path": [b"a"]},
        {b"attr": b"p", b"length": 6 * KiB, b"path": [b".pad", b"6144"]},
        {b"length": 10 * KiB, b"path": [b"b"]},
    ]
    m = parse_metainfo(bencode(_torrent(length=None, files=files)))
    assert [f.pad for f in m.files] == [False, True, False]
    assert m.files[2].offset == 16 * KiB


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_parse_never_raises_anything_else(data: bytes) -> None:
    try:
        parse_metainfo(data)
    except MetainfoError:
        pass


@settings(max_examples=200)
@given(st.data())
def test_mutated_torrents_never_raise_anything_else(data: st.DataObject) -> None:
    raw = bytearray(bencode(_torrent(length=None, files=_files([b"a"], [b"d", b"b"]))))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        parse_metainfo(bytes(raw))
    except MetainfoError:
        pass


# -- libtorrent agrees -------------------------------------------------------


@pytest.mark.skipif(lt is None, reason="libtorrent Python bindings are not installed")
def test_libtorrent_reads_ours(tmp_path: Path) -> None:
    root = tmp_path / "pack"
    (root / "sub").mkdir(parents=True)
    (root / "one.bin").write_bytes(_data(300 * KiB, 3))
    (root / "sub" / "two.bin").write_bytes(_data(5 * KiB, 4))
    m = make_metainfo(root, ANNOUNCE, doi="10.5555/x")
    ti = lt.torrent_info(m.to_bytes())
    assert bytes.fromhex(str(ti.info_hashes().v1)) == m.info_hash
    assert ti.priv() and ti.num_pieces() == m.num_pieces and ti.total_size() == m.total_length
    # (torrent_info.trackers() is deprecated)
    assert lt.load_torrent_buffer(m.to_bytes()).trackers == [ANNOUNCE]


@pytest.mark.skipif(lt is None, reason="libtorrent Python bindings are not installed")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("multi", [False, True])
def test_we_read_libtorrents(tmp_path: Path, multi: bool) -> None:
    root = tmp_path / "src"
    if multi:
        (root / "d").mkdir(parents=True)
        (root / "d" / "x.bin").write_bytes(_data(100 * KiB, 5))
        (root / "y.bin").write_bytes(_data(33 * KiB, 6))
    else:
        root.parent.mkdir(exist_ok=True)
        root.write_bytes(_data(100 * KiB, 7))
    fs = lt.file_storage()
    lt.add_files(fs, str(root))
    ct = lt.create_torrent(fs, 16 * KiB, flags=lt.create_torrent.v1_only)
    ct.add_tracker("http://127.0.0.1:6969/announce")
    ct.set_priv(True)
    lt.set_piece_hashes(ct, str(tmp_path))
    raw = lt.bencode(ct.generate())
    m = parse_metainfo(raw)
    ti = lt.torrent_info(raw)
    assert m.info_hash == bytes.fromhex(str(ti.info_hashes().v1))
    assert m.private and m.total_length == ti.total_size() and m.num_pieces == ti.num_pieces()
    assert m.single_file == (not multi)
