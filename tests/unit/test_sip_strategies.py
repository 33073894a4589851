"""Hypothesis strategies for SIP values, shared by the SIP unit tests."""

from __future__ import annotations

from hypothesis import strategies as st

from imsp2pd.sip.headers import NameAddr, Via
from imsp2pd.sip.message import Request, Response
from imsp2pd.sip.uri import SipURI, TelURI

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_UNRES = _ALNUM + "-_.!~*'()"


def _esc() -> st.SearchStrategy[str]:
    return st.integers(0, 255).map(lambda b: f"%{b:02X}")


def _chars(extra: str) -> st.SearchStrategy[str]:
    return st.lists(
        st.one_of(st.sampled_from(_UNRES + extra), _esc()), min_size=1, max_size=12
    ).map("".join)


labels = st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,8}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(labels, min_size=1, max_size=3).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
hosts = st.one_of(hostnames, ipv4, ipv6)
tokens = st.text(alphabet=_ALNUM + "-.!%*_+`'~", min_size=1, max_size=10)
uri_params = st.lists(
    st.tuples(_chars("[]/:&+$"), st.one_of(st.none(), _chars("[]/:&+$"))), max_size=3
).map(tuple)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipURI:
    user = draw(st.one_of(st.none(), _chars("&=+$,;?/")))
    password = (
        draw(
            st.one_of(
                st.none(), st.lists(st.sampled_from(_UNRES + "&=+$,"), max_size=6).map("".join)
            )
        )
        if user
        else None
    )
    return SipURI(
        host=draw(hosts),
        user=user,
        password=password,
        port=draw(st.one_of(st.none(), st.integers(0, 65535))),
        params=draw(uri_params),
        headers=draw(
            st.lists(st.tuples(_chars("[]/?:+$"), _chars("[]/?:+$")), max_size=2).map(tuple)
        ),
        scheme=draw(st.sampled_from(["sip", "sips", "SIP"])),
    )


tel_uris = st.builds(
    TelURI,
    number=st.from_regex(r"\+?[0-9][0-9\-.]{0,12}", fullmatch=True),
    params=uri_params,
)


def uris() -> st.SearchStrategy[SipURI | TelURI]:
    return st.one_of(sip_uris(), tel_uris)


quoted_values = st.text(
    alphabet=st.characters(
        min_codepoint=0x20, max_codepoint=0x2FF, exclude_categories=("Cc", "Cs")
    ),
    max_size=10,
).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
header_params = st.lists(
    st.tuples(tokens, st.one_of(st.none(), tokens, quoted_values)), max_size=3
).map(tuple)


@st.composite
def name_addrs(draw: st.DrawFn) -> NameAddr:
    display = draw(
        st.one_of(
            st.none(),
            st.text(
                alphabet=st.characters(
                    min_codepoint=0x20, max_codepoint=0x3FF, exclude_categories=("Cc", "Cs")
                ),
                max_size=12,
            ),
        )
    )
    return NameAddr(uri=draw(uris()), display=display, params=draw(header_params))


@st.composite
def vias(draw: st.DrawFn) -> Via:
    return Via(
        transport=draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"])),
        host=draw(hosts),
        port=draw(st.one_of(st.none(), st.integers(1, 65535))),
        params=(("branch", "z9hG4bK" + draw(tokens)),)
        + draw(
            header_params.map(
                lambda p: tuple(x for x in p if x[0].lower() not in ("rport", "ttl", "branch"))
            )
        ),
    )


methods = st.sampled_from(
    [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "MESSAGE",
        "PUBLISH",
        "SUBSCRIBE",
        "NOTIFY",
        "X-CUSTOM",
    ]
)
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=","),
    min_size=1,
    max_size=20,
)


@st.composite
def base_headers(draw: st.DrawFn, method: str) -> tuple[tuple[str, str], ...]:
    hs: list[tuple[str, str]] = [
        ("Via", str(v)) for v in draw(st.lists(vias(), min_size=1, max_size=3))
    ]
    hs.append(("From", str(draw(name_addrs()))))
    hs.append(("To", str(draw(name_addrs()))))
    hs.append(("Call-ID", draw(tokens) + "@" + draw(hostnames)))
    hs.append(("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}"))
    hs.append(("Max-Forwards", str(draw(st.integers(0, 255)))))
    for _ in range(draw(st.integers(0, 3))):
        hs.append(
            (draw(st.sampled_from(["X-Extra", "Subject", "User-Agent", "Route", "Contact"])), "")
        )
    out = []
    for n, v in hs:
        if v == "":
            v = str(draw(name_addrs())) if n in ("Route", "Contact") else draw(header_text)
        out.append((n, v))
    return tuple(out)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(methods)
    return Request(
        draw(base_headers(method)), draw(st.binary(max_size=64)), method=method, uri=draw(uris())
    )


@st.composite
def responses(draw: st.DrawFn) -> Response:
    method = draw(methods)
    reason = draw(
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
    )
    return Response(
        draw(base_headers(method)),
        draw(st.binary(max_size=64)),
        status=draw(st.integers(100, 699)),
        reason=reason,
    )
