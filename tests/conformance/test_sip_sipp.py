"""sipp (Debian's sip-tester) as a real UE through our stateful proxy to
our UAS/registrar, captured and decoded by tshark.

The registrar here is a small digest registrar made from the SIP stack's
parts (challenge, verify, nonce book), standing in for the S-CSCF of the
full flow.  The capture of every flow must decode with no malformed packet
and no expert warning or error.
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

from imsp2pd.sip.digest import (
    Credentials,
    NonceBook,
    NonceStatus,
    challenge,
    compute_ha1,
    verify_credentials,
)
from imsp2pd.sip.errors import SipParseError
from imsp2pd.sip.headers import parse_auth
from imsp2pd.sip.message import Request, Response, make_response, new_tag
from imsp2pd.sip.proxy import IncomingRequest, LocalAddress, Output, SipCore, Source, Target
from imsp2pd.sip.transport import SipNode
from imsp2pd.sip.ua import UserAgent

from . import tshark
from .tshark import TSHARK, LiveCapture

SIPP = shutil.which("sipp")
REALM = "ims.example.org"

MESSAGE_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="message">
  <send retrans="500">
    <![CDATA[
      MESSAGE sip:content@ims.example.org SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:alice@ims.example.org>;tag=[pid]SIPpTag00[call_number]
      To: <sip:content@ims.example.org>
      Call-ID: [call_id]
      CSeq: 1 MESSAGE
      Max-Forwards: 70
      P-Asserted-Identity: <sip:mallory@ims.example.org>
      Content-Type: text/plain
      Content-Length: [len]

      purchase please
    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""

REGISTER_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:ims.example.org SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:alice@ims.example.org>;tag=[pid]SIPpTag00[call_number]
      To: <sip:alice@ims.example.org>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:alice@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: 600
      Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:ims.example.org SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:alice@ims.example.org>;tag=[pid]SIPpTag00[call_number]
      To: <sip:alice@ims.example.org>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:alice@[local_ip]:[local_port]>
      [authentication]
      Max-Forwards: 70
      Expires: 600
      Content-Length: 0

    ]]>
  </send>
  <recv response="STATUS"/>
</scenario>
"""


class Registrar:
    """A digest registrar and MESSAGE sink standing in for the S-CSCF."""

    def __init__(self, core: SipCore) -> None:
        self.core = core
        self.ua = UserAgent(core)
        self.nonces = NonceBook(os.urandom(32))
        self.ha1 = {
            "alice@ims.example.org": compute_ha1("alice@ims.example.org", REALM, "alice-pass")
        }
        self.bindings: dict[str, str] = {}
        self.messages: list[Request] = []
        self.ua.on("REGISTER", self.register)
        self.ua.on("MESSAGE", self.message)

    def message(self, request: Request, source: Source) -> int:
        self.messages.append(request)
        return 200

    def register(self, request: Request, source: Source) -> Response:
        now = reactor.seconds()
        value = request.get("Authorization")
        if value is None:
            chal = challenge(realm=REALM, nonce=self.nonces.issue(now))
            return make_response(
                request, 401, to_tag=new_tag(), extra=(("WWW-Authenticate", str(chal)),)
            )
        try:
            creds = Credentials.from_header(parse_auth(value))
        except (SipParseError, ValueError) as exc:
            return make_response(request, 400, str(exc), to_tag=new_tag())
        status = self.nonces.check(creds.nonce, creds.nc, now)
        ha1 = self.ha1.get(creds.username)
        if (
            status is not NonceStatus.OK
            or ha1 is None
            or not verify_credentials(creds, method="REGISTER", ha1=ha1)
        ):
            return make_response(request, 403, to_tag=new_tag())
        contact = request.get("Contact") or ""
        self.bindings[creds.username] = contact
        return make_response(
            request, 200, to_tag=new_tag(), extra=(("Contact", f"{contact};expires=600"),)
        )


class StripIdentityProxy:
    """Forwards to the registrar, removing a P-Asserted-Identity a UE sent."""

    def __init__(self, core: SipCore, target: Target) -> None:
        self.core = core
        self.target = target

    def on_event(self, event: Output, now: float) -> list[Output]:
        if isinstance(event, IncomingRequest):
            request = event.request.remove_header("P-Asserted-Identity")
            return self.core.forward(event.ctx, request, now, target=self.target, record_route=True)
        return []


class SippConformanceTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> Any:
        if SIPP is None:
            raise unittest.SkipTest("sipp not installed (Debian package sip-tester)")
        if TSHARK is None:
            raise unittest.SkipTest(tshark.MISSING)
        self.tmp = Path(tempfile.mkdtemp(prefix="sipp-"))
        self.nodes: list[SipNode] = []
        self.reg_core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 0)])
        self.registrar = Registrar(self.reg_core)
        self.reg_node = self._start(self.reg_core, self.registrar.ua)
        self.registrar.ua.node = self.reg_node
        reg_port = self.reg_core.addresses[0].port
        self.proxy_core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 0)])
        self.proxy = StripIdentityProxy(self.proxy_core, Target("UDP", "127.0.0.1", reg_port))
        self.proxy_node = self._start(self.proxy_core, self.proxy)
        self.proxy_port = self.proxy_core.addresses[0].port
        self.ports = [reg_port, self.proxy_port]
        return self._start_capture()

    def _start(self, core: SipCore, tu: Any) -> SipNode:
        node = SipNode(reactor, core, tu)
        port = node.listen_udp(0).getHost().port
        node.listen_tcp(port)
        core.addresses[:] = [
            LocalAddress("UDP", "127.0.0.1", port),
            LocalAddress("TCP", "127.0.0.1", port),
        ]
        self.nodes.append(node)
        return node

    def _start_capture(self) -> defer.Deferred[None]:
        self.pcap = self.tmp / "sip.pcap"
        self.capture = LiveCapture()
        return self.capture.start(self.pcap, self.ports)

    @defer.inlineCallbacks
    def tearDown(self) -> Any:
        if getattr(self, "capture", None) is not None:
            yield self.capture.stop()
        yield defer.gatherResults([n.stop() for n in self.nodes])
        shutil.rmtree(self.tmp, ignore_errors=True)

    def sipp(
        self, xml: str, *extra: str, calls: int = 1
    ) -> defer.Deferred[tuple[bytes, bytes, int]]:
        scenario = self.tmp / "scenario.xml"
        scenario.write_text(xml)
        args = [
            "-sf", str(scenario), "-m", str(calls), "-r", "50", "-i", "127.0.0.1", "-p", "0",
            "-nostdin", "-timeout", "20", "-trace_err", "-error_file", str(self.tmp / "err.log"),
            *extra, f"127.0.0.1:{self.proxy_port}",
        ]  # fmt: skip
        return getProcessOutputAndValue(SIPP, args, env=os.environ.copy(), path=str(self.tmp))

    @defer.inlineCallbacks
    def decode_capture(self) -> Any:
        """Stop the capture; return (sip packet count, problems)."""
        yield _settle(0.3)
        yield self.capture.stop()
        decode = tshark.decode_as(self.ports, "sip")
        out = yield tshark.fields_async(
            self.pcap, decode, "sip.Method", "sip.Status-Code", display_filter="sip"
        )
        bad = yield tshark.problems_async(self.pcap, decode)
        return out.split("\n"), bad

    @defer.inlineCallbacks
    def test_message_through_proxy_without_forged_identity(self) -> Any:
        out, err, code = yield self.sipp(MESSAGE_XML, calls=5)
        self.assertEqual(code, 0, (out + err).decode(errors="replace")[-2000:])
        self.assertEqual(len(self.registrar.messages), 5)
        for msg in self.registrar.messages:
            self.assertIsNone(msg.get("P-Asserted-Identity"))
            self.assertEqual(msg.body, b"purchase please\r\n")
            self.assertEqual(len(msg.vias), 2)
        lines, problems = yield self.decode_capture()
        self.assertEqual(problems, "")
        self.assertEqual(sum(1 for line in lines if line.startswith("MESSAGE")), 10)  # UE→proxy→UAS

    @defer.inlineCallbacks
    def test_register_md5_digest_then_wrong_password(self) -> Any:
        xml = REGISTER_XML.replace("STATUS", "200")
        out, err, code = yield self.sipp(
            xml, "-au", "alice@ims.example.org", "-ap", "alice-pass", "-auth_uri", REALM
        )
        self.assertEqual(code, 0, (out + err).decode(errors="replace")[-2000:])
        self.assertIn("alice@ims.example.org", self.registrar.bindings)
        self.registrar.bindings.clear()
        xml = REGISTER_XML.replace("STATUS", "403")
        out, err, code = yield self.sipp(
            xml, "-au", "alice@ims.example.org", "-ap", "wrong", "-auth_uri", REALM
        )
        self.assertEqual(code, 0, (out + err).decode(errors="replace")[-2000:])
        self.assertEqual(self.registrar.bindings, {})
        lines, problems = yield self.decode_capture()
        self.assertEqual(problems, "")
        statuses = [line.split("\t")[-1] for line in lines if "\t" in line]
        self.assertEqual(statuses.count("401"), 4)  # two hops, two registrations
        self.assertEqual(statuses.count("403"), 2)


def _settle(seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
