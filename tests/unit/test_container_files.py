"""File-level protect / inspect / unprotect (imsp2pd.drm.files)."""

from __future__ import annotations

import io
import os
import stat

import pytest

from imsp2pd.drm import container as c
from imsp2pd.drm import files

P = c.MIN_PIECE_LENGTH
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


@pytest.fixture
def movie(tmp_path):
    path = tmp_path / "movie.bin"
    path.write_bytes(os.urandom(3 * P + 123))
    return path


def test_protect_with_new_key_writes_key_file_0600(tmp_path, movie) -> None:
    out = tmp_path / "movie.imsp2p"
    result = files.protect_file(movie, out, doi="10.5555/m", key_id="k1", piece_length=P)
    assert result.key_file == tmp_path / "movie.imsp2p.key"
    assert stat.S_IMODE(os.stat(result.key_file).st_mode) == 0o600
    key = files.read_key_file(result.key_file)
    assert len(key) == 16
    plain = tmp_path / "back.bin"
    files.unprotect_file(out, plain, key)
    assert plain.read_bytes() == movie.read_bytes()
    assert stat.S_IMODE(os.stat(plain).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_protect_with_given_key_writes_no_key_file(tmp_path, movie) -> None:
    out = tmp_path / "m.c"
    result = files.protect_file(movie, out, doi="10.5555/m", key_id="k1", key=KEY, piece_length=P)
    assert result.key_file is None
    assert not (tmp_path / "m.c.key").exists()
    assert files.inspect_file(out) == result.header


def test_protect_refuses_to_overwrite_a_key_file(tmp_path, movie) -> None:
    out = tmp_path / "m.c"
    (tmp_path / "m.c.key").write_text("old\n")
    with pytest.raises(files.DrmFileError, match="already exists"):
        files.protect_file(movie, out, doi="10.5555/m", key_id="k1")
    assert not out.exists()
    assert (tmp_path / "m.c.key").read_text() == "old\n"


def test_protect_missing_input(tmp_path) -> None:
    with pytest.raises(files.DrmFileError, match="cannot open"):
        files.protect_file(tmp_path / "nope", tmp_path / "o", doi="d", key_id="k", key=KEY)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ["", "abc", "00" * 15, "zz" * 16, "00" * 17])
def test_bad_key_files(tmp_path, text: str) -> None:
    path = tmp_path / "k"
    path.write_text(text)
    with pytest.raises(files.DrmFileError, match="32 hex digits"):
        files.read_key_file(path)


def test_key_file_with_whitespace(tmp_path) -> None:
    path = tmp_path / "k"
    path.write_text("  " + KEY.hex().upper() + "\n")
    assert files.read_key_file(path) == KEY


def test_missing_key_file(tmp_path) -> None:
    with pytest.raises(files.DrmFileError, match="cannot read key file"):
        files.read_key_file(tmp_path / "missing")


def _protected(tmp_path, movie):
    out = tmp_path / "m.c"
    files.protect_file(movie, out, doi="10.5555/m", key_id="k1", key=KEY, piece_length=P)
    return out


def test_unprotect_bad_segment_leaves_nothing_behind(tmp_path, movie) -> None:
    out = _protected(tmp_path, movie)
    data = bytearray(out.read_bytes())
    data[3 * P + 10] ^= 1  # segment 2 of 4
    out.write_bytes(data)
    target = tmp_path / "plain"
    with pytest.raises(c.SegmentCorruptError) as e:
        files.unprotect_file(out, target, KEY)
    assert e.value.segment == 2
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_unprotect_does_not_clobber_existing_output_on_failure(tmp_path, movie) -> None:
    out = _protected(tmp_path, movie)
    target = tmp_path / "plain"
    target.write_bytes(b"previous")
    with pytest.raises(c.KeyMismatchError):
        files.unprotect_file(out, target, bytes(16))
    assert target.read_bytes() == b"previous"


def test_unprotect_to_stream_writes_nothing_from_a_bad_file(tmp_path, movie) -> None:
    out = _protected(tmp_path, movie)
    data = out.read_bytes()
    out.write_bytes(data[:-5])  # truncated last segment
    sink = io.BytesIO()
    with pytest.raises(c.TruncatedError):
        files.unprotect_to_stream(out, sink, KEY)
    assert sink.getvalue() == b""
    out.write_bytes(data)
    files.unprotect_to_stream(out, sink, KEY)
    assert sink.getvalue() == movie.read_bytes()


def test_inspect_names_truncation_without_key(tmp_path, movie) -> None:
    out = _protected(tmp_path, movie)
    out.write_bytes(out.read_bytes()[: 2 * P])
    with pytest.raises(c.TruncatedError, match="segment 1"):
        files.inspect_file(out)


def test_format_header_text(tmp_path, movie) -> None:
    out = _protected(tmp_path, movie)
    text = files.format_header(files.inspect_file(out))
    lines = dict(line.split(":", 1) for line in text.splitlines())
    assert lines["doi"].strip() == "10.5555/m"
    assert lines["piece-length"].strip() == str(P)
    assert lines["plaintext-length"].strip() == str(3 * P + 123)
