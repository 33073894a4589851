from pathlib import Path

import pytest

from imsp2pd.config import (
    CORE_SCHEMAS,
    ConfigError,
    Field,
    endpoint_field,
    find_config_path,
    host_port_check,
    load_config,
)

SCHEMAS = {
    "demo": {
        "port": Field(int, 4060),
        "name": Field(str, "x"),
        "ratio": Field(float, 0.5),
        "peers": Field(list, [], item=str),
        "listen": endpoint_field("tcp:1:interface=127.0.0.1"),
        "udp": Field(str, "127.0.0.1:5060", check=host_port_check),
    }
}


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "etc" / "c.toml"
    p.parent.mkdir(exist_ok=True)
    p.write_text(text)
    return p


def test_defaults_fill_in_and_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, '[admin]\ntoken = "t"\n[demo]\nport = 7\n'), SCHEMAS)
    assert c["demo"]["port"] == 7
    assert c["demo"]["name"] == "x"
    assert c["ims"]["domain"] == "ims.example.org"
    assert c.state_dir == (tmp_path / "var").resolve()
    assert c.state_path("keys") == (tmp_path / "var" / "keys").resolve()
    assert c.path("/abs/x") == Path("/abs/x")


def test_integer_accepted_where_a_float_is_expected(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, '[admin]\ntoken = "t"\n[demo]\nratio = 1\n'), SCHEMAS)
    assert c["demo"]["ratio"] == 1.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[admin]\ntoken = "t"\n[nope]\n', "unknown section [nope]"),
        ('[admin]\ntoken = "t"\n[demo]\nprot = 1\n', "unknown key [demo] prot"),
        ('[admin]\ntoken = "t"\n[demo]\nport = "1"\n', "[demo] port must be an integer, not str"),
        ('[admin]\ntoken = "t"\n[demo]\nport = true\n', "[demo] port must be an integer, not bool"),
        ('[admin]\ntoken = "t"\n[demo]\npeers = [1]\n', "[demo] peers[0] must be a string"),
        (
            '[admin]\ntoken = "t"\n[demo]\nlisten = "9100"\n',
            "[demo] listen must be a Twisted endpoint",
        ),
        ('[admin]\ntoken = "t"\n[demo]\nudp = "host"\n', "[demo] udp must be HOST:PORT"),
        ("[daemon]\n", "missing key [admin] token"),
        (
            '[admin]\ntoken = "t"\n[daemon]\nlog_format = "xml"\n',
            "[daemon] log_format must be one of",
        ),
        ("[admin\n", "is not valid TOML"),
        ('[admin]\ntoken = "t"\ndemo = 3\n', "unknown key [admin] demo"),
        ('demo = 3\n[admin]\ntoken = "t"\n', "[demo] must be a table"),
    ],
)
def test_errors_are_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text), SCHEMAS)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "none.toml", SCHEMAS)


def test_lookup_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMSP2P_CONFIG", raising=False)
    assert find_config_path(None) == Path("etc/imsp2pd.toml")
    monkeypatch.setenv("IMSP2P_CONFIG", "/x/env.toml")
    assert find_config_path(None) == Path("/x/env.toml")
    assert find_config_path("/y/arg.toml") == Path("/y/arg.toml")


def test_lab_config_is_valid() -> None:
    from imsp2pd.roles import discover_roles, role_schemas

    root = Path(__file__).resolve().parents[2]
    c = load_config(root / "etc" / "imsp2pd.toml", role_schemas(discover_roles()))
    assert c["admin"]["listen"] == "tcp:9100:interface=127.0.0.1"
    assert set(CORE_SCHEMAS) <= set(c.sections)
