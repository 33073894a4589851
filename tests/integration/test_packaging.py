"""The built wheel carries the twistd plugin and the role plugins under unique names."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
sys.path = [p for p in sys.path if p not in ('', {root!r})]
sys.path.insert(0, {site!r})
from twisted.plugin import getPlugins
from twisted.application.service import IServiceMaker
import imsp2pd, imsp2pd_roles
makers = [m.tapname for m in getPlugins(IServiceMaker)]
print(imsp2pd.__file__)
print(imsp2pd_roles.__file__)
print('imsp2p' in makers)
"""


class PackagingTests(TestCase):
    def test_wheel_has_the_twistd_plugin_and_roles(self) -> None:
        out = Path(self.mktemp()).resolve()
        out.mkdir(parents=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "-q",
                "-w",
                str(out),
                str(ROOT),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        (wheel,) = out.glob("imsp2pd-*.whl")
        names = zipfile.ZipFile(wheel).namelist()
        self.assertIn("twisted/plugins/imsp2p.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertIn("imsp2pd_roles/__init__.py", names)
        self.assertFalse([n for n in names if n.startswith(("plugins/", "tests/"))])
        site = out / "site"
        zipfile.ZipFile(wheel).extractall(site)
        r = subprocess.run(
            [sys.executable, "-c", PROBE.format(root=str(ROOT), site=str(site))],
            cwd=out,
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.split()
        self.assertTrue(lines[0].startswith(str(site)), lines)
        self.assertTrue(lines[1].startswith(str(site)), lines)
        self.assertEqual(lines[2], "True")

    def test_every_role_module_is_a_plugin(self) -> None:
        from imsp2pd.roles import discover_roles

        modules = {p.stem for p in (ROOT / "imsp2pd_roles").glob("*.py")} - {"__init__"}
        roles = discover_roles()
        self.assertEqual(
            {r.__class__.__module__.rsplit(".", 1)[-1] for r in roles.values()} >= modules, True
        )

    def test_setup_cfg_lists_the_console_script(self) -> None:
        cfg = configparser.ConfigParser()
        cfg.read(ROOT / "setup.cfg")
        self.assertIn(
            "imsp2p = imsp2pd.client.cli:main", cfg["options.entry_points"]["console_scripts"]
        )
