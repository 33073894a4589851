"""CxDataType User-Data XML (TS 29.228 annex E): build, parse, JSON documents."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imsp2pd.ims.hss import content_ifcs
from imsp2pd.ims.profile import (
    ApplicationServer,
    DefaultHandling,
    IMSSubscription,
    InitialFilterCriteria,
    ProfileError,
    PublicIdentity,
    ServiceProfile,
    SessionCase,
    Spt,
    TriggerPoint,
    from_xml,
    ifc_from_dict,
    ifc_to_dict,
    to_xml,
)

PSI = "sip:content@ims.example.org"
AS = "sip:as.ims.example.org:7060"


def lab() -> IMSSubscription:
    return IMSSubscription(
        "alice@ims.example.org",
        (
            ServiceProfile(
                (
                    PublicIdentity("sip:alice@ims.example.org"),
                    PublicIdentity("tel:+15551234", True),
                ),
                tuple(content_ifcs(PSI, AS)),
            ),
        ),
    )


def test_lab_profile_xml_shape() -> None:
    xml = to_xml(lab())
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?><IMSSubscription>')
    root = ET.fromstring(xml)
    assert root.findtext("PrivateID") == "alice@ims.example.org"
    sp = root.find("ServiceProfile")
    assert sp is not None
    ids = [p.findtext("Identity") for p in sp.findall("PublicIdentity")]
    assert ids == ["sip:alice@ims.example.org", "tel:+15551234"]
    assert sp.findall("PublicIdentity")[1].findtext("BarringIndication") == "1"
    ifc = sp.find("InitialFilterCriteria")
    assert ifc is not None and ifc.findtext("Priority") == "0"
    tp = ifc.find("TriggerPoint")
    assert tp is not None and tp.findtext("ConditionTypeCNF") == "1"
    spts = tp.findall("SPT")
    assert [s.findtext("Method") for s in spts[:3]] == ["MESSAGE", "PUBLISH", "SUBSCRIBE"]
    assert spts[3].findtext("RequestURI") == PSI and spts[3].findtext("Group") == "1"
    assert spts[4].findtext("SessionCase") == "0"
    # element order inside an SPT: ConditionNegated, Group, then the condition
    assert [c.tag for c in spts[0]] == ["ConditionNegated", "Group", "Method"]
    assert ifc.find("ApplicationServer/ServerName").text == AS  # type: ignore[union-attr]
    assert ifc.findtext("ApplicationServer/DefaultHandling") == "0"


def test_round_trip_lab() -> None:
    assert from_xml(to_xml(lab())) == lab()


text = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="<>&"),
    min_size=1,
    max_size=12,
)
spts = st.one_of(
    st.builds(
        lambda g, n, m: Spt(group=g, negated=n, method=m),
        st.lists(st.integers(0, 5), min_size=1, max_size=2).map(tuple),
        st.booleans(),
        text,
    ),
    st.builds(lambda g, u: Spt(group=g, request_uri=u), st.just((0,)), text),
    st.builds(lambda h, c: Spt(header=h, header_content=c), text, st.one_of(st.none(), text)),
    st.builds(lambda c: Spt(session_case=c), st.sampled_from(SessionCase)),
    st.builds(lambda line, c: Spt(sdp_line=line, sdp_content=c), text, st.one_of(st.none(), text)),
)
ifcs = st.builds(
    InitialFilterCriteria,
    priority=st.integers(0, 100),
    application_server=st.builds(
        ApplicationServer, text, st.sampled_from(DefaultHandling), st.one_of(st.none(), text)
    ),
    trigger=st.one_of(
        st.none(), st.builds(TriggerPoint, st.booleans(), st.lists(spts, max_size=4).map(tuple))
    ),
    profile_part=st.one_of(st.none(), st.integers(0, 2)),
)
subscriptions = st.builds(
    IMSSubscription,
    text,
    st.lists(
        st.builds(
            ServiceProfile,
            st.lists(st.builds(PublicIdentity, text, st.booleans()), min_size=1, max_size=3).map(
                tuple
            ),
            st.lists(ifcs, max_size=3).map(tuple),
        ),
        min_size=1,
        max_size=2,
    ).map(tuple),
)


@given(subscriptions)
def test_xml_round_trip(sub: IMSSubscription) -> None:
    assert from_xml(to_xml(sub)) == sub


@given(ifcs)
def test_json_round_trip(ifc: InitialFilterCriteria) -> None:
    assert ifc_from_dict(ifc_to_dict(ifc)) == ifc


@given(st.binary(max_size=300))
def test_parser_raises_only_profile_error(data: bytes) -> None:
    try:
        from_xml(data)
    except ProfileError:
        pass


@pytest.mark.parametrize(
    "data",
    [
        b"<Other/>",
        b"<IMSSubscription><PrivateID>x</PrivateID></IMSSubscription>",
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><IMSSubscription/>',
        b"<IMSSubscription><PrivateID>x</PrivateID><ServiceProfile/></IMSSubscription>",
        b"<IMSSubscription><PrivateID>x</PrivateID><ServiceProfile><PublicIdentity><Identity>s</Identity>"
        b"</PublicIdentity><InitialFilterCriteria><Priority>high</Priority></InitialFilterCriteria>"
        b"</ServiceProfile></IMSSubscription>",
        b"<IMSSubscription><PrivateID>x</PrivateID><ServiceProfile><PublicIdentity><Identity>s</Identity>"
        b"</PublicIdentity><InitialFilterCriteria><Priority>1</Priority><TriggerPoint><ConditionTypeCNF>1"
        b"</ConditionTypeCNF><SPT><Group>0</Group></SPT></TriggerPoint><ApplicationServer><ServerName>a"
        b"</ServerName></ApplicationServer></InitialFilterCriteria></ServiceProfile></IMSSubscription>",
    ],
)
def test_invalid_documents(data: bytes) -> None:
    with pytest.raises(ProfileError):
        from_xml(data)


def test_spt_needs_exactly_one_condition() -> None:
    with pytest.raises(ProfileError):
        Spt(method="MESSAGE", request_uri="sip:x")
    with pytest.raises(ProfileError):
        Spt()
    with pytest.raises(ProfileError):
        ifc_from_dict({"priority": 0})


# The User-Data writer against ElementTree ------------------------------------------


def _et_text(parent: ET.Element, tag: str, value: object) -> None:
    ET.SubElement(parent, tag).text = str(value)


def _et_spt(parent: ET.Element, spt: Spt) -> None:
    e = ET.SubElement(parent, "SPT")
    _et_text(e, "ConditionNegated", int(spt.negated))
    for g in spt.group:
        _et_text(e, "Group", g)
    if spt.request_uri is not None:
        _et_text(e, "RequestURI", spt.request_uri)
    elif spt.method is not None:
        _et_text(e, "Method", spt.method)
    elif spt.header is not None:
        h = ET.SubElement(e, "SIPHeader")
        _et_text(h, "Header", spt.header)
        if spt.header_content is not None:
            _et_text(h, "Content", spt.header_content)
    elif spt.session_case is not None:
        _et_text(e, "SessionCase", int(spt.session_case))
    elif spt.sdp_line is not None:
        s = ET.SubElement(e, "SessionDescription")
        _et_text(s, "Line", spt.sdp_line)
        if spt.sdp_content is not None:
            _et_text(s, "Content", spt.sdp_content)
    for r in spt.registration_types:
        _et_text(e, "RegistrationType", r)


def et_xml(sub: IMSSubscription) -> bytes:
    """The document as ElementTree writes it (what to_xml did before it wrote text)."""
    root = ET.Element("IMSSubscription")
    _et_text(root, "PrivateID", sub.private_id)
    for profile in sub.profiles:
        sp = ET.SubElement(root, "ServiceProfile")
        for pub in profile.public_identities:
            p = ET.SubElement(sp, "PublicIdentity")
            if pub.barred:
                _et_text(p, "BarringIndication", 1)
            _et_text(p, "Identity", pub.identity)
        for ifc in profile.ifcs:
            f = ET.SubElement(sp, "InitialFilterCriteria")
            _et_text(f, "Priority", ifc.priority)
            if ifc.trigger is not None:
                tp = ET.SubElement(f, "TriggerPoint")
                _et_text(tp, "ConditionTypeCNF", int(ifc.trigger.cnf))
                for spt in ifc.trigger.spts:
                    _et_spt(tp, spt)
            a = ET.SubElement(f, "ApplicationServer")
            _et_text(a, "ServerName", ifc.application_server.server_name)
            _et_text(a, "DefaultHandling", int(ifc.application_server.default_handling))
            if ifc.application_server.service_info is not None:
                _et_text(a, "ServiceInfo", ifc.application_server.service_info)
            if ifc.profile_part is not None:
                _et_text(f, "ProfilePartIndicator", ifc.profile_part)
    return b'<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(
        root, encoding="utf-8", xml_declaration=False
    )


any_text = st.text(max_size=8)
any_spts = st.one_of(
    st.builds(
        lambda g, n, m, r: Spt(group=g, negated=n, method=m, registration_types=r),
        st.lists(st.integers(0, 5), min_size=1, max_size=2).map(tuple),
        st.booleans(),
        any_text,
        st.lists(st.integers(0, 2), max_size=2).map(tuple),
    ),
    st.builds(lambda u: Spt(request_uri=u), any_text),
    st.builds(
        lambda h, c: Spt(header=h, header_content=c), any_text, st.one_of(st.none(), any_text)
    ),
    st.builds(lambda c: Spt(session_case=c), st.sampled_from(SessionCase)),
    st.builds(
        lambda line, c: Spt(sdp_line=line, sdp_content=c),
        any_text,
        st.one_of(st.none(), any_text),
    ),
)
any_ifcs = st.builds(
    InitialFilterCriteria,
    priority=st.integers(-5, 100),
    application_server=st.builds(
        ApplicationServer,
        any_text,
        st.sampled_from(DefaultHandling),
        st.one_of(st.none(), any_text),
    ),
    trigger=st.one_of(
        st.none(),
        st.builds(TriggerPoint, st.booleans(), st.lists(any_spts, max_size=3).map(tuple)),
    ),
    profile_part=st.one_of(st.none(), st.integers(0, 2)),
)
any_subscriptions = st.builds(
    IMSSubscription,
    any_text,
    st.lists(
        st.builds(
            ServiceProfile,
            st.lists(st.builds(PublicIdentity, any_text, st.booleans()), max_size=3).map(tuple),
            st.lists(any_ifcs, max_size=3).map(tuple),
        ),
        max_size=2,
    ).map(tuple),
)


@given(any_subscriptions)
def test_to_xml_writes_what_elementtree_writes(sub: IMSSubscription) -> None:
    assert to_xml(sub) == et_xml(sub)


def test_to_xml_of_the_lab_profile_is_what_elementtree_writes() -> None:
    assert to_xml(lab()) == et_xml(lab())
    odd = IMSSubscription("a&b<c>@x", (ServiceProfile((PublicIdentity(""),), ()),))
    assert to_xml(odd) == et_xml(odd)


@given(any_subscriptions, st.data())
def test_from_xml_reads_our_documents_as_the_parser_does(
    sub: IMSSubscription, data: st.DataObject
) -> None:
    from imsp2pd.ims.profile import _parse_xml

    doc = bytearray(to_xml(sub))
    for _ in range(data.draw(st.integers(0, 3))):
        pos = data.draw(st.integers(0, len(doc) - 1))
        doc[pos : pos + 1] = data.draw(st.sampled_from([b"", b"<", b"&", b" ", b"x", b"\x01"]))
    raw = bytes(doc)

    def read(parse: Any) -> object:
        try:
            return parse(raw)
        except ProfileError as exc:
            return str(exc)

    assert read(from_xml) == read(_parse_xml)


def test_from_xml_fast_reading_keeps_what_the_parser_would_see() -> None:
    from imsp2pd.ims.profile import _parse_xml

    doc = to_xml(lab())
    # a PublicIdentity after the iFCs is the parser's, not the pattern's
    extra = doc.replace(
        b"</InitialFilterCriteria></ServiceProfile>",
        b"</InitialFilterCriteria><PublicIdentity><Identity>sip:x@y</Identity>"
        b"</PublicIdentity></ServiceProfile>",
    )
    assert from_xml(extra) == _parse_xml(extra)
    assert len(from_xml(extra).profiles[0].public_identities) == 3
    assert from_xml(doc) == _parse_xml(doc) == lab()


def test_an_unknown_encoding_is_a_profile_error() -> None:
    doc = to_xml(lab()).replace(b'encoding="UTF-8"', b'encoding="TF-8"')
    with pytest.raises(ProfileError, match="cannot be decoded"):
        from_xml(doc)
