"""The compiled iFC evaluators (what the S-CSCF runs) against the reference
functions that read the definitions as written, and the on-demand facts of a
request against :func:`facts_from_request`."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd.ims.ifc import (
    _COMPILED,
    _COMPILED_MAX,
    CompiledIfcs,
    RegistrationType,
    RequestFacts,
    all_matches,
    compile_trigger,
    compiled_ifcs,
    facts_from_request,
    next_match,
    request_view,
    trigger_matches,
)
from imsp2pd.ims.profile import (
    ApplicationServer,
    InitialFilterCriteria,
    SessionCase,
    Spt,
    TriggerPoint,
)
from imsp2pd.sip.message import Request
from imsp2pd.sip.parser import parse_message

PSI = "sip:content@ims.example.org"
SDP = "v=0\r\nm=audio 4000 RTP/AVP 0\r\nm=video 4002 RTP/AVP 31\r\nbad line\r\n"

methods = st.sampled_from(["MESSAGE", "message", "PUBLISH", "REGISTER", "register", "INVITE"])
uri_patterns = st.sampled_from(
    [PSI, r"sip:content@ims\.example\.org;doi=.*", "sip:.*", "sip:(unclosed", "tel:.*", "SIP:X@Y"]
)
name_patterns = st.sampled_from(["Content-Type", "content-.*", "Event", "X", "P-.*", "(", ".*"])
content_patterns = st.one_of(
    st.none(), st.sampled_from(["purchase", "^text/", "[z-a]", "reg", "alice", ""])
)
line_patterns = st.sampled_from(["m", "v", "[mv]", "o", "*"])
sdp_contents = st.one_of(st.none(), st.sampled_from(["video", "audio", "application", "("]))
cases = st.sampled_from(list(SessionCase))
groups = st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True).map(tuple)


@st.composite
def spts(draw: st.DrawFn) -> Spt:
    kind = draw(st.integers(0, 4))
    common: dict[str, Any] = {"group": draw(groups), "negated": draw(st.booleans())}
    if kind == 0:
        types = draw(st.lists(st.integers(0, 2), max_size=2, unique=True))
        return Spt(method=draw(methods), registration_types=tuple(types), **common)
    if kind == 1:
        return Spt(request_uri=draw(uri_patterns), **common)
    if kind == 2:
        return Spt(header=draw(name_patterns), header_content=draw(content_patterns), **common)
    if kind == 3:
        return Spt(session_case=draw(cases), **common)
    return Spt(sdp_line=draw(line_patterns), sdp_content=draw(sdp_contents), **common)


@st.composite
def triggers(draw: st.DrawFn) -> TriggerPoint | None:
    if draw(st.integers(0, 9)) == 0:
        return None
    return TriggerPoint(draw(st.booleans()), tuple(draw(st.lists(spts(), max_size=6))))


@st.composite
def ifc_lists(draw: st.DrawFn) -> list[InitialFilterCriteria]:
    n = draw(st.integers(0, 5))
    return [
        InitialFilterCriteria(
            priority=draw(st.integers(0, 4)),
            application_server=ApplicationServer(f"sip:as{i}.example.org"),
            trigger=draw(triggers()),
            profile_part=draw(st.sampled_from([None, 0, 1])),
        )
        for i in range(n)
    ]


@st.composite
def facts(draw: st.DrawFn) -> RequestFacts:
    uri = draw(st.sampled_from([PSI, PSI + ";doi=10.5555/abc", "sip:x@y", "tel:+1234"]))
    headers = draw(
        st.lists(
            st.sampled_from(
                [
                    ("Content-Type", "application/vnd.imsp2p.purchase+json"),
                    ("Content-Type", "text/plain"),
                    ("Event", "reg"),
                    ("P-Asserted-Identity", "<sip:alice@ims.example.org>"),
                    ("X", "1"),
                ]
            ),
            max_size=4,
        )
    )
    return RequestFacts(
        method=draw(methods),
        request_uri=uri,
        headers=tuple(headers),
        sdp=draw(st.sampled_from([None, "", SDP])),
        session_case=draw(cases),
        registered=draw(st.booleans()),
        registration_type=draw(st.one_of(st.none(), st.sampled_from(list(RegistrationType)))),
        request_aor=draw(st.sampled_from([None, "", uri.split(";")[0]])),
    )


@settings(max_examples=400)
@given(triggers(), facts())
def test_a_compiled_trigger_answers_as_the_definition(
    tp: TriggerPoint | None, f: RequestFacts
) -> None:
    evaluate = compile_trigger(tp)
    assert evaluate(f) is trigger_matches(tp, f)
    assert evaluate(f) is trigger_matches(tp, f)  # the header-name memo changes nothing


@settings(max_examples=400)
@given(ifc_lists(), facts(), st.one_of(st.none(), st.integers(-1, 5)))
def test_compiled_ifcs_walk_as_the_definition(
    ifcs: list[InitialFilterCriteria], f: RequestFacts, after: int | None
) -> None:
    fast = CompiledIfcs(ifcs)
    assert fast.next_match(f, after) is next_match(ifcs, f, after)
    assert fast.all_matches(f) == all_matches(ifcs, f)
    assert [id(x) for x in fast.all_matches(f)] == [id(x) for x in all_matches(ifcs, f)]


def test_compiled_ifcs_are_made_once_per_tuple() -> None:
    ifcs = (InitialFilterCriteria(0, ApplicationServer("sip:as"), None),)
    assert compiled_ifcs(ifcs) is compiled_ifcs(ifcs)
    assert compiled_ifcs(ifcs).ifcs is ifcs
    copy = tuple(list(ifcs))  # equal, another object: compiled for itself
    assert copy is not ifcs and compiled_ifcs(copy).ifcs is copy
    for _ in range(_COMPILED_MAX + 5):  # bounded
        compiled_ifcs(tuple(list(ifcs)))
    assert len(_COMPILED) <= _COMPILED_MAX


def _request(method: str, uri: str, content_type: str | None, body: bytes) -> Request:
    ct = f"Content-Type: {content_type}\r\n" if content_type else ""
    text = (
        f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:4060;branch=z9hG4bKx\r\n"
        f"From: <sip:alice@ims.example.org>;tag=1\r\nTo: <{uri}>\r\nCall-ID: c\r\n"
        f"CSeq: 1 {method}\r\nEvent: reg\r\n{ct}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    req = parse_message(text)
    assert isinstance(req, Request)
    return req


@given(
    st.sampled_from(["MESSAGE", "INVITE", "REGISTER"]),
    st.sampled_from([PSI, "sip:Content@IMS.example.org;doi=1", "tel:+12-34", "urn:x:y"]),
    st.sampled_from([None, "application/sdp", "Application/SDP; x=1", "text/plain"]),
    st.sampled_from([b"", SDP.encode(), b"m=\xff\xfe"]),
    cases,
    st.booleans(),
    st.one_of(st.none(), st.sampled_from(list(RegistrationType))),
)
def test_a_request_view_reads_the_facts_of_the_request(
    method: str,
    uri: str,
    content_type: str | None,
    body: bytes,
    case: SessionCase,
    registered: bool,
    rtype: RegistrationType | None,
) -> None:
    req = _request(method, uri, content_type, body)
    careful = facts_from_request(
        req, session_case=case, registered=registered, registration_type=rtype
    )
    view = request_view(req, case, registered, rtype)
    for name in (
        "method",
        "request_uri",
        "request_aor",
        "headers",
        "sdp",
        "sdp",
        "session_case",
        "registered",
        "registration_type",
    ):
        assert getattr(view, name) == getattr(careful, name), name
