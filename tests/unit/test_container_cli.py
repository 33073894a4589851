"""`imsp2p drm protect/inspect/unprotect` through the command line entry point."""

from __future__ import annotations

import os

import pytest

from imsp2pd.client.cli import main
from imsp2pd.drm import container as c


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_bytes(os.urandom(100_000))
    return tmp_path


def test_protect_inspect_unprotect(work, capsys) -> None:
    assert (
        main(
            [
                "drm",
                "protect",
                "f",
                "--doi",
                "10.5555/x",
                "--key-id",
                "k1",
                "--piece-length",
                "16K",
                "-o",
                "f.c",
            ]
        )
        == 0
    )
    assert "new content key written to f.c.key" in capsys.readouterr().out
    assert c.read_header_from_path(work / "f.c").piece_length == 16384
    assert main(["drm", "inspect", "f.c"]) == 0
    assert "doi:              10.5555/x" in capsys.readouterr().out
    assert main(["drm", "unprotect", "f.c", "--key-file", "f.c.key", "-o", "back"]) == 0
    assert (work / "back").read_bytes() == (work / "f").read_bytes()


def test_protect_with_key_file_and_default_piece_length(work) -> None:
    (work / "k").write_text("00" * 16)
    assert (
        main(["drm", "protect", "f", "--doi", "d", "--key-id", "k", "--key-file", "k", "-o", "f.c"])
        == 0
    )
    assert not (work / "f.c.key").exists()
    assert c.read_header_from_path(work / "f.c").piece_length == 256 * 1024


def test_unprotect_failure_is_one_line_and_leaves_nothing(work, capsys) -> None:
    main(
        [
            "drm",
            "protect",
            "f",
            "--doi",
            "d",
            "--key-id",
            "k",
            "--piece-length",
            "16384",
            "-o",
            "f.c",
        ]
    )
    data = bytearray((work / "f.c").read_bytes())
    data[16384 * 3 + 1] ^= 4
    (work / "f.c").write_bytes(data)
    capsys.readouterr()
    assert main(["drm", "unprotect", "f.c", "--key-file", "f.c.key", "-o", "back"]) == 1
    err = capsys.readouterr().err
    assert err == "imsp2p: segment 2 (piece 3) failed authentication: corrupted\n"
    assert not (work / "back").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["drm", "inspect", "f"], "not a protected file"),
        (["drm", "inspect", "missing"], "cannot open missing"),
        (
            [
                "drm",
                "protect",
                "f",
                "--doi",
                "d",
                "--key-id",
                "k",
                "--piece-length",
                "1000",
                "-o",
                "o",
            ],
            "piece length 1000",
        ),
        (["drm", "unprotect", "f", "--key-file", "f", "-o", "o"], "32 hex digits"),
    ],
)
def test_user_errors(work, capsys, argv, message) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("imsp2p: ") and message in err and err.count("\n") == 1
