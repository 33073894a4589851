"""The SIP core's shortcuts held to the careful way: the explicit __init__
of its hot dataclasses to the one dataclass would generate, the Via lines a
proxy remembers for the parser to what the parser would read, the views a
message caches to what they compute."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd.sip import parser, proxy, transaction
from imsp2pd.sip.errors import SipParseError
from imsp2pd.sip.headers import Via, parse_via
from imsp2pd.sip.message import Request, Response, SipMessage
from imsp2pd.sip.parser import parse_message, remember_via
from imsp2pd.sip.uri import SipURI

from .test_sip_strategies import ipv4, requests, responses, vias

#: the dataclasses given their own __init__ (made often: per message)
OWN_INIT = [
    proxy._Endpoint,  # Source's and Target's
    proxy.Transmit,
    proxy.IncomingRequest,
    proxy.BranchResponse,
    proxy._ServerCtx,
    proxy._ClientCtx,
    transaction.Send,
    transaction.Deliver,
    transaction.Timeout,
    transaction.TransportFailed,
    transaction.Terminated,
    Via,
]


def _generated(cls: type) -> type:
    """The same fields in a dataclass with the __init__ dataclass makes."""
    ns: dict[str, Any] = {"__annotations__": {}}
    for f in dataclasses.fields(cls):
        ns["__annotations__"][f.name] = f.type
        if f.default is not dataclasses.MISSING:
            ns[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            ns[f.name] = dataclasses.field(default_factory=f.default_factory)
    frozen = cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    return dataclasses.dataclass(frozen=frozen)(type(cls.__name__, (), ns))


def test_sources_and_targets_take_the_endpoints_init_and_stay_apart() -> None:
    for cls in (proxy.Source, proxy.Target):
        assert cls.__init__ is proxy._Endpoint.__init__
        assert cls("TCP", "h", 1, 2).reliable and not cls("UDP", "h", 1).reliable
    assert proxy.Source("UDP", "h", 1) != proxy.Target("UDP", "h", 1)
    assert proxy.Source("UDP", "h", 1) == proxy.Source("UDP", "h", 1)
    assert (
        repr(proxy.Target("UDP", "h", 1)) == "Target(transport='UDP', host='h', port=1, flow=None)"
    )


@pytest.mark.parametrize("cls", OWN_INIT, ids=lambda c: c.__name__)
def test_an_own_init_takes_what_the_generated_one_takes_and_sets_the_same(cls: type) -> None:
    assert "__init__" in cls.__dict__
    ref = _generated(cls)
    mine = list(inspect.signature(cls).parameters.values())
    theirs = list(inspect.signature(ref).parameters.values())
    assert [(p.name, p.kind) for p in mine] == [(p.name, p.kind) for p in theirs]
    for p, q in zip(mine, theirs, strict=True):
        if q.default is dataclasses._HAS_DEFAULT_FACTORY:  # type: ignore[attr-defined]
            assert p.default is None  # None: a new one from the factory
        else:
            assert p.default == q.default
    fields = dataclasses.fields(cls)
    values = [object() for _ in fields]
    required = [f for f in fields if f.default is dataclasses.MISSING]
    n_req = len(required) if required != [] else 0
    for args in (values, values[:n_req]):
        a, b = cls(*args), ref(*args)
        assert vars(a) == vars(b)
        kw = {f.name: v for f, v in zip(fields, args, strict=False)}
        assert vars(cls(**kw)) == vars(b)
    if cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cls(*values), fields[0].name, 1) if fields else setattr(cls(), "x", 1)
    if fields:
        c = cls(*values)
        assert c == cls(*values) and dataclasses.replace(c) == c


def test_a_client_context_gets_a_dict_of_its_own() -> None:
    a = proxy._ClientCtx(None, None)  # type: ignore[arg-type]
    b = proxy._ClientCtx(None, None)  # type: ignore[arg-type]
    assert a.extra == {} and a.extra is not b.extra


def _same_as_read(via: Via) -> None:
    """remember_via kept what _read_line makes of the line, or nothing."""
    parser._LINES.clear()
    parse_via.cache_clear()
    remember_via(via)
    line = f"Via: {via}"
    kept = parser._LINES.get(line)
    if kept is None:
        return
    assert kept == parser._read_line(line)
    assert kept[4][0] == parse_via(str(via))
    # and the message the line is in parses as it would without it
    data = (
        f"MESSAGE sip:b@example.org SIP/2.0\r\n{line}\r\nFrom: <sip:a@x>;tag=1\r\n"
        "To: <sip:b@example.org>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    with_line = parse_message(data)
    parser._LINES.clear()
    parse_via.cache_clear()
    assert parse_message(data) == with_line
    assert with_line.vias == [parse_via.__wrapped__(str(via))]


@settings(max_examples=300, deadline=None)
@given(
    transport=st.sampled_from(["UDP", "TCP", "TLS"]),
    host=st.one_of(ipv4, st.ip_addresses(v=6).map(str), st.sampled_from(["localhost", "pcscf"])),
    port=st.integers(1, 65535),
    branch=st.text(alphabet="0123456789abcdef.", min_size=1, max_size=40),
)
def test_the_via_a_core_writes_is_remembered_as_the_parser_reads_it(
    transport: str, host: str, port: int, branch: str
) -> None:
    core = proxy.SipCore(addresses=[proxy.LocalAddress(transport, host, port)])
    req = Request(
        (("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx"),), method="MESSAGE", uri=SipURI("b")
    )
    out = core._with_via(req, transport, "z9hG4bK" + branch)
    assert f"Via: {out.top_via}" in parser._LINES or "[" in str(out.top_via)
    _same_as_read(out.top_via)


@settings(max_examples=500, deadline=None)
@given(
    via=vias(),
    rport=st.booleans(),
    src=st.one_of(ipv4, st.ip_addresses(v=6).map(str)),
    port=st.integers(1, 65535),
)
def test_a_stamped_via_is_remembered_as_the_parser_reads_it(
    via: Via, rport: bool, src: str, port: int
) -> None:
    if rport:
        via = via.with_param("rport")
    text = str(via)
    try:
        received = parse_via(text)  # what arrived, as the parser makes it
    except Exception:
        return
    req = Request((("Via", text),), method="MESSAGE", uri=SipURI("b"))
    req.__dict__["top_via"] = received
    stamped = proxy._stamp_via(req, proxy.Source("UDP", src, port))
    _same_as_read(stamped.top_via)


def _fresh(m: SipMessage) -> SipMessage:
    """The same message with nothing cached."""
    if isinstance(m, Request):
        return Request(m.headers, m.body, method=m.method, uri=m.uri)
    return Response(m.headers, m.body, status=m.status, reason=m.reason)


@settings(max_examples=300, deadline=None)
@given(m=st.one_of(requests(), responses()))
def test_the_views_a_parse_keeps_are_what_the_views_compute(m: SipMessage) -> None:
    parser._LINES.clear()
    for _ in range(2):  # the lines new, then kept
        try:
            parsed = parse_message(m.encode())
        except SipParseError:
            return
        fresh = _fresh(parsed)
        for name in ("vias", "top_via", "from_", "to", "cseq", "max_forwards", "_index"):
            assert parsed.__dict__[name] == getattr(fresh, name), name


def _forwarded(core: proxy.SipCore, request: Request, record_route: bool) -> object:
    """What forward sends for ``request`` received from a UE, or its fault."""
    try:
        events = core.receive(request, proxy.Source("UDP", "10.0.0.9", 5060), 1.0)
        inc = [e for e in events if isinstance(e, proxy.IncomingRequest)]
        if not inc:
            return ("no request", [type(e).__name__ for e in events])
        out = core.forward(inc[0].ctx, inc[0].request, 1.0, record_route=record_route)
    except SipParseError as exc:
        return ("fault", exc.reason, exc.status)
    return [
        (
            type(o).__name__,
            o.message.start_line(),
            o.message.headers,
            o.message.body,
            o.message.__dict__.get("vias"),
            o.message.__dict__.get("top_via"),
            o.target,
        )
        if isinstance(o, proxy.Transmit)
        else o
        for o in out
    ]


@settings(max_examples=300, deadline=None)
@given(
    m=requests(),
    record_route=st.booleans(),
    route=st.sampled_from(["", "<sip:127.0.0.1:5060;lr>", "<sip:127.0.0.1:5060>"]),
    nxt=st.sampled_from(["", "<sip:10.1.1.1:5070;lr>", "<sip:10.1.1.1;transport=tcp>"]),
    big=st.booleans(),
)
def test_forward_in_one_copy_sends_what_the_two_copies_sent(
    m: Request,
    record_route: bool,
    route: str,
    nxt: str,
    big: bool,
) -> None:
    if m.method in ("ACK", "CANCEL"):
        return
    extra = tuple(("Route", r) for r in (route, nxt) if r)
    body = b"x" * 1400 if big else m.body
    m = Request(extra + m.headers, body, method=m.method, uri=m.uri)
    try:
        m = parse_message(m.encode())  # as a proxy gets it
    except SipParseError:
        return
    assert isinstance(m, Request)
    one = proxy.SipCore(addresses=[proxy.LocalAddress("UDP", "127.0.0.1", 5060)])
    two = proxy.SipCore(addresses=[proxy.LocalAddress("UDP", "127.0.0.1", 5060)])

    def two_copies(
        base: Request, edits: Any, target: proxy.Target, original: Request
    ) -> tuple[Request, proxy.Target]:
        return two._add_via(proxy._edit(base, edits), target, original)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(proxy, "new_branch", lambda: "z9hG4bKfixed1")
        mp.setattr(two, "_edit_with_via", two_copies)
        assert _forwarded(one, m, record_route) == _forwarded(two, m, record_route)
