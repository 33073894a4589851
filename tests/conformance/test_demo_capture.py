"""The demo (the README's main job), small, on a copy of the lab config; tshark
decodes its whole signalling capture (SIP on UDP and TCP, Diameter Cx and Ro)
with no malformed packet and no expert warning."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from . import tshark

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SIP_PORTS = (4060, 5060, 6060, 7060)
DIAMETER_PORTS = (3868, 3869)


class DemoTests(TestCase):
    timeout = 600

    def test_small_demo_and_its_capture(self) -> None:
        d = Path(self.mktemp()).resolve()
        (d / "etc").mkdir(parents=True)
        for f in (ROOT / "etc").iterdir():
            shutil.copy(f, d / "etc" / f.name)
        env = {k: v for k, v in os.environ.items() if k not in ("IMSP2P_CONFIG", "PYTHONPATH")}
        r = subprocess.run(
            [
                str(BIN / "imsp2p"),
                "--config",
                str(d / "etc" / "imsp2pd.toml"),
                "demo",
                "--consumers",
                "3",
                "--size",
                "2",
            ],
            cwd=d,
            env=env,
            capture_output=True,
            text=True,
            timeout=500,
        )
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-2000:])
        last = r.stdout.strip().splitlines()[-1]
        self.assertRegex(
            last,
            r"^demo: 3/3 consumers played identical bytes; origin uploaded \d+\.\d\d× the file size$",
        )
        self.assertIn("dave: 402, nothing granted", r.stdout)
        capture = d / "var" / "demo" / "signalling.pcapng"
        if tshark.TSHARK is None:
            raise SkipTest(f"{tshark.MISSING}: capture not checked")
        decode = tshark.decode_as(SIP_PORTS, "sip", ("tcp", "udp"))
        decode += tshark.decode_as(DIAMETER_PORTS, "diameter", ("tcp",))
        bad = tshark.problems(capture, decode)
        self.assertEqual(bad, "", "tshark found malformed packets or warnings")
        seen = tshark.fields(capture, decode, "frame.protocols")
        self.assertIn("sip", seen)
        self.assertIn("diameter", seen)
