"""SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966).

Values are kept in their wire form (escapes are not decoded), so that
``str(parse_uri(text)) == text`` for every valid ``text`` and round trips are
exact.  :func:`uri_equal` compares two URIs by the rules of RFC 3261 §19.1.4.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import TypeVar
from urllib.parse import unquote

from imsp2pd.sip.errors import SipParseError

_ALNUM = "A-Za-z0-9"
_MARK = r"\-_.!~*'()"
_UNRESERVED = _ALNUM + _MARK
_ESC = r"%[0-9A-Fa-f]{2}"

_USER_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESC})+")
_PASSWORD_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESC})*")
_PARAMCHARS_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESC})+")
_HNV_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESC})*")
_HNAME_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESC})+")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?")
_IPV4_RE = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_TEL_NUMBER_RE = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")
_OPAQUE_RE = re.compile(r"[\x21-\x7e]+")

Params = tuple[tuple[str, str | None], ...]

_new = object.__new__


def _bad(what: str) -> SipParseError:
    return SipParseError(f"Bad URI: {what}", status=400)


def is_valid_host(host: str) -> bool:
    """True for a hostname, an IPv4 address or a bracketed IPv6 reference."""
    # the answers for the usual short hosts are kept
    return _valid_host_kept(host) if len(host) <= 255 else _valid_host(host)


def _valid_host(host: str) -> bool:
    if host.startswith("["):
        if not host.endswith("]"):
            return False
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    if _IPV4_RE.fullmatch(host):
        return all(int(part) <= 255 for part in host.split("."))
    return _HOSTNAME_RE.fullmatch(host) is not None


_valid_host_kept = lru_cache(maxsize=4096)(_valid_host)


def split_hostport(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (IPv6 in brackets) and validate both parts."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _bad(f"unterminated IPv6 reference in {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _bad(f"junk after IPv6 reference in {text!r}")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_ = text.partition(":")
        port_text = port_text_ if sep else None
    if not is_valid_host(host):
        raise _bad(f"invalid host {host!r}")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5:
            raise _bad(f"invalid port {port_text!r}")
        port = int(port_text)
        if port > 65535:
            raise _bad(f"port out of range {port_text!r}")
    return host, port


def _parse_params(text: str, what: str) -> Params:
    """Parse ``;a=b;c`` (the leading ``;`` already removed)."""
    out: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if not _PARAMCHARS_RE.fullmatch(name):
            raise _bad(f"invalid {what} parameter name {name!r}")
        if sep:
            if not _PARAMCHARS_RE.fullmatch(value):
                raise _bad(f"invalid value of {what} parameter {name!r}")
            out.append((name, value))
        else:
            out.append((name, None))
    return tuple(out)


def _format_params(params: Params) -> str:
    return "".join([f";{n}" if v is None else f";{n}={v}" for n, v in params])


def _param(params: Params, name: str) -> str | None:
    lname = name.lower()
    for n, v in params:
        if n.lower() == lname:
            return "" if v is None else v
    return None


def _has_param(params: Params, name: str) -> bool:
    lname = name.lower()
    for n, _ in params:
        if n.lower() == lname:
            return True
    return False


def _param_map(obj: object, params: Params) -> dict[str, str | None]:
    """The parameters of a frozen value by lower-case name (the first of a
    name wins, as :func:`_param` reads), built once and kept on ``obj``."""
    d = obj.__dict__
    pmap: dict[str, str | None] | None = d.get("_pmap")
    if pmap is None:
        pmap = {}
        for n, v in params:
            pmap.setdefault(n.lower(), v)
        d["_pmap"] = pmap
    return pmap


def _cached_param(obj: object, params: Params, name: str) -> str | None:
    """``_param(params, name)`` in one dict look-up."""
    if not params:
        return None
    pmap = _param_map(obj, params)
    if name not in pmap:
        name = name.lower()
        if name not in pmap:
            return None
    v = pmap[name]
    return "" if v is None else v


def _cached_has_param(obj: object, params: Params, name: str) -> bool:
    """``_has_param(params, name)`` in one dict look-up."""
    if not params:
        return False
    pmap = _param_map(obj, params)
    return name in pmap or name.lower() in pmap


def _set_param(params: Params, name: str, value: str | None) -> Params:
    lname = name.lower()
    kept = [p for p in params if p[0].lower() != lname]
    kept.append((name, value))
    return tuple(kept)


def _drop_param(params: Params, name: str) -> Params:
    lname = name.lower()
    return tuple([p for p in params if p[0].lower() != lname])


_Framed = TypeVar("_Framed")
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _with_params(obj: _Framed, params: Params) -> _Framed:
    """``dataclasses.replace(obj, params=params)`` for a frozen value whose
    other fields are valid already: they are copied as they are (what was
    computed and kept on ``obj`` is not)."""
    cls = type(obj)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        _FIELD_NAMES[cls] = names
    new: _Framed = _new(cls)
    src = obj.__dict__
    d = new.__dict__
    for name in names:
        d[name] = src[name]
    d["params"] = params
    return new


@dataclass(frozen=True)
class SipURI:
    """A ``sip:`` or ``sips:`` URI; ``user``, ``password``, parameters and
    headers are kept escaped as on the wire."""

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()
    scheme: str = "sip"

    def __post_init__(self) -> None:
        if self.scheme.lower() not in ("sip", "sips"):
            raise _bad(f"SipURI with scheme {self.scheme!r}")

    def __str__(self) -> str:
        # computed once: the value is frozen, and proxies ask again and again
        text: str | None = self.__dict__.get("_text")
        if text is None:
            text = self.__dict__["_text"] = self._format()
        return text

    def _format(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out += [":", str(self.port)]
        out.append(_format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{n}={v}" for n, v in self.headers))
        return "".join(out)

    @property
    def secure(self) -> bool:
        return self.scheme.lower() == "sips"

    def param(self, name: str) -> str | None:
        """The value of a parameter ('' for a flag), None when absent."""
        return _cached_param(self, self.params, name)

    def has_param(self, name: str) -> bool:
        return _cached_has_param(self, self.params, name)

    def with_param(self, name: str, value: str | None = None) -> SipURI:
        return _with_params(self, _set_param(self.params, name, value))

    def without_param(self, name: str) -> SipURI:
        return _with_params(self, _drop_param(self.params, name))

    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.lower() if value else None

    @property
    def is_loose_router(self) -> bool:
        return self.has_param("lr")

    @property
    def host_bare(self) -> str:
        """The host without IPv6 brackets, lowercased."""
        bare: str | None = self.__dict__.get("_host_bare")
        if bare is None:
            h = self.host[1:-1] if self.host.startswith("[") else self.host
            bare = self.__dict__["_host_bare"] = h.lower()
        return bare

    def aor(self) -> str:
        """The address of record: ``scheme:user@host`` lowercased in its
        case-insensitive parts, without port, parameters or headers."""
        aor: str | None = self.__dict__.get("_aor")
        if aor is None:
            user = unquote(self.user) if self.user is not None else None
            host = self.host.lower()
            scheme = self.scheme.lower()
            aor = f"{scheme}:{user}@{host}" if user is not None else f"{scheme}:{host}"
            self.__dict__["_aor"] = aor
        return aor


@dataclass(frozen=True)
class TelURI:
    """A ``tel:`` URI (RFC 3966): a number and its parameters."""

    number: str
    params: Params = ()

    def __post_init__(self) -> None:
        if not _TEL_NUMBER_RE.fullmatch(self.number):
            raise _bad(f"invalid telephone number {self.number!r}")

    def __str__(self) -> str:
        text: str | None = self.__dict__.get("_text")
        if text is None:
            text = self.__dict__["_text"] = f"tel:{self.number}{_format_params(self.params)}"
        return text

    @property
    def scheme(self) -> str:
        return "tel"

    def param(self, name: str) -> str | None:
        return _cached_param(self, self.params, name)

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    def normalized(self) -> str:
        """The number without visual separators (RFC 3966 §3)."""
        return "".join(c for c in self.number if c not in "-.()")

    def aor(self) -> str:
        return f"tel:{self.normalized()}"


@dataclass(frozen=True)
class AbsoluteURI:
    """Any other URI scheme, kept opaque (RFC 3261 §25.1 absoluteURI)."""

    scheme: str
    opaque: str

    def __post_init__(self) -> None:
        if not _SCHEME_RE.fullmatch(self.scheme):
            raise _bad(f"invalid scheme {self.scheme!r}")
        if not _OPAQUE_RE.fullmatch(self.opaque):
            raise _bad(f"invalid {self.scheme} URI")

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"

    def aor(self) -> str:
        return str(self).lower()


URI = SipURI | TelURI | AbsoluteURI


_PC = r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+"  # paramchars without escapes
#: the usual SIP URI: ``sip[s]:[user@]host[:port]`` and parameters, without
#: escapes, password, headers or IPv6 reference; anything else goes the
#: careful way
_SIP_FAST_RE = re.compile(
    r"([Ss][Ii][Pp][Ss]?):(?:([A-Za-z0-9\-_.!~*'()&=+$,]+)@)?([A-Za-z0-9.\-]+)"
    rf"(?::([0-9]{{1,5}}))?((?:;{_PC}(?:={_PC})?)*)"
)


def _split_simple_params(text: str) -> Params:
    """``;name[=value]...`` where no value is empty and none holds ``=`` or
    ``;`` (what a pattern has checked) as parameters."""
    out: list[tuple[str, str | None]] = []
    for part in text[1:].split(";"):
        name, eq, value = part.partition("=")
        out.append((name, value) if eq else (name, None))
    return tuple(out)


@lru_cache(maxsize=8192)
def parse_uri(text: str) -> URI:
    """Parse a URI; raises :class:`SipParseError` naming the fault."""
    m = _SIP_FAST_RE.fullmatch(text)
    if m is not None:
        scheme, user, host, port_text, ptext = m.groups()
        port = None if port_text is None else int(port_text)
        if (port is None or port <= 65535) and is_valid_host(host):
            # every field is valid: made without the frozen __init__
            uri: SipURI = _new(SipURI)
            d = uri.__dict__
            d["host"] = host
            d["user"] = user
            d["password"] = None
            d["port"] = port
            d["params"] = _split_simple_params(ptext) if ptext else ()
            d["headers"] = ()
            d["scheme"] = scheme
            return uri
    return _parse_uri(text)


def _parse_uri(text: str) -> URI:
    """parse_uri the careful way, for any URI."""
    scheme, sep, rest = text.partition(":")
    if not sep or not _SCHEME_RE.fullmatch(scheme):
        raise _bad(f"no scheme in {text[:80]!r}")
    lscheme = scheme.lower()
    if lscheme in ("sip", "sips"):
        return _parse_sip(scheme, rest)
    if lscheme == "tel":
        number, _, ptext = rest.partition(";")
        params = _parse_params(ptext, "tel") if ptext else ()
        return TelURI(number, params)
    return AbsoluteURI(scheme, rest)


def _parse_sip(scheme: str, rest: str) -> SipURI:
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        u, sep, p = userinfo.partition(":")
        if not _USER_RE.fullmatch(u):
            raise _bad(f"invalid user part {u!r}")
        user = u
        if sep:
            if not _PASSWORD_RE.fullmatch(p):
                raise _bad("invalid password part")
            password = p
    headers_text: str | None = None
    q = rest.find("?")
    if q >= 0:
        rest, headers_text = rest[:q], rest[q + 1 :]
    hostport, psep, ptext = rest.partition(";")
    if not hostport:
        raise _bad("missing host")
    host, port = split_hostport(hostport)
    params = _parse_params(ptext, "URI") if psep else ()
    headers: tuple[tuple[str, str], ...] = ()
    if headers_text is not None:
        items: list[tuple[str, str]] = []
        for item in headers_text.split("&"):
            n, sep, v = item.partition("=")
            if not sep or not _HNAME_RE.fullmatch(n) or not _HNV_RE.fullmatch(v):
                raise _bad(f"invalid URI header {item!r}")
            items.append((n, v))
        headers = tuple(items)
    return SipURI(
        host=host,
        user=user,
        password=password,
        port=port,
        params=params,
        headers=headers,
        scheme=scheme,
    )


def _unq(text: str | None) -> str | None:
    return None if text is None else unquote(text)


def uri_equal(a: URI, b: URI) -> bool:
    """URI comparison of RFC 3261 §19.1.4 (and RFC 3966 §4 for tel)."""
    if isinstance(a, SipURI) and isinstance(b, SipURI):
        if a.scheme.lower() != b.scheme.lower():
            return False
        if _unq(a.user) != _unq(b.user) or _unq(a.password) != _unq(b.password):
            return False
        if a.host_bare != b.host_bare or a.port != b.port:
            return False
        pa = {n.lower(): _unq(v) for n, v in a.params}
        pb = {n.lower(): _unq(v) for n, v in b.params}
        for special in ("user", "ttl", "method", "maddr", "transport"):
            if (pa.get(special) or "").lower() != (pb.get(special) or "").lower():
                return False
        for name in pa.keys() & pb.keys():
            va, vb = pa[name], pb[name]
            if (va or "").lower() != (vb or "").lower():
                return False
        ha = {_unq(n).lower(): _unq(v) for n, v in a.headers}  # type: ignore[union-attr]
        hb = {_unq(n).lower(): _unq(v) for n, v in b.headers}  # type: ignore[union-attr]
        return ha == hb
    if isinstance(a, TelURI) and isinstance(b, TelURI):
        if a.normalized().lower() != b.normalized().lower():
            return False
        pa = {n.lower(): (v or "").lower() for n, v in a.params}
        pb = {n.lower(): (v or "").lower() for n, v in b.params}
        return pa == pb
    if isinstance(a, AbsoluteURI) and isinstance(b, AbsoluteURI):
        return str(a).lower() == str(b).lower()
    return False
