"""tshark (Debian ``tshark``) decodes a loopback exchange of our Diameter stack cleanly.

An S-CSCF/AS-like client node talks over real loopback TCP to an HSS node
(imsp2pd.ims.hss) and an OCS node (imsp2pd.ims.ocs): CER/CEA, DWR/DWA,
UAR/UAA, MAR/MAA (digest and AKA), SAR/SAA, LIR/LIA, CCR/CCA (debit and
refund), RTR/RTA and PPR/PPA from the HSS, an error answer with Failed-AVP,
and DPR/DPA. (An unknown AVP with the M bit is flagged by tshark itself,
as it should be, so the error case here is a missing AVP.) Every byte the client sent and received is written as a pcap
with real TCP framing (handshake, sequence numbers, the segments as they
were written); tshark must show no malformed packet and no expert warning or
error, and must recognise every command. A corrupted copy proves the filter
does catch what it should.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from decimal import Decimal
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from imsp2pd.diameter import cx
from imsp2pd.diameter.codes import (
    Application,
    AvpCode,
    Command,
    ResultCode,
    ServerAssignmentType,
    TgppAvp,
    Vendor,
)
from imsp2pd.diameter.message import Message
from imsp2pd.diameter.node import DiameterNode, PeerConfig
from imsp2pd.diameter.peer import LocalConfig, PeerInfo
from imsp2pd.ims import milenage
from imsp2pd.ims.hss import MIGRATIONS as HSS_MIGRATIONS
from imsp2pd.ims.hss import Hss, HssConfig, content_ifcs, ifc_documents
from imsp2pd.store import SQLiteStore
from tests.integration.labkit import wait_until

from . import tshark

REALM = "ims.example.org"
CLIENT = cx.Origin("scscf.ims.example.org", REALM)
SCSCF_URI = "sip:127.0.0.1:6060"


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
    lo = IPv4Address("127.0.0.1").packed
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    pseudo = lo + lo + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
    tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp + payload)) + tcp[18:]
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0x4000, 64, 6, 0, lo, lo
    )
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return b"\0" * 12 + b"\x08\x00" + ip + tcp + payload


class Capture:
    """Records what the client node wrote and read, per connection, as TCP segments."""

    def __init__(self) -> None:
        self.streams: dict[tuple[int, int], dict[str, int]] = {}
        self.frames: list[bytes] = []

    def __call__(self, direction: str, data: bytes, proto: Any) -> None:
        local = proto.transport.getHost().port
        remote = proto.transport.getPeer().port
        key = (local, remote)
        if key not in self.streams:
            seq = {"c": 1000, "s": 50000}
            self.frames.append(_frame(local, remote, seq["c"] - 1, 0, 0x02))
            self.frames.append(_frame(remote, local, seq["s"] - 1, seq["c"], 0x12))
            self.frames.append(_frame(local, remote, seq["c"], seq["s"], 0x10))
            self.streams[key] = seq
        seq = self.streams[key]
        if direction == "out":
            self.frames.append(_frame(local, remote, seq["c"], seq["s"], 0x18, data))
            seq["c"] += len(data)
        else:
            self.frames.append(_frame(remote, local, seq["s"], seq["c"], 0x18, data))
            seq["s"] += len(data)

    def write(self, path: Path, frames: list[bytes] | None = None) -> None:
        out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
        for i, f in enumerate(frames if frames is not None else self.frames):
            out += (
                struct.pack("<IIII", 1_700_000_000 + i // 1000, (i % 1000) * 1000, len(f), len(f))
                + f
            )
        path.write_bytes(out)


class TsharkTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        if tshark.TSHARK is None:
            raise unittest.SkipTest(tshark.MISSING)
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir(parents=True)

    def make_hss(self) -> Hss:
        store = SQLiteStore(self.dir / "hss.sqlite")
        store.migrate(HSS_MIGRATIONS)
        self.addCleanup(store.close)
        hss = Hss(HssConfig(origin_host="hss.ims.example.org", scscf_names=(SCSCF_URI,)), store)
        k, op = (
            bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc"),
            bytes.fromhex("cdc202d5123e20f62b6d676ac72cb318"),
        )

        def provision(txn: Any) -> None:
            ifcs = ifc_documents(content_ifcs("sip:content@ims.example.org", "sip:127.0.0.1:7060"))
            hss.put_subscriber(
                txn,
                "alice@ims.example.org",
                ["sip:alice@ims.example.org"],
                password="alice-pass",
                ifcs=ifcs,
            )
            hss.put_subscriber(
                txn,
                "bob@ims.example.org",
                ["sip:bob@ims.example.org"],
                aka={"k": k.hex(), "op": op.hex()},
            )
            hss.put_psi(txn, "sip:content@ims.example.org", "sip:127.0.0.1:7060")

        store.transact_now(provision)
        self.k, self.opc = k, milenage.compute_opc(k, op)
        return hss

    def make_ocs(self) -> Any:
        from imsp2pd.ims.ocs import MIGRATIONS as OCS_MIGRATIONS
        from imsp2pd.ims.ocs import OnlineChargingSystem

        store = SQLiteStore(self.dir / "ocs.sqlite")
        store.migrate(OCS_MIGRATIONS)
        self.addCleanup(store.close)
        ocs = OnlineChargingSystem(store, "ocs.ims.example.org", REALM, reactor.seconds)
        ocs.seed({"sip:alice@ims.example.org": "100.00"}, "EUR")
        return ocs

    @defer.inlineCallbacks
    def test_exchange_decodes_cleanly(self) -> Any:
        from imsp2pd.ims.ro import CURRENCIES, RequestedAction, build_ccr

        hss, ocs = self.make_hss(), self.make_ocs()
        hss_node = DiameterNode(
            reactor,
            LocalConfig(
                "hss.ims.example.org", REALM, vendor_applications=((Vendor.TGPP, Application.CX),)
            ),
            handler=hss.handle,
        )
        ocs_node = DiameterNode(
            reactor,
            LocalConfig(
                "ocs.ims.example.org", REALM, auth_applications=(Application.CREDIT_CONTROL,)
            ),
            handler=lambda msg, peer: ocs.handle_ccr(msg),
        )
        hss_port = hss_node.listen(0).getHost().port
        ocs_port = ocs_node.listen(0).getHost().port
        capture = Capture()

        def client_handler(req: Message, peer: PeerInfo) -> Message:
            return client.answer(
                req,
                ResultCode.SUCCESS,
                [cx.cx_application(), client.dictionary.make(AvpCode.AUTH_SESSION_STATE, 1)],
            )

        client = DiameterNode(
            reactor,
            LocalConfig(
                CLIENT.host,
                REALM,
                vendor_applications=((Vendor.TGPP, Application.CX),),
                auth_applications=(Application.CREDIT_CONTROL,),
                watchdog_interval=1.0,
                watchdog_jitter=0.0,
            ),
            peers=[
                PeerConfig("hss.ims.example.org", REALM, "127.0.0.1", hss_port),
                PeerConfig("ocs.ims.example.org", REALM, "127.0.0.1", ocs_port),
            ],
            handler=client_handler,
            tap=capture,
        )
        client.start()
        self.addCleanup(hss_node.stop)
        self.addCleanup(ocs_node.stop)
        yield wait_until(
            lambda: (
                client.is_available("hss.ims.example.org")
                and client.is_available("ocs.ims.example.org")
            )
        )

        sessions = cx.SessionIds(CLIENT.host, reactor.seconds())
        alice, alice_impu = "alice@ims.example.org", "sip:alice@ims.example.org"
        results = []
        for req in (
            cx.uar(CLIENT, sessions.next(), REALM, alice, alice_impu, REALM),
            cx.mar(CLIENT, sessions.next(), REALM, alice, alice_impu, SCSCF_URI, cx.SCHEME_DIGEST),
            cx.mar(
                CLIENT,
                sessions.next(),
                REALM,
                "bob@ims.example.org",
                "sip:bob@ims.example.org",
                SCSCF_URI,
                cx.SCHEME_AKA,
                items=2,
            ),
            cx.sar(
                CLIENT,
                sessions.next(),
                REALM,
                [alice_impu],
                SCSCF_URI,
                ServerAssignmentType.REGISTRATION,
                impi=alice,
            ),
            cx.lir(CLIENT, sessions.next(), REALM, "sip:content@ims.example.org"),
            cx.lir(CLIENT, sessions.next(), REALM, "sip:nobody@ims.example.org"),
        ):
            results.append((yield client.request(req)))
        self.assertEqual(
            [cx.outcome(a).code for a in results], [2001, 2001, 2001, 2001, 2001, 5001]
        )
        # A request without its Public-Identity: answered 5005 with Failed-AVP.
        lir = cx.lir(CLIENT, sessions.next(), REALM, alice_impu)
        bad = replace(lir, avps=tuple(a for a in lir.avps if a.code != TgppAvp.PUBLIC_IDENTITY))
        missing = yield client.request(bad)
        self.assertEqual(missing.result_code, ResultCode.MISSING_AVP)
        self.assertIsNotNone(missing.find(AvpCode.FAILED_AVP))
        for action in (RequestedAction.DIRECT_DEBITING, RequestedAction.REFUND_ACCOUNT):
            ccr = build_ccr(
                session_id=sessions.next(),
                origin_host=CLIENT.host,
                origin_realm=REALM,
                destination_realm=REALM,
                destination_host=None,
                impu=alice_impu,
                action=action,
                amount=Decimal("2.50"),
                currency=CURRENCIES["EUR"],
                icid="icid-1234",
                detail="10.5555/lab-asset",
            )
            cca = yield client.request(ccr)
            self.assertEqual(cca.result_code, ResultCode.SUCCESS)
        # The HSS pushes a profile and terminates a registration at the S-CSCF.
        hss_origin = cx.Origin("hss.ims.example.org", REALM)
        ppa = yield hss_node.request(
            cx.ppr(hss_origin, "hss;1;1", CLIENT.host, REALM, alice, b"<IMSSubscription/>")
        )
        rta = yield hss_node.request(
            cx.rtr(
                hss_origin, "hss;1;2", CLIENT.host, REALM, alice, [alice_impu], reason_info="test"
            )
        )
        self.assertEqual((ppa.result_code, rta.result_code), (2001, 2001))
        yield task.deferLater(reactor, 2.5, lambda: None)  # watchdog rounds (Tw = 1 s)
        yield client.stop()

        pcap = self.dir / "diameter.pcap"
        capture.write(pcap)
        decode = tshark.decode_as([hss_port, ocs_port], "diameter", ("tcp",))
        tshark.assert_clean(pcap, decode, timeout=60)
        fields = tshark.fields(
            pcap,
            decode,
            "diameter.cmd.code",
            "diameter.flags.request",
            display_filter="diameter",
            timeout=60,
        )
        seen = set()
        for line in fields.splitlines():
            codes, flags = line.split("\t")
            for code, flag in zip(codes.split(","), flags.split(","), strict=True):
                seen.add((int(code), flag in ("1", "True")))
        commands = [
            Command.CAPABILITIES_EXCHANGE,
            Command.DEVICE_WATCHDOG,
            Command.DISCONNECT_PEER,
            Command.USER_AUTHORIZATION,
            Command.MULTIMEDIA_AUTH,
            Command.SERVER_ASSIGNMENT,
            Command.LOCATION_INFO,
            Command.CREDIT_CONTROL,
            Command.REGISTRATION_TERMINATION,
            Command.PUSH_PROFILE,
        ]
        expected = {(int(c), r) for c in commands for r in (True, False)}
        self.assertEqual(expected - seen, set())

        # Negative control: a corrupted AVP length is reported.
        frames = list(capture.frames)
        victim = next(i for i, f in enumerate(frames) if len(f) > 54 + 40)
        broken = bytearray(frames[victim])
        struct.pack_into("!I", broken, 54 + 20 + 4, (0x40 << 24) | 0xFFFF)
        frames[victim] = bytes(broken)
        corrupt = self.dir / "corrupt.pcap"
        capture.write(corrupt, frames)
        self.assertNotEqual(tshark.problems(corrupt, decode, timeout=60), "")
