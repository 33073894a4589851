"""iFC evaluation: every SPT kind, CNF/DNF, negation, priority, profile
part, session case, registration type and DefaultHandling."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imsp2pd.ims.ifc import (
    FailureAction,
    RegistrationType,
    RequestFacts,
    all_matches,
    facts_from_request,
    next_match,
    on_as_failure,
    spt_matches,
    trigger_matches,
)
from imsp2pd.ims.profile import (
    ApplicationServer,
    DefaultHandling,
    InitialFilterCriteria,
    SessionCase,
    Spt,
    TriggerPoint,
    from_xml,
)
from imsp2pd.sip.message import Request
from imsp2pd.sip.parser import parse_message

PSI = "sip:content@ims.example.org"
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nm=audio 4000 RTP/AVP 0\r\nm=video 4002 RTP/AVP 31\r\n"


def facts(**kw) -> RequestFacts:  # type: ignore[no-untyped-def]
    base = dict(
        method="MESSAGE",
        request_uri=PSI + ";doi=10.5555/abc",
        request_aor=PSI,
        headers=(
            ("Content-Type", "application/vnd.imsp2p.purchase+json"),
            ("P-Asserted-Identity", "<sip:alice@ims.example.org>"),
        ),
        sdp=None,
        session_case=SessionCase.ORIGINATING,
    )
    base.update(kw)
    return RequestFacts(**base)  # type: ignore[arg-type]


def ifc(
    priority: int,
    *spts: Spt,
    cnf: bool = True,
    name: str = "sip:127.0.0.1:7060",
    part: int | None = None,
    handling: DefaultHandling = DefaultHandling.SESSION_CONTINUED,
) -> InitialFilterCriteria:
    return InitialFilterCriteria(
        priority=priority,
        application_server=ApplicationServer(name, handling),
        trigger=TriggerPoint(cnf, spts) if spts else None,
        profile_part=part,
    )


def test_method_spt_and_registration_type() -> None:
    assert spt_matches(Spt(method="MESSAGE"), facts())
    assert spt_matches(Spt(method="message"), facts())
    assert not spt_matches(Spt(method="PUBLISH"), facts())
    reg = Spt(method="REGISTER", registration_types=(0, 2))
    assert spt_matches(reg, facts(method="REGISTER", registration_type=RegistrationType.INITIAL))
    assert not spt_matches(
        reg, facts(method="REGISTER", registration_type=RegistrationType.RE_REGISTRATION)
    )
    assert not spt_matches(reg, facts(method="REGISTER"))
    assert spt_matches(
        Spt(method="REGISTER"),
        facts(method="REGISTER", registration_type=RegistrationType.RE_REGISTRATION),
    )


def test_request_uri_spt_is_a_whole_match_on_uri_or_aor() -> None:
    assert spt_matches(Spt(request_uri=PSI), facts())  # matches the AOR
    assert spt_matches(Spt(request_uri=r"sip:content@ims\.example\.org;doi=.*"), facts())
    assert not spt_matches(Spt(request_uri="sip:content@ims.example"), facts())
    assert not spt_matches(
        Spt(request_uri=PSI), facts(request_uri=PSI + ".evil.com", request_aor=PSI + ".evil.com")
    )


def test_sip_header_spt_presence_and_content() -> None:
    assert spt_matches(Spt(header="Content-Type"), facts())
    assert spt_matches(Spt(header="content-type", header_content="purchase"), facts())
    assert not spt_matches(Spt(header="Content-Type", header_content="^text/"), facts())
    assert not spt_matches(Spt(header="Event"), facts())
    # a negated header SPT matches when the header is absent
    assert spt_matches(Spt(header="Event", negated=True), facts())


def test_session_case_spt() -> None:
    assert spt_matches(Spt(session_case=SessionCase.ORIGINATING), facts())
    assert not spt_matches(Spt(session_case=SessionCase.TERMINATING_REGISTERED), facts())
    assert spt_matches(
        Spt(session_case=SessionCase.ORIGINATING, negated=True),
        facts(session_case=SessionCase.TERMINATING_UNREGISTERED),
    )


def test_session_description_spt() -> None:
    f = facts(sdp=SDP)
    assert spt_matches(Spt(sdp_line="m"), f)
    assert spt_matches(Spt(sdp_line="m", sdp_content="video"), f)
    assert not spt_matches(Spt(sdp_line="m", sdp_content="application"), f)
    assert not spt_matches(Spt(sdp_line="m"), facts())
    assert spt_matches(Spt(sdp_line="m", negated=True), facts())


def test_bad_regex_never_matches_and_never_raises() -> None:
    assert not spt_matches(Spt(request_uri="sip:(unclosed"), facts())
    assert not spt_matches(Spt(header="X", header_content="[z-a]"), facts(headers=(("X", "1"),)))
    assert spt_matches(Spt(request_uri="sip:(unclosed", negated=True), facts())


def test_cnf_and_dnf() -> None:
    # (Method=MESSAGE or Method=PUBLISH) and (R-URI=PSI) and SessionCase=0
    spts = (
        Spt(group=(0,), method="MESSAGE"),
        Spt(group=(0,), method="PUBLISH"),
        Spt(group=(1,), request_uri=PSI),
        Spt(group=(2,), session_case=SessionCase.ORIGINATING),
    )
    cnf = TriggerPoint(True, spts)
    assert trigger_matches(cnf, facts())
    assert trigger_matches(cnf, facts(method="PUBLISH"))
    assert not trigger_matches(cnf, facts(method="SUBSCRIBE"))
    assert not trigger_matches(cnf, facts(session_case=SessionCase.TERMINATING_REGISTERED))
    # DNF: (MESSAGE and PSI) or (PUBLISH and terminating)
    dnf = TriggerPoint(
        False,
        (
            Spt(group=(0,), method="MESSAGE"),
            Spt(group=(0, 1), request_uri=PSI),  # one SPT in two groups
            Spt(group=(1,), method="PUBLISH"),
        ),
    )
    assert trigger_matches(dnf, facts())
    assert trigger_matches(dnf, facts(method="PUBLISH"))
    assert not trigger_matches(
        dnf, facts(method="PUBLISH", request_uri="sip:x@y", request_aor="sip:x@y")
    )
    assert trigger_matches(None, facts()) and trigger_matches(TriggerPoint(True, ()), facts())


def test_priority_order_resume_and_profile_part() -> None:
    a = ifc(20, Spt(method="MESSAGE"), name="sip:as-b")
    b = ifc(10, Spt(method="MESSAGE"), name="sip:as-a")
    c = ifc(30, Spt(method="PUBLISH"), name="sip:as-c")
    d = ifc(40, name="sip:as-d", part=1)  # unregistered part only, unconditional
    pool = [a, b, c, d]
    assert next_match(pool, facts()) is b
    assert next_match(pool, facts(), after=10) is a
    assert next_match(pool, facts(), after=20) is None
    assert next_match(pool, facts(registered=False), after=20) is d
    assert all_matches(pool, facts()) == [b, a]
    assert all_matches(pool, facts(registered=False)) == [b, a, d]


def test_default_handling() -> None:
    assert on_as_failure(ifc(1)) is FailureAction.CONTINUE
    assert (
        on_as_failure(ifc(1, handling=DefaultHandling.SESSION_TERMINATED))
        is FailureAction.TERMINATE
    )


def test_lab_purchase_ifc_from_user_data_xml() -> None:
    xml = b"""<?xml version="1.0" encoding="UTF-8"?><IMSSubscription><PrivateID>alice@ims.example.org</PrivateID>
    <ServiceProfile><PublicIdentity><Identity>sip:alice@ims.example.org</Identity></PublicIdentity>
    <InitialFilterCriteria><Priority>0</Priority><TriggerPoint><ConditionTypeCNF>1</ConditionTypeCNF>
    <SPT><ConditionNegated>0</ConditionNegated><Group>0</Group><Method>MESSAGE</Method></SPT>
    <SPT><ConditionNegated>0</ConditionNegated><Group>0</Group><Method>PUBLISH</Method></SPT>
    <SPT><ConditionNegated>0</ConditionNegated><Group>0</Group><Method>SUBSCRIBE</Method></SPT>
    <SPT><ConditionNegated>0</ConditionNegated><Group>1</Group><RequestURI>sip:content@ims.example.org</RequestURI></SPT>
    <SPT><ConditionNegated>0</ConditionNegated><Group>2</Group><SessionCase>0</SessionCase></SPT>
    </TriggerPoint><ApplicationServer><ServerName>sip:127.0.0.1:7060</ServerName><DefaultHandling>1</DefaultHandling></ApplicationServer>
    </InitialFilterCriteria></ServiceProfile></IMSSubscription>"""
    ifcs = from_xml(xml).profiles[0].ifcs
    req = parse_message(
        b"MESSAGE sip:content@ims.example.org SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:4060;branch=z9hG4bKx\r\n"
        b"From: <sip:alice@ims.example.org>;tag=1\r\nTo: <sip:content@ims.example.org>\r\nCall-ID: c\r\n"
        b"CSeq: 1 MESSAGE\r\nContent-Type: application/sdp\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(req, Request)
    f = facts_from_request(req, session_case=SessionCase.ORIGINATING)
    assert f.sdp == "" and f.request_aor == "sip:content@ims.example.org"
    match = next_match(ifcs, f)
    assert match is not None and match.application_server.server_name == "sip:127.0.0.1:7060"
    assert (
        next_match(ifcs, facts_from_request(req, session_case=SessionCase.TERMINATING_REGISTERED))
        is None
    )


# -- CNF/DNF against a brute-force reading of the definition --------------


@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True),
            st.booleans(),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
)
def test_normal_forms_follow_their_definition(
    spec: list[tuple[list[int], bool, bool]], cnf: bool
) -> None:
    # each SPT tests the method; whether it matches is decided by `hit`
    spts = []
    truth = []
    for i, (groups, hit, negated) in enumerate(spec):
        spts.append(Spt(group=tuple(groups), negated=negated, method="MESSAGE" if hit else f"X{i}"))
        truth.append(hit != negated)
    tp = TriggerPoint(cnf, tuple(spts))
    groups = sorted({g for gs, _, _ in spec for g in gs})
    members = {g: [truth[i] for i, (gs, _, _) in enumerate(spec) if g in gs] for g in groups}
    expected = (
        all(any(m) for m in members.values()) if cnf else any(all(m) for m in members.values())
    )
    assert trigger_matches(tp, facts()) is expected


@pytest.mark.parametrize("case", list(SessionCase))
def test_exactly_one_session_case_matches(case: SessionCase) -> None:
    hits = [c for c in SessionCase if spt_matches(Spt(session_case=c), facts(session_case=case))]
    assert hits == [case]
    assert list(itertools.islice(SessionCase, 0, 1))[0] == SessionCase.ORIGINATING
