"""The house style is checked with the suite: ruff (lint and format) and mypy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TREES = ["imsp2pd", "imsp2pd_roles", "tests", "bench", "twisted"]


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_lint() -> None:
    r = run(sys.executable, "-m", "ruff", "check", *TREES)
    assert r.returncode == 0, r.stdout[-4000:]


def test_ruff_format() -> None:
    r = run(sys.executable, "-m", "ruff", "format", "--check", *TREES)
    assert r.returncode == 0, r.stdout[-4000:]


def test_mypy() -> None:
    r = run(sys.executable, "-m", "mypy")
    assert r.returncode == 0, r.stdout[-4000:]
