"""freeDiameter (Debian ``freediameter``) as a real peer: CER/CEA, DWR/DWA, DPR/DPA over TCP.

freeDiameter runs without TLS (``SecPort = 0``, ``No_TLS`` on the peer) and
without SCTP, loads dict_nasreq, dict_dcca and dict_dcca_3gpp in that order and
acl_wl with ``ALLOW_IPSEC *.ims.example.org`` (a CER without
Inband-Security-Id counts as IPsec there; ALLOW_OLD_TLS would refuse it
with 5017). It advertises the Relay application, so
our Cx node finds a common application with it. It listens on 0.0.0.0 whatever
ListenOn says, so the test picks a free port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from imsp2pd.diameter.codes import Application, Command, ResultCode, Vendor
from imsp2pd.diameter.dictionary import default_dictionary
from imsp2pd.diameter.message import Framer, Message, decode_message
from imsp2pd.diameter.node import DiameterNode, PeerConfig
from imsp2pd.diameter.peer import LocalConfig
from tests.integration.labkit import wait_until

FREEDIAMETER = shutil.which("freeDiameterd")
EXTENSIONS = Path("/usr/lib/freeDiameter")
D = default_dictionary()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Recorder:
    """A tap that decodes every message in both directions."""

    def __init__(self) -> None:
        self.framers = {"in": Framer(), "out": Framer()}
        self.messages: list[tuple[str, Message]] = []

    def __call__(self, direction: str, data: bytes, proto: Any = None) -> None:
        for frame in self.framers[direction].feed(data):
            self.messages.append((direction, decode_message(frame, D)))

    def seen(self, direction: str, code: int, is_request: bool) -> list[Message]:
        return [
            m
            for d, m in self.messages
            if d == direction and m.code == code and m.is_request == is_request
        ]


class FreeDiameterTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        if FREEDIAMETER is None:
            raise unittest.SkipTest("freeDiameterd is not installed (Debian package freediameter)")
        self.dir = Path(tempfile.mkdtemp(prefix="fd-"))
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.fd_port = free_port()
        self.recorder = Recorder()

    def start_freediameter(self, connect_to: int | None) -> None:
        (self.dir / "acl.conf").write_text("ALLOW_IPSEC *.ims.example.org\n")
        peer = (
            f'ConnectPeer = "hss.ims.example.org" {{ ConnectTo = "127.0.0.1"; Port = {connect_to}; No_TLS; }};\n'
            if connect_to
            else ""
        )
        conf = f"""
Identity = "fd.ims.example.org";
Realm = "ims.example.org";
Port = {self.fd_port};
SecPort = 0;
No_SCTP;
No_IPv6;
ListenOn = "127.0.0.1";
TcTimer = 3;
TwTimer = 6;
LoadExtension = "{EXTENSIONS}/dict_nasreq.fdx";
LoadExtension = "{EXTENSIONS}/dict_dcca.fdx";
LoadExtension = "{EXTENSIONS}/dict_dcca_3gpp.fdx";
LoadExtension = "{EXTENSIONS}/acl_wl.fdx" : "{self.dir / "acl.conf"}";
{peer}"""
        (self.dir / "fd.conf").write_text(conf)
        log = open(self.dir / "fd.log", "wb")  # closed in cleanup
        self.addCleanup(log.close)
        self.proc = subprocess.Popen(
            [FREEDIAMETER, "-c", str(self.dir / "fd.conf")], stdout=log, stderr=subprocess.STDOUT
        )
        self.addCleanup(self._stop_freediameter)

    def _stop_freediameter(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def node(self, peers: list[PeerConfig]) -> DiameterNode:
        node = DiameterNode(
            reactor,
            LocalConfig(
                "hss.ims.example.org",
                "ims.example.org",
                vendor_applications=((Vendor.TGPP, Application.CX),),
                watchdog_interval=6.0,
                watchdog_jitter=0.0,
            ),
            peers=peers,
            tap=self.recorder,
        )
        return node

    def wait_for(self, condition: Any, limit: float) -> defer.Deferred[None]:
        def describe() -> str:
            log = (self.dir / "fd.log").read_text(errors="replace")[-3000:]
            return f"condition not met within {limit}s; freeDiameter log tail:\n{log}"

        return wait_until(condition, limit, interval=0.2, describe=describe)

    def watchdogs_done(self) -> bool:
        r = self.recorder
        return bool(
            r.seen("in", Command.DEVICE_WATCHDOG, True)
            and r.seen("out", Command.DEVICE_WATCHDOG, False)
            and r.seen("out", Command.DEVICE_WATCHDOG, True)
            and r.seen("in", Command.DEVICE_WATCHDOG, False)
        )

    @defer.inlineCallbacks
    def test_freediameter_connects_to_us(self) -> Any:
        node = self.node([])
        port = node.listen(0).getHost().port
        self.start_freediameter(connect_to=port)
        yield self.wait_for(lambda: node.open_peers(), 20)
        (peer,) = node.open_peers()
        self.assertEqual(peer.origin_host, "fd.ims.example.org")
        self.assertEqual(peer.product_name, "freeDiameter")
        (cea,) = self.recorder.seen("out", Command.CAPABILITIES_EXCHANGE, False)
        self.assertEqual(cea.result_code, ResultCode.SUCCESS)
        yield self.wait_for(self.watchdogs_done, 20)
        (dwa,) = self.recorder.seen("in", Command.DEVICE_WATCHDOG, False)[:1]
        self.assertEqual(dwa.result_code, ResultCode.SUCCESS)
        yield node.stop()
        (dpa,) = self.recorder.seen("in", Command.DISCONNECT_PEER, False)
        self.assertEqual(dpa.result_code, ResultCode.SUCCESS)

    @defer.inlineCallbacks
    def test_we_connect_to_freediameter(self) -> Any:
        self.start_freediameter(connect_to=None)
        node = self.node(
            [PeerConfig("fd.ims.example.org", "ims.example.org", "127.0.0.1", self.fd_port)]
        )
        node.start()
        self.addCleanup(node.stop)
        yield self.wait_for(lambda: node.is_available(host="fd.ims.example.org"), 20)
        (cea,) = self.recorder.seen("in", Command.CAPABILITIES_EXCHANGE, False)
        self.assertEqual(cea.result_code, ResultCode.SUCCESS)
        self.assertEqual(cea.origin_host, "fd.ims.example.org")
        yield self.wait_for(self.watchdogs_done, 20)
        yield node.stop()
        self.assertTrue(self.recorder.seen("in", Command.DISCONNECT_PEER, False))
