"""The player's sealed keystore (imsp2pd.drm.keystore)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from imsp2pd.drm import keystore as ks
from imsp2pd.drm.license import PlayerState

N = ks.MIN_SCRYPT_N  # fast scrypt for tests


def test_created_at_first_use_then_reopened(tmp_path) -> None:
    path = tmp_path / "sub" / "keystore.json"
    first = ks.Keystore.open_or_create(path, "pw", scrypt_n=N)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = ks.Keystore.open_or_create(path, "pw", scrypt_n=N)
    assert again.device.fingerprint == first.device.fingerprint
    assert again.device.x25519_public == first.device.x25519_public
    assert again.state == PlayerState()


def test_state_survives_save(tmp_path) -> None:
    path = tmp_path / "k"
    store = ks.Keystore.open_or_create(path, "pw", scrypt_n=N)
    store.with_state(PlayerState(high_water=42, seen={"L": (40, 1)})).save("pw")
    assert ks.Keystore.open(path, "pw").state == PlayerState(42, {"L": (40, 1)})
    assert [p.name for p in tmp_path.iterdir()] == ["k"]  # no temporary files left


def test_wrong_passphrase(tmp_path) -> None:
    path = tmp_path / "k"
    ks.Keystore.open_or_create(path, "right", scrypt_n=N)
    with pytest.raises(ks.KeystoreError, match="wrong passphrase"):
        ks.Keystore.open(path, "wrong")


def test_no_private_key_in_clear(tmp_path) -> None:
    path = tmp_path / "k"
    store = ks.Keystore.open_or_create(path, "pw", scrypt_n=N)
    data = path.read_bytes()
    for raw in store.device.private_raw():
        assert raw not in data
        assert raw.hex().encode() not in data


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["kdf"].update(n=d["kdf"]["n"] * 2),
        lambda d: d["kdf"].update(r=9),
        lambda d: d.update(nonce=d["nonce"][:-2] + ("AA" if d["nonce"][-2:] != "AA" else "BA")),
        lambda d: d.update(
            sealed="A" + d["sealed"][1:] if d["sealed"][0] != "A" else "B" + d["sealed"][1:]
        ),
        lambda d: d.update(extra=1),
    ],
)
def test_changed_file_refused(tmp_path, change) -> None:
    path = tmp_path / "k"
    ks.Keystore.open_or_create(path, "pw", scrypt_n=N)
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(ks.KeystoreError):
        ks.Keystore.open(path, "pw")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{}",
        b"not json",
        b"[1]",
        b'{"format":"imsp2p-keystore","v":1,"kdf":{"name":"scrypt","n":1073741824,"r":8,"p":1,"salt":""},"nonce":"","sealed":""}',
    ],
)
def test_garbage_is_not_a_keystore(tmp_path, content: bytes) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    with pytest.raises(ks.KeystoreError, match="not an imsp2p keystore"):
        ks.Keystore.open(path, "pw")


def test_empty_passphrase_refused(tmp_path) -> None:
    with pytest.raises(ks.KeystoreError, match="empty"):
        ks.Keystore.open_or_create(tmp_path / "k", "", scrypt_n=N)


def test_passphrase_sources(tmp_path) -> None:
    pf = tmp_path / "pass"
    pf.write_text("from-file\n")
    env = {ks.PASSPHRASE_ENV: "from-env"}

    def no_prompt(_: str) -> str:
        raise AssertionError("must not prompt")

    assert ks.get_passphrase(pf, env, lambda: True, no_prompt) == "from-file"
    assert ks.get_passphrase(None, env, lambda: True, no_prompt) == "from-env"
    assert ks.get_passphrase(None, {}, lambda: True, lambda _: "typed") == "typed"
    with pytest.raises(ks.KeystoreError, match="no terminal"):
        ks.get_passphrase(None, {}, lambda: False, no_prompt)
    with pytest.raises(ks.KeystoreError, match="cannot read"):
        ks.get_passphrase(tmp_path / "missing", env, lambda: False, no_prompt)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ks.KeystoreError, match="empty"):
        ks.get_passphrase(tmp_path / "empty", env, lambda: False, no_prompt)


def test_default_scrypt_cost_is_recorded(tmp_path) -> None:
    path = tmp_path / "k"
    ks.Keystore.open_or_create(path, "pw", scrypt_n=N)
    assert json.loads(path.read_text())["kdf"]["n"] == N
    assert ks.DEFAULT_SCRYPT_N >= 2**15
