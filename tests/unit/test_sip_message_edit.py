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
    edits = {
        "remove": tuple(remove),
        "drop_first": tuple(drop_first),
        "replace": tuple(replace),
        "prepend": tuple(prepend),
        "append": tuple(append),
    }
    got = msg.edit(**edits)
    assert got.headers == expected.headers
    assert got.encode() == expected.encode()
    # the index of a copy made from a message whose index was built is
    # derived from it, edit by edit: the index built from the headers
    msg._index  # noqa: B018
    derived = msg.edit(**edits)
    assert "_index" in derived.__dict__
    assert derived._index == Request(derived.headers, method="MESSAGE", uri=msg.uri)._index


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


@given(st.lists(field, min_size=1, max_size=10), st.sampled_from(NAMES), st.booleans())
def test_an_index_carried_over_a_one_field_edit_is_the_index_rebuilt(
    headers: list[tuple[str, str]], name: str, prepend: bool
) -> None:
    from imsp2pd.sip.uri import parse_uri

    msg = Request(tuple(headers), b"", method="MESSAGE", uri=parse_uri("sip:a@b"))
    _ = msg._index  # built, so the copy starts from it
    out = msg.prepend_header(name, "new") if prepend else msg.remove_first(name)
    fresh = Request(out.headers, b"", method="MESSAGE", uri=out.uri)
    assert out._index == fresh._index
    for n in NAMES:
        assert out.get_all(n) == fresh.get_all(n)


def test_a_relayed_response_keeps_the_rest_of_its_vias_parsed() -> None:
    resp = parse_message(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP p:1;branch=z9hG4bK1\r\n"
        b"Via: SIP/2.0/UDP ue:2;branch=z9hG4bK2\r\nFrom: <sip:x@y>;tag=1\r\n"
        b"To: <sip:a@b>;tag=2\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    )
    second = resp.vias[1]
    up = resp.remove_first("Via")
    assert up.vias == [second] and up.vias[0] is second and up.top_via is second
    assert up.remove_first("Via").vias == []


def test_with_top_via_pushes_or_replaces_and_keeps_the_parsed_vias() -> None:
    from imsp2pd.sip.headers import parse_via

    msg = parse_message(
        b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP ue:2;branch=z9hG4bK2;rport\r\n"
        b"From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(msg, Request)
    ue = msg.top_via
    stamped_via = ue.with_param("rport", "2").with_param("received", "10.0.0.1")
    stamped = msg.with_top_via(stamped_via, replace=True)
    assert stamped.vias == [stamped_via] and stamped.top_via is stamped_via
    ours = parse_via("SIP/2.0/UDP p:1;branch=z9hG4bK9")
    pushed = stamped.with_top_via(ours)
    assert pushed.vias[0] is ours and pushed.vias[1] is stamped_via
    fresh = parse_message(pushed.encode())
    assert pushed.headers == fresh.headers
    assert pushed._index == fresh._index
    assert [str(v) for v in fresh.vias] == [str(v) for v in pushed.vias]
