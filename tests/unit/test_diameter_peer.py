"""The sans-IO Diameter peer connection: capability exchange, watchdog, DPR, matching, timeouts."""

from __future__ import annotations

import random
import struct

from imsp2pd.diameter.avp import Avp
from imsp2pd.diameter.codes import (
    Application,
    AvpCode,
    Command,
    DisconnectCause,
    ResultCode,
    TgppAvp,
    Vendor,
)
from imsp2pd.diameter.dictionary import default_dictionary
from imsp2pd.diameter.message import Framer, Message, answer, decode_message, request
from imsp2pd.diameter.peer import (
    AnswerReceived,
    Close,
    DuplicateCache,
    EndToEndIds,
    Event,
    IncomingRequest,
    LocalConfig,
    PeerConnection,
    PeerDown,
    PeerState,
    PeerUp,
    ProtocolViolation,
    RequestsOrphaned,
    RequestTimedOut,
    Role,
    Send,
    WatchdogChanged,
    WatchdogState,
)

D = default_dictionary()
CX = ((Vendor.TGPP, Application.CX),)


def config(host: str, **kw: object) -> LocalConfig:
    defaults: dict[str, object] = {
        "vendor_applications": CX,
        "watchdog_jitter": 0.0,
        "watchdog_interval": 30.0,
    }
    defaults.update(kw)
    return LocalConfig(origin_host=host, origin_realm="ims.example.org", **defaults)  # type: ignore[arg-type]


def sent(events: list[Event]) -> list[Message]:
    out: list[Message] = []
    for e in events:
        if isinstance(e, Send):
            for frame in Framer().feed(e.data):
                out.append(decode_message(frame, D))
    return out


def of(events: list[Event], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


class Pair:
    """Two connections wired back to back (like h11's ConnectionPair)."""

    def __init__(
        self,
        client_cfg: LocalConfig | None = None,
        server_cfg: LocalConfig | None = None,
        **kw: object,
    ) -> None:
        self.now = 1000.0
        self.client = PeerConnection(
            client_cfg or config("scscf.ims.example.org"),
            Role.INITIATOR,
            self.now,
            rng=random.Random(1),
            **kw,
        )  # type: ignore[arg-type]
        self.server = PeerConnection(
            server_cfg or config("hss.ims.example.org"),
            Role.RESPONDER,
            self.now,
            rng=random.Random(2),
        )
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []

    def deliver(self, events: list[Event], to: PeerConnection) -> None:
        mine = self.client_events if to is self.server else self.server_events
        mine.extend(events)
        for e in events:
            if isinstance(e, Send):
                back = to.data_received(e.data, self.now)
                self.deliver(back, self.client if to is self.server else self.server)

    def open(self) -> None:
        self.deliver(self.client.start(self.now), self.server)

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.deliver(self.client.on_timer(self.now), self.server)
        self.deliver(self.server.on_timer(self.now), self.client)


def lir(session: str = "s;1") -> Message:
    return request(
        Command.LOCATION_INFO,
        Application.CX,
        [
            D.make(AvpCode.SESSION_ID, session),
            D.group(
                AvpCode.VENDOR_SPECIFIC_APPLICATION_ID,
                D.make(AvpCode.VENDOR_ID, 10415),
                D.make(AvpCode.AUTH_APPLICATION_ID, Application.CX),
            ),
            D.make(AvpCode.AUTH_SESSION_STATE, 1),
            D.make(AvpCode.ORIGIN_HOST, "scscf.ims.example.org"),
            D.make(AvpCode.ORIGIN_REALM, "ims.example.org"),
            D.make(AvpCode.DESTINATION_REALM, "ims.example.org"),
            D.make(TgppAvp.PUBLIC_IDENTITY, "sip:alice@ims.example.org"),
        ],
    )


def test_capability_exchange_opens_both_sides() -> None:
    p = Pair()
    p.open()
    assert p.client.state is PeerState.OPEN and p.server.state is PeerState.OPEN
    (up,) = of(p.client_events, PeerUp)
    assert up.peer.origin_host == "hss.ims.example.org"
    assert up.peer.applications == {Application.CX}
    (server_up,) = of(p.server_events, PeerUp)
    assert server_up.peer.origin_host == "scscf.ims.example.org"
    assert p.client.start(p.now) == []  # already started: nothing more


def test_cer_content() -> None:
    conn = PeerConnection(config("a.example", auth_applications=(4,)), Role.INITIATOR, 0.0)
    (cer,) = sent(conn.start(0.0))
    assert cer.code == Command.CAPABILITIES_EXCHANGE and cer.is_request and not cer.is_proxiable
    assert cer.origin_host == "a.example"
    assert cer.find(AvpCode.HOST_IP_ADDRESS) is not None
    assert cer.get(AvpCode.AUTH_APPLICATION_ID) == 4
    vsa = cer.find(AvpCode.VENDOR_SPECIFIC_APPLICATION_ID)
    assert vsa is not None and vsa.get(AvpCode.AUTH_APPLICATION_ID) == Application.CX


def test_no_common_application_is_5010_and_closes() -> None:
    p = Pair(client_cfg=config("ocs-client", vendor_applications=(), auth_applications=(4,)))
    p.open()
    (cea,) = sent(p.server_events)
    assert cea.result_code == ResultCode.NO_COMMON_APPLICATION
    assert of(p.server_events, Close) and p.server.state is PeerState.CLOSED
    assert p.client.state is PeerState.CLOSED
    assert "5010" in of(p.client_events, PeerDown)[0].reason


def test_relay_matches_any_application() -> None:
    p = Pair(
        client_cfg=config("relay", vendor_applications=(), auth_applications=(Application.RELAY,))
    )
    p.open()
    assert p.client.is_open and p.server.is_open


def test_policy_refusal_is_3010() -> None:
    p = Pair()
    p.server = PeerConnection(
        config("hss"), Role.RESPONDER, p.now, accept_peer=lambda host, realm: host == "icscf"
    )
    p.open()
    (cea,) = sent(p.server_events)
    assert cea.result_code == ResultCode.UNKNOWN_PEER and cea.is_error
    assert p.server.state is PeerState.CLOSED


def test_request_before_cer_closes() -> None:
    server = PeerConnection(config("hss"), Role.RESPONDER, 0.0)
    events = server.data_received(lir().encode(), 0.0)
    assert of(events, Close) and server.state is PeerState.CLOSED


def test_cer_timeout_closes() -> None:
    server = PeerConnection(config("hss", cer_timeout=5.0), Role.RESPONDER, 0.0)
    assert server.next_deadline() == 5.0
    assert server.on_timer(4.9) == []
    events = server.on_timer(5.0)
    assert of(events, Close) and of(events, PeerDown)


def test_request_answer_matching() -> None:
    p = Pair()
    p.open()
    req, events = p.client.send_request(lir(), p.now)
    assert req.hop_by_hop and req.end_to_end
    p.deliver(events, p.server)
    (incoming,) = of(p.server_events, IncomingRequest)
    assert incoming.message == req
    ans = answer(incoming.message, "hss.ims.example.org", "ims.example.org", ResultCode.SUCCESS)
    p.deliver(p.server.send_answer(ans), p.client)
    (got,) = of(p.client_events, AnswerReceived)
    assert got.request == req and got.answer.hop_by_hop == req.hop_by_hop
    assert p.client.pending_count == 0


def test_hop_by_hop_ids_are_unique() -> None:
    p = Pair()
    p.open()
    ids = {p.client.send_request(lir(), p.now)[0].hop_by_hop for _ in range(1000)}
    assert len(ids) == 1000


def test_end_to_end_ids_carry_the_clock_and_count() -> None:
    ids = EndToEndIds(0x1234ABC, random.Random(3))
    first, second = ids.next(), ids.next()
    assert first >> 20 == 0xABC and second == first + 1


def test_unmatched_answer_is_dropped() -> None:
    p = Pair()
    p.open()
    stray = answer(lir(), "hss", "ims.example.org").encode()
    events = p.client.data_received(stray, p.now)
    assert of(events, ProtocolViolation) and not of(events, AnswerReceived)


def test_request_timeout() -> None:
    p = Pair()
    p.open()
    req, _ = p.client.send_request(lir(), p.now, timeout=2.0)
    assert p.client.next_deadline() == p.now + 2.0
    events = p.client.on_timer(p.now + 2.0)
    assert of(events, RequestTimedOut) == [RequestTimedOut(req)]
    late = answer(req, "hss", "ims.example.org").encode()
    assert of(p.client.data_received(late, p.now + 3), ProtocolViolation)


def test_unnegotiated_application_is_3007() -> None:
    p = Pair()
    p.open()
    ccr = request(Command.CREDIT_CONTROL, Application.CREDIT_CONTROL, lir().avps, hop_by_hop=5)
    events = p.server.data_received(ccr.encode(), p.now)
    (reply,) = sent(events)
    assert reply.result_code == ResultCode.APPLICATION_UNSUPPORTED and reply.is_error
    assert not of(events, IncomingRequest)


def test_malformed_request_is_answered_and_connection_stays_open() -> None:
    p = Pair()
    p.open()
    body = (
        b"".join(a.encode() for a in lir().avps)
        + struct.pack("!II", 9999, (0x40 << 24) | 9)
        + b"x\0\0\0"
    )
    wire = (
        struct.pack(
            "!IIIII", (1 << 24) | (20 + len(body)), (0xC0 << 24) | 302, Application.CX, 77, 88
        )
        + body
    )
    events = p.server.data_received(wire, p.now)
    (reply,) = sent(events)
    assert reply.result_code == ResultCode.AVP_UNSUPPORTED and reply.hop_by_hop == 77
    assert reply.session_id == "s;1"
    assert reply.find(AvpCode.FAILED_AVP) is not None
    assert p.server.is_open
    # and the next good request goes through
    req, ev = p.client.send_request(lir(), p.now)
    assert of(p.server.data_received(ev[0].data, p.now), IncomingRequest)  # type: ignore[union-attr]


def test_framing_error_closes() -> None:
    p = Pair()
    p.open()
    events = p.server.data_received(b"\x02\x00\x00\x14" + b"\0" * 16, p.now)
    assert of(events, Close) and p.server.state is PeerState.CLOSED


def test_dwr_is_answered() -> None:
    p = Pair()
    p.open()
    dwr = request(
        Command.DEVICE_WATCHDOG,
        0,
        [D.make(AvpCode.ORIGIN_HOST, "x"), D.make(AvpCode.ORIGIN_REALM, "y")],
        proxiable=False,
        hop_by_hop=9,
    )
    (dwa,) = sent(p.server.data_received(dwr.encode(), p.now))
    assert (
        dwa.code == Command.DEVICE_WATCHDOG
        and dwa.result_code == ResultCode.SUCCESS
        and dwa.hop_by_hop == 9
    )


def test_watchdog_okay_sends_dwr_and_stays_okay_when_answered() -> None:
    p = Pair()
    p.open()
    assert p.client.next_deadline() == p.now + 30.0
    p.tick(30.0)
    dwrs = [m for m in sent(p.client_events) if m.code == Command.DEVICE_WATCHDOG and m.is_request]
    assert len(dwrs) >= 1
    assert p.client.watchdog is WatchdogState.OKAY
    assert not of(p.client_events, WatchdogChanged)


def test_watchdog_suspect_then_down_with_failover() -> None:
    p = Pair()
    p.open()
    req, _ = p.client.send_request(lir(), p.now, timeout=1000.0)  # never delivered
    now = p.now + 30.0
    events = p.client.on_timer(now)  # sends DWR; the server never sees it
    assert [m.code for m in sent(events)] == [Command.DEVICE_WATCHDOG]
    now += 30.0
    events = p.client.on_timer(now)
    assert of(events, WatchdogChanged) == [WatchdogChanged(WatchdogState.SUSPECT)]
    assert of(events, RequestsOrphaned)[0].requests == (req,)
    assert not p.client.available and p.client.is_open
    now += 30.0
    events = p.client.on_timer(now)
    assert of(events, Close) and of(events, PeerDown)
    assert p.client.state is PeerState.CLOSED


def test_suspect_recovers_on_traffic() -> None:
    p = Pair()
    p.open()
    p.client.on_timer(p.now + 30)
    p.client.on_timer(p.now + 60)
    assert p.client.watchdog is WatchdogState.SUSPECT
    dwr = request(
        Command.DEVICE_WATCHDOG,
        0,
        [D.make(AvpCode.ORIGIN_HOST, "x"), D.make(AvpCode.ORIGIN_REALM, "y")],
        proxiable=False,
    )
    events = p.client.data_received(dwr.encode(), p.now + 61)
    assert WatchdogChanged(WatchdogState.OKAY) in events and p.client.available


def test_reopen_needs_three_dwas() -> None:
    p = Pair(client_cfg=config("scscf.ims.example.org", reopen_dwas=3), reopen=True)
    p.open()
    assert p.client.is_open and p.client.watchdog is WatchdogState.REOPEN
    assert not p.client.available
    # The first DWR went out at once and was answered; two more, one per Tw.
    p.tick(30.0)
    assert p.client.watchdog is WatchdogState.REOPEN
    p.tick(30.0)
    assert p.client.watchdog is WatchdogState.OKAY and p.client.available
    assert WatchdogChanged(WatchdogState.OKAY) in p.client_events


def test_reopen_with_one_dwa_is_immediate() -> None:
    p = Pair(reopen=True)
    p.open()
    assert p.client.available and WatchdogChanged(WatchdogState.OKAY) in p.client_events


def test_reopen_closes_if_peer_stays_silent() -> None:
    client = PeerConnection(config("c", reopen_dwas=3), Role.INITIATOR, 0.0, reopen=True)
    server = PeerConnection(config("s"), Role.RESPONDER, 0.0)
    cea = server.data_received(client.start(0.0)[0].data, 0.0)[0]  # type: ignore[union-attr]
    client.data_received(cea.data, 0.0)  # type: ignore[union-attr]
    assert client.watchdog is WatchdogState.REOPEN
    assert not of(client.on_timer(30.0), Close)
    assert of(client.on_timer(60.0), Close)


def test_dpr_dpa_clean_shutdown() -> None:
    p = Pair()
    p.open()
    req, events = p.client.send_request(lir(), p.now)
    p.client_events.clear()
    p.server_events.clear()
    p.deliver(p.client.disconnect(p.now, DisconnectCause.DO_NOT_WANT_TO_TALK_TO_YOU), p.server)
    (down,) = of(p.server_events, PeerDown)
    assert down.cause is DisconnectCause.DO_NOT_WANT_TO_TALK_TO_YOU
    assert p.server.state is PeerState.CLOSED and p.client.state is PeerState.CLOSED
    assert of(p.client_events, RequestsOrphaned)[0].requests == (req,)
    assert of(p.client_events, Close)


def test_dpa_timeout_closes() -> None:
    p = Pair()
    p.open()
    p.client.disconnect(p.now)
    assert p.client.state is PeerState.CLOSING
    assert of(p.client.on_timer(p.now + 5.0), Close)


def test_send_request_when_not_open_raises() -> None:
    import pytest

    from imsp2pd.diameter.errors import PeerUnavailable

    conn = PeerConnection(config("c"), Role.INITIATOR, 0.0)
    with pytest.raises(PeerUnavailable):
        conn.send_request(lir(), 0.0)


def test_connection_lost_orphans_pending() -> None:
    p = Pair()
    p.open()
    req, _ = p.client.send_request(lir(), p.now)
    events = p.client.connection_lost(p.now)
    assert of(events, RequestsOrphaned)[0].requests == (req,)
    assert of(events, PeerDown) and p.client.connection_lost(p.now) == []


def test_cea_failure_closes_initiator() -> None:
    client = PeerConnection(config("c"), Role.INITIATOR, 0.0)
    (cer,) = sent(client.start(0.0))
    cea = answer(cer, "s", "r", ResultCode.UNKNOWN_PEER)
    events = client.data_received(cea.encode(), 0.0)
    assert of(events, Close) and "3010" in of(events, PeerDown)[0].reason


def test_duplicate_cache() -> None:
    cache = DuplicateCache(lifetime=10.0)
    req = Message(302, Application.CX, 0xC0, 1, 42, (D.make(AvpCode.ORIGIN_HOST, "scscf"),))
    assert cache.check(req, 0.0) == (False, None)
    assert cache.check(req, 1.0) == (True, None)  # still being processed
    ans = answer(req, "hss", "r")
    cache.answered(req, ans.encode())
    retransmitted = Message(302, Application.CX, 0xD0, 99, 42, req.avps)
    dup, again = cache.check(retransmitted, 2.0)
    assert dup and again is not None
    resent = decode_message(again, D)
    assert resent.hop_by_hop == 99 and resent.avps == ans.avps
    assert resent.end_to_end == ans.end_to_end == 42
    assert cache.check(req, 11.0) == (False, None)  # expired, seen anew
    other = Message(302, Application.CX, 0xC0, 1, 42, (Avp(AvpCode.ORIGIN_HOST, "icscf"),))
    assert cache.check(other, 11.0) == (False, None)
