"""`imsp2p admin drm …`: the calls the commands make on the control port."""

from __future__ import annotations

import json

import pytest

from imsp2pd.client import cli


@pytest.fixture
def calls(monkeypatch):
    made: list[tuple] = []

    def admin(self, method, path, body=None, **kw):
        made.append((method, path, body))
        return {"ok": True}

    monkeypatch.setattr(cli.Context, "admin", admin)
    return made


def test_revoke_and_list(calls, capsys) -> None:
    assert cli.main(["admin", "drm", "revoke", "device", "ab" * 32, "--reason", "lost"]) == 0
    assert cli.main(["admin", "drm", "revocations", "--since", "12.5"]) == 0
    assert cli.main(["admin", "drm", "content", "10.5555/imsp2p.x"]) == 0
    assert calls == [
        (
            "POST",
            "/admin/drm/revocations",
            {"kind": "device", "value": "ab" * 32, "reason": "lost"},
        ),
        ("GET", "/admin/drm/revocations?since=12.5", None),
        ("GET", "/admin/drm/content/10.5555/imsp2p.x", None),
    ]
    assert json.loads(capsys.readouterr().out.split("}\n")[0] + "}") == {"ok": True}


def test_bad_kind_is_a_usage_error(calls) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["admin", "drm", "revoke", "user", "x"])
    assert e.value.code == 2
    assert calls == []
