"""URIs and structured headers (RFC 3261 §19.1, §20, §25.1)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imsp2pd.sip.errors import SipParseError
from imsp2pd.sip.headers import (
    _parse_name_addr,
    _parse_via,
    parse_auth,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_list,
)
from imsp2pd.sip.uri import (
    AbsoluteURI,
    SipURI,
    TelURI,
    _drop_param,
    _parse_uri,
    _set_param,
    parse_uri,
    uri_equal,
)

from .test_sip_strategies import name_addrs, sip_uris, uris, vias


def test_full_sip_uri() -> None:
    u = parse_uri("sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=hi&x=%20y")
    assert isinstance(u, SipURI)
    assert u.secure and u.user == "alice" and u.password == "secret"
    assert u.host == "[2001:db8::1]" and u.port == 5061
    assert u.transport == "tcp" and u.is_loose_router
    assert u.headers == (("subject", "hi"), ("x", "%20y"))
    assert str(u) == "sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=hi&x=%20y"


def test_user_may_hold_telephone_subscriber_and_escapes() -> None:
    u = parse_uri("sip:+1-212-555-1212%3b;isub=1411@gw.example.com;user=phone")
    assert isinstance(u, SipURI)
    assert u.host == "gw.example.com" and u.param("user") == "phone"
    assert u.aor() == "sip:+1-212-555-1212;;isub=1411@gw.example.com"


def test_escaped_null_in_user_is_valid() -> None:
    # RFC 4475 §3.1.1.6: %00 in a user part is legal and compares escaped
    u = parse_uri("sip:null-%00-null@example.com")
    assert isinstance(u, SipURI) and u.user == "null-%00-null"


def test_tel_and_other_schemes() -> None:
    t = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert isinstance(t, TelURI) and t.is_global and t.normalized() == "+12015550123"
    assert t.param("phone-context") == "example.com"
    assert uri_equal(t, parse_uri("tel:+12015550123;PHONE-CONTEXT=example.com"))
    a = parse_uri("urn:service:sos")
    assert isinstance(a, AbsoluteURI) and str(a) == "urn:service:sos"


@pytest.mark.parametrize(
    "bad",
    [
        "sip:",
        "sip:user@",
        "sip:user@host:99999",
        "sip:user@host:port",
        "sip:user@[::1",
        "sip:user@[zz::1]",
        "sip:us er@example.com",
        "sip:user@exa mple.com",
        "sip:user@example.com;",
        "sip:user@example.com;a=b c",
        "sip:user@example.com?nohvalue",
        "sip:user@-bad-.com",
        "sip:user@300.1.1.1",
        "noscheme",
        "1ab:foo",
        "tel:not a number",
    ],
)
def test_bad_uris_raise_our_error(bad: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_uri(bad)
    assert info.value.reason.startswith("Bad URI")


def test_uri_comparison_rules() -> None:
    # §19.1.4 examples
    assert uri_equal(
        parse_uri("sip:%61lice@atlanta.com;transport=TCP"),
        parse_uri("sip:alice@AtLanTa.CoM;Transport=tcp"),
    )
    assert uri_equal(
        parse_uri("sip:carol@chicago.com;security=on"),
        parse_uri("sip:carol@chicago.com;newparam=5"),
    )
    assert not uri_equal(
        parse_uri("SIP:ALICE@AtLanTa.CoM;Transport=udp"),
        parse_uri("sip:alice@AtLanTa.CoM;Transport=UDP"),
    )
    assert not uri_equal(parse_uri("sip:bob@biloxi.com"), parse_uri("sip:bob@biloxi.com:5060"))
    assert not uri_equal(
        parse_uri("sip:bob@biloxi.com"), parse_uri("sip:bob@biloxi.com;transport=udp")
    )
    assert not uri_equal(
        parse_uri("sip:carol@chicago.com"),
        parse_uri("sip:carol@chicago.com?Subject=next%20meeting"),
    )
    assert not uri_equal(parse_uri("sip:a@b"), parse_uri("tel:+1"))


def test_name_addr_forms() -> None:
    na = parse_name_addr('"Alice \\"A\\"" <sip:alice@example.com;lr>;tag=abc;expires=60')
    assert na.display == 'Alice "A"' and na.tag == "abc" and na.param("expires") == "60"
    assert isinstance(na.uri, SipURI) and na.uri.is_loose_router
    na2 = parse_name_addr("Bob  Smith <sip:bob@example.com>")
    assert na2.display == "Bob Smith"
    # addr-spec: the parameters belong to the header, not the URI (§20.10)
    na3 = parse_name_addr("sip:carol@example.com;tag=x")
    assert na3.tag == "x" and isinstance(na3.uri, SipURI) and na3.uri.params == ()
    assert parse_name_addr(str(na)) == na


@pytest.mark.parametrize(
    "bad",
    [
        "",
        '"unterminated <sip:a@b>',
        "<sip:a@b",
        "<sip:a@ b>",
        "bad@display <sip:a@b>",
        "sip:a@b?x=y",
        "<sip:a@b>;=x",
        "<sip:a@b> junk",
        '"x" sip:a@b',
    ],
)
def test_bad_name_addr(bad: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(bad)


def test_via_with_lws_and_ipv6() -> None:
    v = parse_via(
        "SIP / 2.0 / udp [2001:db8::9]:5070 ; branch = z9hG4bKx ;rport;received=192.0.2.1"
    )
    assert v.transport == "UDP" and v.host == "[2001:db8::9]" and v.port == 5070
    assert v.branch == "z9hG4bKx" and v.has_param("rport")
    assert v.response_address() == ("192.0.2.1", 5070)
    assert parse_via(str(v)) == v
    assert parse_via("SIP/2.0/TCP h;rport=1234").response_address() == ("h", 1234)


@pytest.mark.parametrize(
    "bad",
    ["SIP/2.0", "SIP/2.0/UDP", "SIP 2.0 UDP h", "SIP/2.0/UDP h;branch", "SIP/2.0/UDP h;ttl=999"],
)
def test_bad_via(bad: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(bad)


def test_cseq() -> None:
    assert parse_cseq("  0009 \t INVITE").seq == 9
    for bad in ["INVITE", "1", "-1 INVITE", "4294967296 INVITE", "1 IN VITE", "1 INV@ITE"]:
        with pytest.raises(SipParseError):
            parse_cseq(bad)


def test_split_list_respects_quotes_and_brackets() -> None:
    assert split_list('"a, b" <sip:x@y;p=1,2>, <sip:z@w>,,') == [
        '"a, b" <sip:x@y;p=1,2>',
        "<sip:z@w>",
    ]
    assert split_list('"esc \\" , still" <sip:x@y>') == ['"esc \\" , still" <sip:x@y>']
    for bad in ['"open', "<sip:a", "a>", "<<a>>"]:
        with pytest.raises(SipParseError):
            split_list(bad)


def test_auth_header_round_trip() -> None:
    h = parse_auth(
        'Digest username="alice@ims.example.org", realm="ims.example.org", nonce="n,1", uri="sip:ims.example.org", response="0123", algorithm=MD5, qop=auth, nc=00000001, cnonce="c"'
    )
    assert h.scheme == "Digest" and h.get("nonce") == "n,1" and h.get("QOP") == "auth"
    assert parse_auth(str(h)) == h
    for bad in ["", "Digest realm", 'Digest realm="x" nonce="y"', "Digest realm=,"]:
        with pytest.raises(SipParseError):
            parse_auth(bad)


@given(uris())
def test_uri_round_trip(u: SipURI | TelURI) -> None:
    assert parse_uri(str(u)) == u
    assert uri_equal(u, parse_uri(str(u)))


@given(sip_uris())
def test_uri_aor_is_stable(u: SipURI) -> None:
    assert parse_uri(str(u)).aor() == u.aor()  # type: ignore[union-attr]


@given(name_addrs())
def test_name_addr_round_trip(na) -> None:  # type: ignore[no-untyped-def]
    assert parse_name_addr(str(na)) == na


@given(vias())
def test_via_round_trip(v) -> None:  # type: ignore[no-untyped-def]
    assert parse_via(str(v)) == v


@given(st.text(max_size=200))
def test_uri_parser_raises_only_our_error(text: str) -> None:
    try:
        parse_uri(text)
    except SipParseError:
        pass


@given(st.text(alphabet=st.sampled_from('sip:@;=<>"\\, \t[]:.?&%abc12'), max_size=80))
def test_header_parsers_raise_only_our_error(text: str) -> None:
    for fn in (parse_name_addr, parse_via, parse_auth, parse_cseq, split_list):
        try:
            fn(text)
        except SipParseError:
            pass


# -- the fast paths agree with the careful parsers ------------------------


def _outcome(fn, text: str):  # type: ignore[no-untyped-def]
    try:
        value = fn(text)
    except SipParseError as exc:
        return ("error", exc.reason, exc.status)
    return ("ok", value, str(value))


@given(uris())
def test_uri_fast_path_agrees_with_the_careful_parser(u: SipURI | TelURI) -> None:
    text = str(u)
    assert _outcome(parse_uri.__wrapped__, text) == _outcome(_parse_uri, text)


@given(name_addrs())
def test_name_addr_fast_path_agrees_with_the_careful_parser(na) -> None:  # type: ignore[no-untyped-def]
    text = str(na)
    assert _outcome(parse_name_addr.__wrapped__, text) == _outcome(_parse_name_addr, text)


@given(vias())
def test_via_fast_path_agrees_with_the_careful_parser(v) -> None:  # type: ignore[no-untyped-def]
    text = str(v)
    assert _outcome(parse_via.__wrapped__, text) == _outcome(_parse_via, text)


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa;rport",
        "SIP/2.0/udp host.example.org;RPORT=5;Branch=z9hG4bKb",
        "SIP/2.0/UDP 192.0.2.1:05060;branch=z9hG4bKc",
        "SIP/2.0/UDP 192.0.2.1:5060;branch",
        "SIP/2.0/UDP 192.0.2.1:5060;BRANCH",
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKd;rport=x",
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKe;ttl=16",
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKe;ttl=300",
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKe;ttl",
        "SIP/2.0/UDP 192.0.2.1:65536;branch=z9hG4bKf",
        "SIP/2.0/UDP 192.0.2.999;branch=z9hG4bKg",
        "SIP/2.0/UDP host-.example.org;branch=z9hG4bKh",
        "SIP/2.0/UDP host;branch=z9hG4bKi;x=",
        "SIP/2.0/UDP host;branch=z9hG4bKj;x=a=b",
        "SIP/2.0/UDP host;branchx;rportx=y;ttlx",
    ],
)
def test_via_fast_path_edges(text: str) -> None:
    assert _outcome(parse_via.__wrapped__, text) == _outcome(_parse_via, text)


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@example.com:05060;transport=tcp",
        "SIP:Alice@Example.COM;LR",
        "sips:a@192.0.2.999",
        "sip:a@host:65536",
        "sip:a@host;x=",
        "sip:a@host;x=1=2",
        "sip:a;b@host",
        "sip:host;maddr=x@y",
        "sip:%61@host",
        "sip:@host",
    ],
)
def test_uri_fast_path_edges(text: str) -> None:
    assert _outcome(parse_uri.__wrapped__, text) == _outcome(_parse_uri, text)
    na = f"<{text}>;tag=1"
    assert _outcome(parse_name_addr.__wrapped__, na) == _outcome(_parse_name_addr, na)


def test_kept_str_and_parameters_follow_copies() -> None:
    u = parse_uri("sip:alice@example.com;transport=TCP;lr")
    assert isinstance(u, SipURI)
    assert str(u) == "sip:alice@example.com;transport=TCP;lr"
    assert u.has_param("LR") and u.param("Transport") == "TCP" and u.param("lr") == ""
    assert not u.has_param("maddr") and u.param("maddr") is None
    v = u.without_param("lr").with_param("maddr", "192.0.2.1")
    assert str(v) == "sip:alice@example.com;transport=TCP;maddr=192.0.2.1"
    assert not v.has_param("lr") and v.param("maddr") == "192.0.2.1"
    assert str(u) == "sip:alice@example.com;transport=TCP;lr" and u.is_loose_router
    assert u.aor() == "sip:alice@example.com" and u == parse_uri(str(u))
    via = parse_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx")
    assert str(via) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx"
    via2 = via.with_param("received", "192.0.2.9")
    assert str(via2).endswith(";received=192.0.2.9") and via2.param("received") == "192.0.2.9"
    assert via.param("received") is None and via.branch == "z9hG4bKx"
    na = parse_name_addr("<sip:bob@example.com>;tag=1")
    assert str(na.with_param("tag", "2")) == "<sip:bob@example.com>;tag=2" and na.tag == "1"


@given(st.one_of(sip_uris(), name_addrs(), vias()), st.sampled_from(["lr", "tag", "Branch", "x"]))
def test_param_copies_are_replace(value, name: str) -> None:  # type: ignore[no-untyped-def]
    str(value), value.has_param(name)  # what is kept on the value must not leak into copies
    added = value.with_param(name, "v1")
    assert added == dataclasses.replace(value, params=_set_param(value.params, name, "v1"))
    assert str(added) == str(dataclasses.replace(added)) and added.param(name) == "v1"
    if hasattr(value, "without_param"):
        dropped = value.without_param(name)
        assert dropped == dataclasses.replace(value, params=_drop_param(value.params, name))
        assert str(dropped) == str(dataclasses.replace(dropped)) and not dropped.has_param(name)


@pytest.mark.parametrize(
    ("value", "items"),
    [
        ("path, gruu,,\t100rel ,", ["path", "gruu", "100rel"]),
        ("<sip:a@b;lr>, <sip:c,d@e;lr> , x<y>z,", ["<sip:a@b;lr>", "<sip:c,d@e;lr>", "x<y>z"]),
        ("<sip:a, b>, <sip:c", "Unterminated '<' in header value"),
        ("<sip:a, <sip:b>>", "Nested '<' in header value"),
        ("sip:a>, <sip:b>", "Unbalanced '>' in header value"),
        ('<sip:a>, "b', "Unterminated quoted string in header value"),
    ],
)
def test_split_list_without_quotes(value: str, items: list[str] | str) -> None:
    if isinstance(items, str):
        with pytest.raises(SipParseError, match=items):
            split_list(value)
    else:
        assert split_list(value) == items


_PLAIN_NAME = st.text("abcXYZ019-.!%*_+`'~", min_size=1, max_size=6)
_PLAIN_VALUE = st.text("abcXYZ019-.!%*_+`'~:[]/&$()", min_size=1, max_size=8)


@given(st.lists(st.tuples(_PLAIN_NAME, st.none() | _PLAIN_VALUE), min_size=1, max_size=5))
def test_plain_params_split_as_the_pattern_reads_them(params: list[tuple[str, str | None]]) -> None:
    import re

    from imsp2pd.sip.uri import _split_simple_params

    text = "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)
    # the pattern the split replaced: a flag has '' for value
    pairs = re.findall(r";([^;=]+)=?([^;]*)", text)
    assert _split_simple_params(text) == tuple((n, v or None) for n, v in pairs) == tuple(params)
