"""The fast reading of the User-Data we write: the split of a document into
PrivateID, PublicIdentity elements and iFC elements agrees with the pattern it
replaced (a lazy ``.*?`` over the iFCs), on our documents and on broken ones."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd.ims.hss import content_ifcs
from imsp2pd.ims.profile import (
    _NAME,
    IMSSubscription,
    PublicIdentity,
    ServiceProfile,
    _parse_xml,
    _split_ours,
    from_xml,
    to_xml,
)

#: the pattern as it was
_OURS = re.compile(
    rb'<\?xml version="1\.0" encoding="UTF-8"\?><IMSSubscription><PrivateID>(' + _NAME + rb")"
    rb"</PrivateID><ServiceProfile>((?:<PublicIdentity>(?:<BarringIndication>1"
    rb"</BarringIndication>)?<Identity>" + _NAME + rb"</Identity></PublicIdentity>)+)"
    rb"((?:<InitialFilterCriteria>.*?</InitialFilterCriteria>)*)</ServiceProfile>"
    rb"</IMSSubscription>",
    re.S,
)

IFCS = tuple(content_ifcs("sip:content@ims.example.org", "sip:127.0.0.1:7060"))
PIECES = [
    b"",
    b"<",
    b">",
    b"x",
    b"<InitialFilterCriteria>",
    b"</InitialFilterCriteria>",
    b"</ServiceProfile><ServiceProfile>",
    b"</ServiceProfile></IMSSubscription>",
    b"<PublicIdentity><Identity>sip:x@y</Identity></PublicIdentity>",
    b"<BarringIndication>1</BarringIndication>",
]


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(1, 3))
    pubs = tuple(PublicIdentity(f"sip:u{i}@ims.example.org", draw(st.booleans())) for i in range(n))
    ifcs = draw(st.sampled_from([(), IFCS, IFCS[:1]]))
    doc = bytearray(to_xml(IMSSubscription("u@ims.example.org", (ServiceProfile(pubs, ifcs),))))
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(doc)))
        cut = draw(st.integers(0, 2))
        doc[pos : pos + cut] = draw(st.sampled_from(PIECES))
    return bytes(doc)


@settings(max_examples=500)
@given(documents())
def test_the_split_agrees_with_the_pattern(doc: bytes) -> None:
    m = _OURS.fullmatch(doc)
    assert _split_ours(doc) == (m.groups() if m is not None else None)


@given(documents())
def test_fast_reading_is_the_parsers(doc: bytes) -> None:
    def read(parse: object) -> object:
        try:
            return parse(doc)  # type: ignore[operator]
        except ValueError as exc:
            return str(exc)

    assert read(from_xml) == read(_parse_xml)


def test_the_lab_document_is_read_fast() -> None:
    doc = to_xml(
        IMSSubscription(
            "u@ims.example.org",
            (ServiceProfile((PublicIdentity("sip:u@ims.example.org"),), IFCS),),
        )
    )
    parts = _split_ours(doc)
    assert parts is not None and parts[0] == b"u@ims.example.org"
    assert from_xml(doc).profiles[0].ifcs == IFCS
