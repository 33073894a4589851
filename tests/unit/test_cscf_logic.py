"""The pure parts of the CSCFs: P-CSCF header rules and UE table, I-CSCF
result mapping, S-CSCF registrar state and REGISTER answers."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed

from imsp2pd.diameter import cx
from imsp2pd.diameter.codes import AvpCode, CxResult, TgppAvp
from imsp2pd.diameter.dictionary import default_dictionary
from imsp2pd.diameter.message import Message as DiameterMessage
from imsp2pd.ims.icscf import (
    LAB_SCSCFS,
    Icscf,
    IcscfConfig,
    ScscfEntry,
    ServerCapabilities,
    choose_scscf,
    lir_status,
    scscf_entries,
    server_capabilities,
    target_of,
    uar_status,
)
from imsp2pd.ims.pcscf import (
    UNTRUSTED_FROM_UE,
    Pcscf,
    PcscfConfig,
    UeBinding,
    UeTable,
    asserted_identity,
    charging_vector,
    sanitize_from_ue,
)
from imsp2pd.ims.scscf import (
    Binding,
    Registrar,
    Registration,
    ScscfConfig,
    odi_route,
    parse_odi,
    register_response_headers,
    requested_expires,
)
from imsp2pd.sip.message import Request, make_response
from imsp2pd.sip.parser import parse_message
from imsp2pd.sip.proxy import LocalAddress, Output, SipCore, Source, Target, Transmit
from imsp2pd.sip.uri import parse_uri


def req(extra: str = "", method: str = "MESSAGE") -> Request:
    text = (
        f"{method} sip:content@ims.example.org SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.5:5060;branch=z9hG4bK1\r\n"
        "From: <sip:alice@ims.example.org>;tag=a\r\nTo: <sip:alice@ims.example.org>\r\n"
        f"Call-ID: c\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def test_sanitize_removes_every_trusted_header() -> None:
    r = req(
        "P-Asserted-Identity: <sip:carol@ims.example.org>\r\nP-Charging-Vector: icid-value=x\r\n"
        "P-Visited-Network-ID: evil\r\nPath: <sip:x;lr>\r\nService-Route: <sip:y;lr>\r\n"
        "P-Preferred-Identity: <sip:alice@ims.example.org>\r\nX-Keep: 1\r\n"
    )
    out = sanitize_from_ue(r)
    names = {n for n, _ in out.headers}
    assert not names & {
        "P-Asserted-Identity",
        "P-Charging-Vector",
        "P-Visited-Network-ID",
        "Path",
        "Service-Route",
    }
    assert out.get("P-Preferred-Identity") and out.get("X-Keep") == "1"


def test_asserted_identity_prefers_only_own_identities() -> None:
    mine = ("sip:alice@ims.example.org", "tel:+15550001")
    assert asserted_identity(["<tel:+15550001>"], mine) == "tel:+15550001"
    assert asserted_identity(["<sip:carol@ims.example.org>"], mine) == "sip:alice@ims.example.org"
    assert asserted_identity(["garbage <"], mine) == "sip:alice@ims.example.org"
    assert asserted_identity([], ()) is None


def test_charging_vector_icids_are_fresh() -> None:
    a, b = charging_vector("127.0.0.1"), charging_vector("127.0.0.1")
    assert a != b and a.startswith("icid-value=") and a.endswith(";icid-generated-at=127.0.0.1")


def test_ue_table_by_flow_contact_expiry_and_flow_loss() -> None:
    t = UeTable()
    tcp = Source("TCP", "127.0.0.9", 50000, flow=3)
    udp = Source("UDP", "127.0.0.8", 5060)
    t.put(
        UeBinding(
            "sip:alice@127.0.0.9:50000;transport=tcp",
            tcp,
            ("sip:alice@ims.example.org",),
            ("<sip:orig@s;lr>",),
            100.0,
        )
    )
    t.put(UeBinding("sip:bob@127.0.0.8", udp, ("sip:bob@ims.example.org",), (), 100.0))
    assert (
        t.for_source(Source("TCP", "10.0.0.1", 1, flow=3), 50.0) is not None
    )  # the flow names the UE
    assert t.for_source(udp, 50.0) is not None and t.for_source(udp, 100.0) is None
    assert t.for_contact("sip:bob@127.0.0.8:5060", 50.0) is not None
    t.drop_flow(3)
    assert (
        t.for_source(tcp, 50.0) is None and t.for_contact("sip:alice@127.0.0.9:50000", 50.0) is None
    )
    t.remove_contact("sip:bob@127.0.0.8")
    assert t.by_flow == {} and t.by_contact == {}


def test_icscf_result_mapping() -> None:
    assert uar_status(cx.Outcome(CxResult.FIRST_REGISTRATION, True)) is None
    assert uar_status(cx.Outcome(CxResult.ERROR_USER_UNKNOWN, True)) == (403, "Forbidden")
    assert uar_status(cx.Outcome(CxResult.ERROR_ROAMING_NOT_ALLOWED, True))[0] == 403  # type: ignore[index]
    assert uar_status(cx.Outcome(5003, False))[0] == 403  # type: ignore[index]
    assert uar_status(cx.Outcome(3002, False))[0] == 480  # type: ignore[index]
    assert lir_status(cx.Outcome(2001, False)) is None
    assert lir_status(cx.Outcome(CxResult.ERROR_USER_UNKNOWN, True))[0] == 404  # type: ignore[index]
    assert lir_status(cx.Outcome(CxResult.ERROR_IDENTITY_NOT_REGISTERED, True))[0] == 480  # type: ignore[index]
    names = ServerCapabilities(names=("sip:a", "sip:b"))
    assert choose_scscf(None, names) == "sip:a" and choose_scscf("sip:x", names) == "sip:x"
    assert choose_scscf(None, None) is None
    assert target_of("sip:127.0.0.1:6060;transport=tcp") == Target("TCP", "127.0.0.1", 6060)


def test_requested_expires_rules() -> None:
    r = req("Contact: <sip:a@h1>;expires=30, <sip:a@h2>\r\nExpires: 120\r\n", "REGISTER")
    assert requested_expires(r, 600) == {"sip:a@h1": 30, "sip:a@h2": 120}
    r2 = req("Contact: <sip:a@h1>\r\n", "REGISTER")
    assert requested_expires(r2, 600) == {"sip:a@h1": 600}


def test_registrar_index_contacts_and_expiry() -> None:
    reg = Registration(
        "sip:alice@ims.example.org",
        "alice@ims.example.org",
        ("sip:alice@ims.example.org", "tel:+15550001"),
    )
    reg.bindings["sip:a@h1"] = Binding("sip:a@h1", 100.0)
    reg.bindings["sip:a@h2"] = Binding("sip:a@h2", 200.0, ("<sip:term@p;lr>",))
    r = Registrar()
    r.put(reg)
    assert (
        r.find("tel:+15550001") is reg
        and r.find("sip:alice@IMS.Example.org") is reg
        and r.find("sip:ALICE@ims.example.org") is None
    )
    assert [b.contact for b in r.contacts("sip:alice@ims.example.org", 50.0)] == [
        "sip:a@h2",
        "sip:a@h1",
    ]
    assert r.next_expiry() == 100.0
    assert r.expired(150.0) == [] and list(reg.bindings) == ["sip:a@h2"]
    assert r.expired(250.0) == [reg]
    assert Registration.from_doc(reg.to_doc()).impu == reg.impu
    r.remove(reg.impu)
    assert r.find("tel:+15550001") is None


def test_register_200_headers_and_odi() -> None:
    reg = Registration(
        "sip:alice@ims.example.org", "alice@ims.example.org", ("sip:alice@ims.example.org",)
    )
    reg.bindings["sip:a@h1"] = Binding("sip:a@h1", 700.0)
    r = req("Path: <sip:term@127.0.0.1:4060;lr>\r\nContact: <sip:a@h1>\r\n", "REGISTER")
    headers = dict(register_response_headers(reg, r, ScscfConfig(), 100.0))
    assert headers["Contact"] == "<sip:a@h1>;expires=600"
    assert headers["Path"] == "<sip:term@127.0.0.1:4060;lr>"
    assert headers["Service-Route"] == "<sip:orig@127.0.0.1:6060;lr>"
    assert headers["P-Associated-URI"] == "<sip:alice@ims.example.org>"
    route = odi_route("127.0.0.1", 6060, "abc123")
    assert (
        parse_odi(parse_uri(route[1:-1])) == "abc123" and parse_odi(parse_uri("sip:orig@h")) is None
    )


def _pcscf_with_ue() -> tuple[Pcscf, SipCore, Source]:
    core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 4060)])
    pcscf = Pcscf(core, PcscfConfig(), clock=lambda: 0.0)
    ue = Source("UDP", "127.0.0.5", 5060)
    pcscf.ues.put(
        UeBinding(
            "sip:alice@127.0.0.5:5060",
            ue,
            ("sip:alice@ims.example.org",),
            ("<sip:orig@127.0.0.1:6060;lr>",),
            3600.0,
        )
    )
    return pcscf, core, ue


def _from_core(method: str, body: str = "", branch: str = "z9hG4bKscscf1") -> Request:
    text = (
        f"{method} sip:alice@127.0.0.5:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:6060;branch={branch}\r\n"
        "Route: <sip:term@127.0.0.1:4060;lr>\r\n"
        "From: <sip:as@ims.example.org>;tag=as\r\nTo: <sip:alice@ims.example.org>\r\n"
        f"Call-ID: t1\r\nCSeq: 1 {method}\r\nMax-Forwards: 69\r\n"
        f"Contact: <sip:as@127.0.0.1:7060>\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


FORGED = (
    ("P-Asserted-Identity", "<sip:operator@ims.example.org>"),
    ("P-Charging-Vector", "icid-value=forged"),
    ("P-Associated-URI", "<sip:carol@ims.example.org>"),
    ("Service-Route", "<sip:evil;lr>"),
    ("X-Keep", "1"),
)


def test_pcscf_strips_trusted_headers_from_ue_responses() -> None:
    """RFC 3325 §5: a UE cannot assert an identity in a response either,
    provisional or final; what it may say (X-Keep) passes."""
    pcscf, core, ue = _pcscf_with_ue()
    scscf = Source("UDP", "127.0.0.1", 6060)
    for method, statuses in (("MESSAGE", (200,)), ("INVITE", (180, 200))):
        (event,) = [
            e for e in core.receive(_from_core(method), scscf, 0.0) if not isinstance(e, Transmit)
        ]
        (down,) = pcscf.on_event(event, 0.0)
        assert isinstance(down, Transmit) and down.target == Target("UDP", "127.0.0.5", 5060)
        for status in statuses:
            resp = make_response(down.message, status, to_tag="ue", extra=FORGED)
            (up,) = core.receive(resp, ue, 0.1)
            assert isinstance(up, Transmit) and up.target.port == 6060
            assert up.message.status == status and up.message.get("X-Keep") == "1"
            # only the identity the network asserts for the UE (TS 24.229 §5.2.6.4)
            assert up.message.get_all("P-Asserted-Identity") == ["<sip:alice@ims.example.org>"]
            names = {n for n, _ in up.message.headers} - {"P-Asserted-Identity"}
            assert not names & set(UNTRUSTED_FROM_UE)


def test_pcscf_asserts_the_preferred_or_called_identity_on_ue_responses() -> None:
    """The UE may prefer one of its identities (P-Preferred-Identity, then
    removed); without one, the identity it was called on is asserted; a
    preferred identity that is not the UE's is ignored; a 4xx asserts none."""
    pcscf, core, ue = _pcscf_with_ue()
    pcscf.ues.put(
        UeBinding(
            "sip:alice@127.0.0.5:5060",
            ue,
            ("sip:alice@ims.example.org", "sip:alice.work@ims.example.org", "tel:+15551234"),
            ("<sip:orig@127.0.0.1:6060;lr>",),
            3600.0,
        )
    )
    scscf = Source("UDP", "127.0.0.1", 6060)
    cases = (
        (200, (("P-Preferred-Identity", "<tel:+15551234>"),), ["<tel:+15551234>"]),
        (200, (), ["<sip:alice.work@ims.example.org>"]),
        (
            200,
            (("P-Preferred-Identity", "<sip:bob@ims.example.org>"),),
            ["<sip:alice.work@ims.example.org>"],
        ),
        (486, (), []),
    )
    for i, (status, extra, asserted) in enumerate(cases):
        req = _from_core("MESSAGE", branch=f"z9hG4bKcalled{i}").append_header(
            "P-Called-Party-ID", "<sip:alice.work@ims.example.org>"
        )
        (event,) = [e for e in core.receive(req, scscf, 0.0) if not isinstance(e, Transmit)]
        (down,) = pcscf.on_event(event, 0.0)
        resp = make_response(down.message, status, to_tag="ue", extra=extra)
        (up,) = core.receive(resp, ue, 0.1)
        assert up.message.get_all("P-Asserted-Identity") == asserted, (status, extra)
        assert up.message.get("P-Preferred-Identity") is None


def test_pcscf_keeps_the_network_headers_of_register_responses() -> None:
    """The 200 to a REGISTER comes from the network, not a UE: its
    Service-Route and P-Associated-URI reach the UE."""
    pcscf, core, ue = _pcscf_with_ue()
    text = (
        "REGISTER sip:ims.example.org SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.5:5060;branch=z9hG4bKreg1\r\n"
        "From: <sip:alice@ims.example.org>;tag=r\r\nTo: <sip:alice@ims.example.org>\r\n"
        "Call-ID: r1\r\nCSeq: 2 REGISTER\r\nMax-Forwards: 70\r\nExpires: 600\r\n"
        "Contact: <sip:alice@127.0.0.5:5060>\r\nContent-Length: 0\r\n\r\n"
    )
    reg = parse_message(text.encode())
    (event,) = core.receive(reg, ue, 0.0)
    (down,) = pcscf.on_event(event, 0.0)
    extra = (
        ("Service-Route", "<sip:orig@127.0.0.1:6060;lr>"),
        ("P-Associated-URI", "<sip:alice@ims.example.org>"),
        ("Contact", "<sip:alice@127.0.0.5:5060>;expires=600"),
    )
    resp = make_response(down.message, 200, to_tag="s", extra=extra)
    (branch,) = core.receive(resp, Source("UDP", "127.0.0.1", 5060), 0.1)
    (up,) = pcscf.on_event(branch, 0.1)
    assert up.message.get("Service-Route") and up.message.get("P-Associated-URI")


def test_pcscf_sends_a_large_request_to_a_udp_ue_over_tcp() -> None:
    """The UE registered over UDP, but a 2 kB MESSAGE towards it goes over
    TCP to the same address (RFC 3261 §18.1.1); a small one stays on UDP."""
    pcscf, core, ue = _pcscf_with_ue()
    scscf = Source("UDP", "127.0.0.1", 6060)
    big = _from_core("MESSAGE", body="x" * 2000)
    (event,) = [e for e in core.receive(big, scscf, 0.0) if not isinstance(e, Transmit)]
    (down,) = pcscf.on_event(event, 0.0)
    assert down.target == Target("TCP", "127.0.0.5", 5060)
    assert down.message.top_via.transport == "TCP"
    (event,) = core.receive(_from_core("MESSAGE", branch="z9hG4bKsmall"), scscf, 0.1)
    (down,) = pcscf.on_event(event, 0.1)
    assert down.target == Target("UDP", "127.0.0.5", 5060)


SCSCFS = (
    ScscfEntry("sip:s1.ims.example.org:6060", frozenset({1})),
    ScscfEntry("sip:s2.ims.example.org:6060", frozenset({1, 2, 10})),
    ScscfEntry("sip:s3.ims.example.org:6060", frozenset({1, 2, 10, 11})),
    ScscfEntry("sip:s4.ims.example.org:6060", frozenset({2, 10, 11, 12})),
)


def test_scscf_selection_by_capabilities() -> None:
    """TS 29.228 §6.7: every mandatory capability, then the most optional
    ones; ties to a name the HSS gave, then to configuration order; the
    HSS's names when no configured S-CSCF qualifies."""

    def pick(mandatory: set[int], optional: set[int], names: tuple[str, ...] = ()) -> str | None:
        caps = ServerCapabilities(frozenset(mandatory), frozenset(optional), names)
        return choose_scscf(None, caps, SCSCFS)

    assert pick({1}, set()) == "sip:s1.ims.example.org:6060"  # first that qualifies
    assert pick({1}, {10}) == "sip:s2.ims.example.org:6060"
    assert pick({1}, {10, 11}) == "sip:s3.ims.example.org:6060"
    assert pick(set(), {11, 12}) == "sip:s4.ims.example.org:6060"  # s4 lacks 1: not mandatory
    assert pick({1, 12}, {2}) is None  # nobody has both mandatory ones
    assert pick({1, 12}, {2}, ("sip:fallback:6060",)) == "sip:fallback:6060"
    # a tie on optional capabilities goes to one the HSS named
    assert pick({1}, {2}, ("sip:S3.ims.example.org:6060",)) == "sip:s3.ims.example.org:6060"
    # only names, no capabilities: the HSS's choice stands
    assert pick(set(), set(), ("sip:named:6060",)) == "sip:named:6060"
    # empty Server-Capabilities: any configured S-CSCF
    assert pick(set(), set()) == "sip:s1.ims.example.org:6060"
    # a Server-Name wins over everything
    caps = ServerCapabilities(frozenset({1}), frozenset(), ())
    assert choose_scscf("sip:assigned:6060", caps, SCSCFS) == "sip:assigned:6060"
    # the lab default: its single S-CSCF, which offers no capability
    assert choose_scscf(None, ServerCapabilities(optional=frozenset({5}))) == (LAB_SCSCFS[0].name)
    assert choose_scscf(None, ServerCapabilities(mandatory=frozenset({5}))) is None


def test_server_capabilities_read_from_a_cx_answer() -> None:
    d = default_dictionary()
    group = d.group(
        TgppAvp.SERVER_CAPABILITIES,
        d.make(TgppAvp.MANDATORY_CAPABILITY, 1),
        d.make(TgppAvp.OPTIONAL_CAPABILITY, 10),
        d.make(TgppAvp.OPTIONAL_CAPABILITY, 11),
        d.make(TgppAvp.SERVER_NAME, "sip:s9:6060"),
    )
    uaa = DiameterMessage(300, 16777216, 0, avps=(group,))
    assert server_capabilities(uaa) == ServerCapabilities(
        frozenset({1}), frozenset({10, 11}), ("sip:s9:6060",)
    )
    assert server_capabilities(DiameterMessage(300, 16777216, 0)) is None


def test_scscf_config_tables() -> None:
    entries = scscf_entries(
        [{"name": "sip:127.0.0.1:6060", "capabilities": [1, 2]}, {"name": "sip:h"}]
    )
    assert entries == (
        ScscfEntry("sip:127.0.0.1:6060", frozenset({1, 2})),
        ScscfEntry("sip:h", frozenset()),
    )
    for bad in (
        [{"capabilities": [1]}],
        [{"name": "tel:+123"}],
        [{"name": "sip:h", "capabilities": [-1]}],
        [{"name": "sip:h", "capabilities": "1"}],
        [{"name": "sip:h", "typo": 1}],
    ):
        try:
            scscf_entries(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def _uaa(*caps: tuple[int, int | str]) -> DiameterMessage:
    d = default_dictionary()
    result = d.group(
        AvpCode.EXPERIMENTAL_RESULT,
        d.make(AvpCode.VENDOR_ID, 10415),
        d.make(AvpCode.EXPERIMENTAL_RESULT_CODE, int(CxResult.FIRST_REGISTRATION)),
    )
    group = d.group(TgppAvp.SERVER_CAPABILITIES, *(d.make(c, v) for c, v in caps))
    return DiameterMessage(300, 16777216, 0, avps=(result, group))


def test_icscf_forwards_a_register_to_the_s_cscf_its_capabilities_select() -> None:
    sent: list[DiameterMessage] = []

    def run(answer: DiameterMessage) -> list[Output]:
        core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 5060)])
        out: list[Output] = []

        class Node:
            def submit(self, outputs: list[Output]) -> None:
                out.extend(outputs)

        def cx_request(m: DiameterMessage) -> Deferred[DiameterMessage]:
            sent.append(m)
            return succeed(answer)

        icscf = Icscf(core, IcscfConfig(scscfs=SCSCFS[1:]), cx_request, clock=lambda: 0.0)
        icscf.node = Node()
        reg = req(
            "Contact: <sip:alice@127.0.0.5>\r\nExpires: 600\r\nMax-Forwards: 69\r\n", "REGISTER"
        )
        (event,) = core.receive(reg, Source("UDP", "127.0.0.1", 4060), 0.0)
        assert icscf.on_event(event, 0.0) == []
        return out

    (fwd,) = run(_uaa((TgppAvp.MANDATORY_CAPABILITY, 11), (TgppAvp.OPTIONAL_CAPABILITY, 12)))
    assert isinstance(fwd, Transmit) and fwd.target.host == "s4.ims.example.org"
    (refused,) = run(_uaa((TgppAvp.MANDATORY_CAPABILITY, 99)))
    assert isinstance(refused, Transmit) and refused.message.status == 600
    assert len(sent) == 2
