"""sipp (Debian's sip-tester) for the conformance tests, in one place.

* :data:`SIPP` (None when not installed) and :data:`MISSING`;
* :func:`settle`: a Deferred that fires after a pause;
* :class:`SippCase`: a trial TestCase that skips without sipp or tshark, with
  a scratch folder, SIP nodes on loopback, a live capture of their ports,
  sipp runs in the scratch folder and the capture's decoding; whatever it
  starts is stopped (the capture first) and the folder removed by cleanups,
  after the test's own tearDown.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from imsp2pd.sip.proxy import LocalAddress, SipCore
from imsp2pd.sip.transport import SipNode
from tests.integration.labkit import listen_sip

from . import tshark
from .tshark import TSHARK, LiveCapture

SIPP = shutil.which("sipp")
MISSING = "sipp not installed (Debian package sip-tester)"


def settle(seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class SippCase(unittest.TestCase):
    timeout = 120
    prefix = "sipp-"

    def setUp(self) -> Any:
        if SIPP is None:
            raise unittest.SkipTest(MISSING)
        if TSHARK is None:
            raise unittest.SkipTest(tshark.MISSING)
        self.tmp = Path(tempfile.mkdtemp(prefix=self.prefix))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def sip_node(self, tu: Any, core: SipCore | None = None) -> tuple[SipNode, SipCore, int]:
        """A node for ``tu`` (a new core unless given) on a free loopback port."""
        if core is None:
            core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 0)])
        node = SipNode(reactor, core, tu)
        port = listen_sip(node, core)
        self.addCleanup(node.stop)
        return node, core, port

    def start_capture(self, name: str, ports: list[int]) -> defer.Deferred[None]:
        """tshark capturing ``ports`` into ``name`` in the scratch folder."""
        self.pcap = self.tmp / name
        self.ports = ports
        self.capture = LiveCapture()
        self.addCleanup(self.capture.stop)
        return self.capture.start(self.pcap, ports)

    def run_sipp(self, name: str, xml: str, *args: str) -> defer.Deferred[tuple[bytes, bytes, int]]:
        """sipp on 127.0.0.1 with the scenario ``xml`` (written as ``name``.xml),
        in the scratch folder, ending after 20 s at most; (out, err, exit code)."""
        assert SIPP is not None
        scenario = self.tmp / f"{name}.xml"
        scenario.write_text(xml)
        args = ("-sf", str(scenario), "-i", "127.0.0.1", "-nostdin", "-timeout", "20", *args)
        return getProcessOutputAndValue(SIPP, args, env=os.environ.copy(), path=str(self.tmp))

    @defer.inlineCallbacks
    def decode_capture(self) -> Any:
        """Stop the capture (after 0.3 s for the last packets); (the method and
        status code of each SIP packet, one line each; tshark's problems, '' for none)."""
        yield settle(0.3)
        yield self.capture.stop()
        decode = tshark.decode_as(self.ports, "sip")
        out = yield tshark.fields_async(
            self.pcap, decode, "sip.Method", "sip.Status-Code", display_filter="sip"
        )
        bad = yield tshark.problems_async(self.pcap, decode)
        return out, bad
