"""sipp (Debian's sip-tester) as a real UE through our stateful proxy to
our UAS/registrar, captured and decoded by tshark.

The registrar here is a small digest registrar made from the SIP stack's
parts (challenge, verify, nonce book), standing in for the S-CSCF of the
full flow.  The capture of every flow must decode with no malformed packet
and no expert warning or error.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor

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
from imsp2pd.sip.ua import UserAgent

from .sipp import SippCase

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


class SippConformanceTests(SippCase):
    def setUp(self) -> Any:
        super().setUp()
        reg_core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 0)])
        self.registrar = Registrar(reg_core)
        reg_node, _, reg_port = self.sip_node(self.registrar.ua, reg_core)
        self.registrar.ua.node = reg_node
        proxy_core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 0)])
        proxy = StripIdentityProxy(proxy_core, Target("UDP", "127.0.0.1", reg_port))
        _, _, self.proxy_port = self.sip_node(proxy, proxy_core)
        return self.start_capture("sip.pcap", [reg_port, self.proxy_port])

    def sipp(
        self, xml: str, *extra: str, calls: int = 1
    ) -> defer.Deferred[tuple[bytes, bytes, int]]:
        return self.run_sipp(
            "scenario", xml, "-m", str(calls), "-r", "50", "-p", "0",
            "-trace_err", "-error_file", str(self.tmp / "err.log"),
            *extra, f"127.0.0.1:{self.proxy_port}",
        )  # fmt: skip

    @defer.inlineCallbacks
    def sip_lines(self) -> Any:
        """Stop the capture; (its SIP packets, one line each; tshark's problems)."""
        out, bad = yield self.decode_capture()
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
        lines, problems = yield self.sip_lines()
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
        lines, problems = yield self.sip_lines()
        self.assertEqual(problems, "")
        statuses = [line.split("\t")[-1] for line in lines if "\t" in line]
        self.assertEqual(statuses.count("401"), 4)  # two hops, two registrations
        self.assertEqual(statuses.count("403"), 2)
