"""``imsp2p torrent …``, ``imsp2p admin swarm …``, ``imsp2p admin token issue``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from imsp2pd import entitlement
from imsp2pd.bittorrent.metainfo import parse_metainfo
from imsp2pd.client.cli import Context, main

IH = "ab" * 20


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "c.toml"
    path.write_text(
        '[admin]\ntoken = "t"\nurl = "http://127.0.0.1:1"\n[daemon]\nstate_dir = "../var"\n'
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_make_and_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "movie.bin"
    f.write_bytes(b"x" * 100_000)
    out = tmp_path / "m.torrent"
    code, text, _ = run(
        capsys,
        "torrent",
        "make",
        str(f),
        "--announce",
        "http://127.0.0.1:6969/announce?token=SECRET",
        "--piece-length",
        "32K",
        "--doi",
        "10.5555/m",
        "-o",
        str(out),
    )
    assert code == 0 and "info-hash" in text
    meta = parse_metainfo(out.read_bytes())
    assert meta.private and meta.piece_length == 32 * 1024 and meta.doi == "10.5555/m"
    code, text, _ = run(capsys, "torrent", "info", str(out))
    info = json.loads(text)
    assert info["info_hash"] == meta.info_hash_hex and info["pieces"] == 4
    assert info["trackers"] == ["http://127.0.0.1:6969/announce?…"]  # the token is never shown
    assert "SECRET" not in text


def test_make_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys,
        "torrent",
        "make",
        str(tmp_path / "none"),
        "--announce",
        "http://x/announce",
        "-o",
        str(tmp_path / "o"),
    )
    assert code == 1 and err.startswith("imsp2p: ") and err.count("\n") == 1
    (tmp_path / "bad.torrent").write_bytes(b"garbage")
    code, _, err = run(capsys, "torrent", "info", str(tmp_path / "bad.torrent"))
    assert code == 1 and "not a .torrent" in err
    with pytest.raises(SystemExit):
        main(["torrent", "make", "x", "--announce", "u", "-o", "o", "--piece-length", "lots"])


def test_token_issue(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text, _ = run(
        capsys,
        "--config",
        str(config),
        "admin",
        "token",
        "issue",
        "--user",
        "sip:alice@ims.example.org",
        "--infohash",
        IH.upper(),
    )
    assert code == 0
    key = entitlement.load_or_create_private_key(config.parent.parent / "var" / "keys")
    claims = entitlement.Verifier(key.public_key()).verify_tracker(
        text.strip(), 0, bytes.fromhex(IH)
    )
    assert claims.role == "consumer" and claims.impu == "sip:alice@ims.example.org"
    code, text, _ = run(
        capsys,
        "--config",
        str(config),
        "admin",
        "token",
        "issue",
        "--user",
        "sip:carol@ims.example.org",
        "--infohash",
        IH,
        "--role",
        "provider",
        "--announce",
        "http://127.0.0.1:6969/announce",
    )
    assert text.startswith("http://127.0.0.1:6969/announce?token=")
    code, _, err = run(
        capsys,
        "--config",
        str(config),
        "admin",
        "token",
        "issue",
        "--user",
        "alice",
        "--infohash",
        IH,
    )
    assert code == 1 and "impu" in err


def test_swarm_commands(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str, Any]] = []

    def fake_admin(self: Context, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        calls.append((method, path, body))
        return {"ok": True}

    monkeypatch.setattr(Context, "admin", fake_admin)
    base = ["--config", str(config), "admin", "swarm"]
    assert run(capsys, *base, "register", "--infohash", IH, "--doi", "10.5555/x")[0] == 0
    for action in ("mute", "unmute", "disable"):
        assert run(capsys, *base, action, "--infohash", IH)[0] == 0
    assert run(capsys, *base, "stats")[0] == 0
    assert run(capsys, *base, "stats", "--infohash", IH)[0] == 0
    assert calls == [
        ("POST", "/admin/swarms", {"info_hash": IH, "doi": "10.5555/x", "state": "muted"}),
        ("POST", f"/admin/swarms/{IH}/mute", None),
        ("POST", f"/admin/swarms/{IH}/unmute", None),
        ("POST", f"/admin/swarms/{IH}/disable", None),
        ("GET", "/admin/swarms", None),
        ("GET", f"/admin/swarms/{IH}", None),
    ]
    with pytest.raises(SystemExit):
        main([*base, "mute", "--infohash", "xyz"])


def test_unreachable_control_port_is_one_line(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--config", str(config), "admin", "swarm", "stats")
    assert code == 1 and "cannot reach the control port" in err
