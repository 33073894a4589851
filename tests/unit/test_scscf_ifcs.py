"""The S-CSCF's registration keeps its chosen ServiceProfile and compiled iFCs
until its User-Data (or IMPU) changes; the walk skips an AS whose ServerName
is not a URI."""

from __future__ import annotations

from imsp2pd.ims.ifc import RegistrationType, all_matches, facts_from_request, request_view
from imsp2pd.ims.profile import (
    ApplicationServer,
    IMSSubscription,
    InitialFilterCriteria,
    PublicIdentity,
    ServiceProfile,
    SessionCase,
    Spt,
    TriggerPoint,
    to_xml,
)
from imsp2pd.ims.scscf import Binding, Registration, Scscf, ScscfConfig
from imsp2pd.sip.message import Request
from imsp2pd.sip.parser import parse_message
from imsp2pd.sip.proxy import LocalAddress, SipCore, Source, Transmit

ALICE = "sip:alice@ims.example.org"


def data(*ifcs: InitialFilterCriteria, impus: tuple[str, ...] = (ALICE,)) -> bytes:
    profiles = tuple(ServiceProfile((PublicIdentity(i),), ifcs) for i in impus)
    return to_xml(IMSSubscription("alice@ims.example.org", profiles))


def on(method: str, server: str, priority: int = 0) -> InitialFilterCriteria:
    return InitialFilterCriteria(
        priority, ApplicationServer(server), TriggerPoint(True, (Spt(method=method),))
    )


def register() -> Request:
    req = parse_message(
        b"REGISTER sip:ims.example.org SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:4060;branch=z9hG4bKr\r\n"
        b"From: <sip:alice@ims.example.org>;tag=1\r\nTo: <sip:alice@ims.example.org>\r\n"
        b"Call-ID: r1\r\nCSeq: 2 REGISTER\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(req, Request)
    return req


def test_the_profile_is_chosen_again_when_the_user_data_changes() -> None:
    reg = Registration(ALICE, "alice@ims.example.org", (ALICE,))
    assert reg.profile() is None and reg.compiled_ifcs().ifcs == ()
    reg.user_data = data(on("REGISTER", "sip:as1"))
    first = reg.profile()
    assert first is not None and reg.profile() is first
    assert reg.compiled_ifcs().ifcs is first.ifcs
    facts = request_view(register(), SessionCase.ORIGINATING, True, RegistrationType.INITIAL)
    assert [f.application_server.server_name for f in reg.compiled_ifcs().all_matches(facts)] == [
        "sip:as1"
    ]
    reg.user_data = data(on("REGISTER", "sip:as2"))  # a new profile
    assert [f.application_server.server_name for f in reg.compiled_ifcs().all_matches(facts)] == [
        "sip:as2"
    ]
    reg.user_data = b"<not xml"
    assert reg.profile() is None and reg.compiled_ifcs().all_matches(facts) == []
    # the profile of the IMPU, picked again when the IMPU changes
    bob = "sip:bob@ims.example.org"
    reg.user_data = data(on("REGISTER", "sip:as3"), impus=(ALICE, bob))
    reg.impu = bob
    chosen = reg.profile()
    assert chosen is not None and chosen.public_identities[0].identity == bob
    careful = all_matches(
        reg.ifcs(),
        facts_from_request(
            register(),
            session_case=SessionCase.ORIGINATING,
            registration_type=RegistrationType.INITIAL,
        ),
    )
    assert reg.compiled_ifcs().all_matches(facts) == careful


def test_the_walk_skips_an_as_whose_server_name_is_not_a_uri() -> None:
    now = 1000.0
    core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 6060)])
    scscf = Scscf(core, ScscfConfig(as_transport="UDP"), lambda m: None, clock=lambda: now)  # type: ignore[arg-type,return-value]
    reg = Registration(ALICE, "alice@ims.example.org", (ALICE,))
    reg.user_data = data(on("MESSAGE", "not a <uri>", 0), on("MESSAGE", "sip:127.0.0.1:7060", 1))
    reg.bindings["sip:alice@127.0.0.5:5060"] = Binding("sip:alice@127.0.0.5:5060", now + 60)
    scscf.registrar.put(reg)
    req = parse_message(
        b"MESSAGE sip:content@ims.example.org SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:4060;branch=z9hG4bKm1\r\n"
        b"Route: <sip:orig@127.0.0.1:6060;lr>\r\nRoute: <sip:x@10.0.0.1;lr>\r\n"
        b"P-Asserted-Identity: <sip:alice@ims.example.org>\r\n"
        b"From: <sip:alice@ims.example.org>;tag=a\r\nTo: <sip:content@ims.example.org>\r\n"
        b"Call-ID: m1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n\r\n"
    )
    sent: list[Transmit] = []
    queue = list(core.receive(req, Source("UDP", "127.0.0.1", 4060), now))
    for _ in range(2):  # twice: the AS hops are worked out once, then kept
        while queue:
            item = queue.pop(0)
            if isinstance(item, Transmit):
                sent.append(item)
            else:
                queue.extend(scscf.on_event(item, now))
        queue = list(
            core.receive(
                req.replace_header("Via", "SIP/2.0/UDP 127.0.0.1:4060;branch=z9hG4bKm2"),
                Source("UDP", "127.0.0.1", 4060),
                now,
            )
        )
    assert [(t.target.host, t.target.port, t.target.transport) for t in sent] == [
        ("127.0.0.1", 7060, "UDP")
    ] * 2
    for t in sent:
        routes = t.message.get_all("Route")
        assert routes[0] == "<sip:127.0.0.1:7060;lr>" and routes[2:] == ["<sip:x@10.0.0.1;lr>"]
        assert (
            routes[1].startswith("<sip:odi-")
            and len(routes[1]) == len("<sip:odi-@127.0.0.1:6060;lr>") + 16
        )
        assert t.message.headers[-3:] == tuple(("Route", r) for r in routes)
