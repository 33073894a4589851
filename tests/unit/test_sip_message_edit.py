"""Message.edit: several header edits in one copy, the same as the single
edits one after the other, typed views of untouched headers kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from imsp2pd.sip.message import Request
from imsp2pd.sip.parser import parse_message

NAMES = ["Via", "Route", "Record-Route", "Max-Forwards", "X-A", "Contact"]
field = st.tuples(st.sampled_from(NAMES), st.sampled_from(["1", "2", "<sip:a@b;lr>"]))
names = st.lists(st.sampled_from(NAMES + ["v", "x-a"]), max_size=3)
fields = st.lists(field, max_size=3)


@given(
    st.lists(field, max_size=10),
    names,
    names,
    fields,
    fields,
    fields,
)
def test_edit_is_the_single_edits_in_order(
    headers: list[tuple[str, str]],
    remove: list[str],
    drop_first: list[str],
    replace: list[tuple[str, str]],
    prepend: list[tuple[str, str]],
    append: list[tuple[str, str]],
) -> None:
    from imsp2pd.sip.uri import parse_uri

    msg = Request(tuple(headers), b"", method="MESSAGE", uri=parse_uri("sip:a@b"))
    expected = msg.remove_header(*remove) if remove else msg
    for name in drop_first:
        expected = expected.remove_first(name)
    for name, value in replace:
        expected = expected.replace_header(name, value)
    for name, value in prepend:
        expected = expected.prepend_header(name, value)
    for name, value in append:
        expected = expected.append_header(name, value)
    got = msg.edit(
        remove=tuple(remove),
        drop_first=tuple(drop_first),
        replace=tuple(replace),
        prepend=tuple(prepend),
        append=tuple(append),
    )
    assert got.headers == expected.headers
    assert got.encode() == expected.encode()


def test_views_of_untouched_headers_are_kept_and_touched_ones_recomputed() -> None:
    msg = parse_message(
        b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h:1;branch=z9hG4bK1\r\n"
        b"From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n"
        b"Max-Forwards: 70\r\nRoute: <sip:r1;lr>\r\nRoute: <sip:r2;lr>\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(msg, Request)
    vias, from_ = msg.vias, msg.from_
    _ = msg.routes, msg.max_forwards
    out = msg.edit(drop_first=("Route",), replace=(("Max-Forwards", "69"),))
    assert out.vias is vias and out.from_ is from_  # kept, not parsed again
    assert "routes" not in out.__dict__ and "max_forwards" not in out.__dict__
    assert [str(r.uri) for r in out.routes] == ["sip:r2;lr"]
    assert out.max_forwards == 69
    assert out.get_all("Route") == ["<sip:r2;lr>"]
