"""The compiled copies of the hot modules: loaded only while they match
their source, never instead of an edited one, and the source still passes
the core tests on its own."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imsp2pd import accel

ROOT = Path(__file__).resolve().parents[2]
PURE = os.environ.get(accel.PURE_ENV, "") not in ("", "0")


def test_a_copy_is_found_only_under_the_hash_of_the_current_source(tmp_path: Path) -> None:
    module = "imsp2pd.sip.parser"
    source = accel.source_of(module).read_bytes()
    finder = accel.AccelFinder(accel_dir=tmp_path)
    assert finder.find_spec(module) is None  # nothing built
    stale = accel.compiled_path(module, source + b"\n# an older version\n", tmp_path)
    stale.write_bytes(b"")
    assert finder.find_spec(module) is None  # built from another source
    fresh = accel.compiled_path(module, source, tmp_path)
    fresh.write_bytes(b"")
    spec = finder.find_spec(module)
    assert spec is not None and spec.origin == str(fresh)
    assert isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)
    assert finder.find_spec("imsp2pd.config") is None  # not one of the hot modules


def test_pure_environment_installs_no_finder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        sys, "meta_path", [f for f in sys.meta_path if not isinstance(f, accel.AccelFinder)]
    )
    monkeypatch.setenv(accel.PURE_ENV, "1")
    assert accel.install() is False
    assert not any(isinstance(f, accel.AccelFinder) for f in sys.meta_path)
    monkeypatch.setenv(accel.PURE_ENV, "")
    assert accel.install() is True
    assert accel.install() is True
    assert sum(isinstance(f, accel.AccelFinder) for f in sys.meta_path) == 1


def test_every_built_module_runs_compiled() -> None:
    if PURE:
        pytest.skip("IMSP2P_PURE runs everything from source")
    for name in accel.MODULES:
        path = accel.current(name)
        module = importlib.import_module(name)
        assert module.__file__ == (str(path) if path else str(accel.source_of(name)))
    assert accel.status() == {name: accel.current(name) is not None for name in accel.MODULES}


def test_every_hot_module_is_built_where_cython_is_installed() -> None:
    # scripts/setup.sh builds them; a module edited since runs from source
    # until `python -m imsp2pd.build_accel build`
    if importlib.util.find_spec("Cython") is None:
        pytest.skip("Cython (the accel extra) is not installed")
    missing = [name for name in accel.MODULES if accel.current(name) is None]
    assert not missing, f"not compiled (run python -m imsp2pd.build_accel build): {missing}"


def test_the_core_tests_pass_from_source_too() -> None:
    # the suite runs the compiled copies; the source they came from must
    # pass the core tests by itself (the fallback without a compiler)
    tests = [
        "tests/unit/test_sip_parser.py",
        "tests/unit/test_sip_proxy.py",
        "tests/unit/test_sip_transaction.py",
        "tests/unit/test_sip_uri.py",
        "tests/unit/test_ifc_compiled.py",
        "tests/unit/test_diameter_codec.py",
    ]
    tests = [t for t in tests if (ROOT / t).exists()]
    env = dict(os.environ, **{accel.PURE_ENV: "1"})
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    check = subprocess.run(
        [sys.executable, "-c", "import imsp2pd.sip.parser as p; print(p.__file__)"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert check.stdout.strip().endswith("parser.py")


def test_compiled_code_keeps_python_semantics_for_annotated_arguments() -> None:
    # an IntEnum passed where ``int`` is annotated stays an IntEnum (Cython's
    # annotation typing would make it a plain int: the AVP would lose its vendor)
    from imsp2pd.diameter.avp import default_vendor
    from imsp2pd.diameter.codes import TgppAvp

    assert default_vendor(TgppAvp.PUBLIC_IDENTITY) == 10415
