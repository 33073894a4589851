"""Header names and the structured header values of RFC 3261 §20, §25.1.

Header fields are stored in messages as ``(canonical name, value text)``
pairs; the parsers here turn the value text of the headers that need
structure into frozen dataclasses (:class:`NameAddr`, :class:`Via`,
:class:`CSeq`, :class:`AuthHeader`) and back again with ``str()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from imsp2pd.sip.errors import SipParseError
from imsp2pd.sip.uri import (
    URI,
    Params,
    _cached_has_param,
    _cached_param,
    _drop_param,
    _set_param,
    _split_simple_params,
    _with_params,
    is_valid_host,
    parse_uri,
    split_hostport,
)

#: RFC 3261 §7.3.3 and the compact forms registered since.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN = [
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Organization",
    "P-Access-Network-Info",
    "P-Associated-URI",
    "P-Asserted-Identity",
    "P-Called-Party-ID",
    "P-Charging-Function-Addresses",
    "P-Charging-Vector",
    "P-Preferred-Identity",
    "P-Visited-Network-ID",
    "Path",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "Security-Client",
    "Security-Server",
    "Security-Verify",
    "Server",
    "Service-Route",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
]
_CANONICAL: dict[str, str] = {name.lower(): name for name in _KNOWN}

#: Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1): the
#: parser splits them into one field per value.  The authentication headers
#: are not split: their values hold commas between parameters.
LIST_HEADERS: frozenset[str] = frozenset(
    name.lower()
    for name in [
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Error-Info",
        "In-Reply-To",
        "P-Associated-URI",
        "P-Asserted-Identity",
        "P-Charging-Function-Addresses",
        "P-Preferred-Identity",
        "P-Visited-Network-ID",
        "Path",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Reject-Contact",
        "Require",
        "Route",
        "Security-Client",
        "Security-Server",
        "Security-Verify",
        "Service-Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    ]
)

#: Headers that may appear at most once (RFC 3261 §20, Table 2).
SINGLE_HEADERS: frozenset[str] = frozenset(
    ["call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type", "expires"]
)

_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_WORD_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+")
_LWS_RE = re.compile(r"[ \t]+")


#: canonical_name's answers by the name as written (bounded in number and
#: length: names come from the wire)
_CANONICAL_MEMO: dict[str, str] = {}
_MEMO_MAX = 4096


def canonical_name(name: str) -> str:
    """Expand a compact form and give a known header its usual spelling."""
    cname = _CANONICAL_MEMO.get(name)
    if cname is None:
        lname = name.lower()
        if lname in COMPACT_FORMS:
            cname = COMPACT_FORMS[lname]
        else:
            cname = _CANONICAL.get(lname, name)
        if len(_CANONICAL_MEMO) < _MEMO_MAX and len(name) <= 64:
            _CANONICAL_MEMO[name] = cname
    return cname


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


#: a list without quotes whose <> are balanced and not nested, and its elements
_ANGLE_LIST_RE = re.compile(r"(?:[^<>]|<[^<>]*>)*")
_ANGLE_ITEM_RE = re.compile(r"(?:[^<>,]|<[^<>]*>)+")


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, not inside quotes or ``<>``.

    Raises :class:`SipParseError` on an unbalanced quote or angle bracket.
    Empty elements (``a,,b``) are dropped as RFC 7230-style lists allow.
    """
    if "," not in value and "\\" not in value:
        # fast path: one element; only the balance of quotes and brackets to check
        if value.count('"') % 2:
            raise SipParseError("Unterminated quoted string in header value")
        lt, gt = value.count("<"), value.count(">")
        if lt == gt <= 1 and (lt == 0 or value.find("<") < value.find(">")):
            item = value.strip(" \t")
            return [item] if item else []
    elif '"' not in value and "\\" not in value:
        if "<" not in value and ">" not in value:
            # only commas to split at
            items = [item.strip(" \t") for item in value.split(",")]
            return [item for item in items if item]
        if _ANGLE_LIST_RE.fullmatch(value):
            # balanced, unnested <>: the commas outside them split
            items = [item.strip(" \t") for item in _ANGLE_ITEM_RE.findall(value)]
            return [item for item in items if item]
    out: list[str] = []
    start = 0
    in_quote = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            if in_angle:
                raise SipParseError("Nested '<' in header value")
            in_angle = True
        elif c == ">":
            if not in_angle:
                raise SipParseError("Unbalanced '>' in header value")
            in_angle = False
        elif c == "," and not in_angle:
            out.append(value[start:i].strip(" \t"))
            start = i + 1
        i += 1
    if in_quote:
        raise SipParseError("Unterminated quoted string in header value")
    if in_angle:
        raise SipParseError("Unterminated '<' in header value")
    out.append(value[start:].strip(" \t"))
    return [item for item in out if item]


def parse_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted-string beginning at ``text[start] == '"'``; return its
    unescaped content and the index just after the closing quote."""
    assert text[start] == '"'
    end = text.find('"', start + 1)
    if end >= 0 and text.find("\\", start + 1, end) < 0:
        return text[start + 1 : end], end + 1  # no escape before the closing quote
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 >= n:
                break
            nxt = text[i + 1]
            if nxt in "\r\n":
                raise SipParseError("Bad escape in quoted string")
            out.append(nxt)
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise SipParseError("Unterminated quoted string")


def quote(text: str) -> str:
    """A quoted-string holding ``text``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_header_params(text: str, what: str) -> Params:
    """Parse generic-params ``;name[=token|host|quoted-string]`` (each one
    introduced by ``;``).  Quoted values keep their quotes so that the text
    round trips; :func:`unquote_param` reads them."""
    if _SIMPLE_PARAMS_RE.fullmatch(text) is not None:
        # the common form: no quotes, no whitespace, every part valid
        return _split_simple_params(text)
    out: list[tuple[str, str | None]] = []
    s = text.strip(" \t")
    i = 0
    n = len(s)
    while i < n:
        if s[i] != ";":
            raise SipParseError(f"Bad {what} parameters near {s[i : i + 20]!r}")
        i += 1
        while i < n and s[i] in " \t":
            i += 1
        j = i
        while j < n and s[j] not in "=; \t":
            j += 1
        name = s[i:j]
        if not is_token(name):
            raise SipParseError(f"Bad {what} parameter name {name!r}")
        while j < n and s[j] in " \t":
            j += 1
        value: str | None = None
        if j < n and s[j] == "=":
            j += 1
            while j < n and s[j] in " \t":
                j += 1
            if j < n and s[j] == '"':
                _, end = parse_quoted(s, j)
                value = s[j:end]
                j = end
            else:
                k = j
                while k < n and s[k] not in "; \t":
                    k += 1
                value = s[j:k]
                if not _param_value_ok(value):
                    raise SipParseError(f"Bad value of {what} parameter {name!r}")
                j = k
            while j < n and s[j] in " \t":
                j += 1
        out.append((name, value))
        i = j
    return tuple(out)


_PARAM_VALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+")
_T = r"[A-Za-z0-9\-.!%*_+`'~]+"  # token
_V = r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+"  # what _param_value_ok accepts
#: ``;name[=value]`` repeated, names tokens and values what
#: :func:`_param_value_ok` accepts: what :func:`parse_header_params` reads
#: part by part, in one match
_SIMPLE_PARAMS_RE = re.compile(rf"(?:;{_T}(?:={_V})?)+")


def _param_value_ok(value: str) -> bool:
    return _PARAM_VALUE_RE.fullmatch(value) is not None


def unquote_param(value: str | None) -> str | None:
    if value is not None and value.startswith('"'):
        return parse_quoted(value, 0)[0]
    return value


def format_header_params(params: Params) -> str:
    return "".join([f";{n}" if v is None else f";{n}={v}" for n, v in params])


@dataclass(frozen=True)
class NameAddr:
    """``[display-name] <URI> *(;param)`` or an addr-spec (From, To, Contact,
    Route, Record-Route, Path, Service-Route, P-Asserted-Identity...).

    ``display`` is the display name unquoted (None when absent).  ``params``
    are the header parameters (``tag``, ``expires``, ``q``...), not the URI's.
    """

    uri: URI
    display: str | None = None
    params: Params = ()

    def __str__(self) -> str:
        # computed once: the value is frozen
        text: str | None = self.__dict__.get("_text")
        if text is None:
            head = f"{quote(self.display)} " if self.display is not None else ""
            text = f"{head}<{self.uri}>{format_header_params(self.params)}"
            self.__dict__["_text"] = text
        return text

    def param(self, name: str) -> str | None:
        return unquote_param(_cached_param(self, self.params, name))

    def has_param(self, name: str) -> bool:
        return _cached_has_param(self, self.params, name)

    def with_param(self, name: str, value: str | None = None) -> NameAddr:
        return _with_params(self, _set_param(self.params, name, value))

    def without_param(self, name: str) -> NameAddr:
        return _with_params(self, _drop_param(self.params, name))

    @property
    def tag(self) -> str | None:
        return self.param("tag")


_new = object.__new__

#: the usual name-addr: ``<URI>`` without display name, then plain parameters
_NAME_ADDR_FAST_RE = re.compile(rf"<([^<> \t\"]+)>((?:;{_T}(?:={_V})?)*)")


@lru_cache(maxsize=8192)
def parse_name_addr(text: str) -> NameAddr:
    """Parse a name-addr or addr-spec with header parameters."""
    m = _NAME_ADDR_FAST_RE.fullmatch(text)
    if m is not None:
        uri_text, ptext = m.groups()
        na: NameAddr = _new(NameAddr)
        d = na.__dict__
        d["uri"] = parse_uri(uri_text)
        d["display"] = None
        d["params"] = _split_simple_params(ptext) if ptext else ()
        return na
    return _parse_name_addr(text)


def _parse_name_addr(text: str) -> NameAddr:
    """parse_name_addr the careful way, for any form."""
    s = text.strip(" \t")
    if not s:
        raise SipParseError("Empty address")
    display: str | None = None
    i = 0
    if s[0] == '"':
        display, i = parse_quoted(s, 0)
        while i < len(s) and s[i] in " \t":
            i += 1
        if i >= len(s) or s[i] != "<":
            raise SipParseError("Quoted display name not followed by '<'")
    lt = s.find("<", i)
    if lt >= 0:
        if display is None and lt > 0:
            words = s[:lt].strip(" \t")
            for word in _LWS_RE.split(words):
                if word and not is_token(word):
                    raise SipParseError(f"Bad display name {words!r}")
            display = _LWS_RE.sub(" ", words) if words else None
        gt = s.find(">", lt)
        if gt < 0:
            raise SipParseError("Unterminated '<' in address")
        uri_text = s[lt + 1 : gt]
        if " " in uri_text or "\t" in uri_text or "<" in uri_text:
            raise SipParseError("Whitespace inside '<>' of address")
        uri = parse_uri(uri_text)
        rest = s[gt + 1 :]
    else:
        # addr-spec: the URI ends at the first ';' (its params belong to the
        # header), and must not contain ',', '?' or ';' of its own (§20.10).
        semi = s.find(";")
        uri_text = s if semi < 0 else s[:semi]
        rest = "" if semi < 0 else s[semi:]
        uri_text = uri_text.rstrip(" \t")
        if any(c in uri_text for c in " \t,?"):
            raise SipParseError(f"Bad addr-spec {uri_text[:60]!r}")
        uri = parse_uri(uri_text)
    params = parse_header_params(rest, "address") if rest.strip(" \t") else ()
    return NameAddr(uri=uri, display=display, params=params)


@dataclass(frozen=True)
class Via:
    """``SIP/2.0/transport sent-by *(;param)`` (RFC 3261 §20.42)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: Params = (),
        protocol: str = "SIP/2.0",
    ) -> None:
        # the dataclass's own __init__ would run interpreted, a setattr a field
        d = self.__dict__
        d["transport"] = transport
        d["host"] = host
        d["port"] = port
        d["params"] = params
        d["protocol"] = protocol

    def __str__(self) -> str:
        # computed once: the value is frozen
        text: str | None = self.__dict__.get("_text")
        if text is None:
            port = f":{self.port}" if self.port is not None else ""
            params = format_header_params(self.params)
            text = f"{self.protocol}/{self.transport} {self.host}{port}{params}"
            self.__dict__["_text"] = text
        return text

    def param(self, name: str) -> str | None:
        return unquote_param(_cached_param(self, self.params, name))

    def has_param(self, name: str) -> bool:
        return _cached_has_param(self, self.params, name)

    def with_param(self, name: str, value: str | None = None) -> Via:
        return _with_params(self, _set_param(self.params, name, value))

    @property
    def branch(self) -> str | None:
        # read a dozen times per request on its way through a proxy: kept
        d = self.__dict__
        if "_branch" not in d:
            d["_branch"] = self.param("branch")
        branch: str | None = d["_branch"]
        return branch

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def response_address(self, default_port: int = 5060) -> tuple[str, int]:
        """Where a response goes over an unreliable transport (§18.2.2 and
        RFC 3581): ``received`` and ``rport`` override the sent-by."""
        host = self.param("maddr") or self.param("received") or self.host
        if host.startswith("["):
            host = host[1:-1]
        rport = self.param("rport")
        if rport:
            return host, int(rport)
        return host, self.port if self.port is not None else default_port


#: the usual Via, ``SIP/2.0/transport host[:port]`` then parameters without
#: quotes or whitespace, none of which parse_via would refuse (a branch with
#: a value, an rport without or with digits, no ttl); anything else goes the
#: careful way
_VIA_FAST_RE = re.compile(
    r"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9.\-]+)(?::([0-9]{1,5}))?"
    rf"((?:;(?:(?i:branch)={_V}|(?i:rport)(?:=[0-9]+)?"
    rf"|(?!(?i:branch|rport|ttl)(?:[=;]|$)){_T}(?:={_V})?))*)"
)


@lru_cache(maxsize=8192)
def parse_via(text: str) -> Via:
    m = _VIA_FAST_RE.fullmatch(text)
    if m is not None:
        transport, host, port_text, ptext = m.groups()
        port = None if port_text is None else int(port_text)
        if (port is None or port <= 65535) and is_valid_host(host):
            params = _split_simple_params(ptext) if ptext else ()
            # every field is valid: the instance is made without the frozen
            # dataclass's __init__ (a setattr per field)
            via: Via = _new(Via)
            d = via.__dict__
            d["transport"] = transport.upper()
            d["host"] = host
            d["port"] = port
            d["params"] = params
            d["protocol"] = "SIP/2.0"
            return via
    return _parse_via(text)


_VIA_CHECKED = frozenset(["branch", "rport", "ttl"])


def _check_via_params(params: Params) -> None:
    for pname, pvalue in params:
        lname = pname.lower()
        if lname not in _VIA_CHECKED:
            continue
        if lname == "branch" and not pvalue:
            raise SipParseError("Via branch without value")
        if lname == "rport" and pvalue is not None and not pvalue.isdigit():
            raise SipParseError("Bad Via rport")
        if lname == "ttl" and (pvalue is None or not pvalue.isdigit() or int(pvalue) > 255):
            raise SipParseError("Bad Via ttl")


def _parse_via(text: str) -> Via:
    """parse_via the careful way, for any form."""
    s = text.strip(" \t")
    parts: list[str] = []
    i = 0
    for _ in range(3):
        m = _TOKEN_RE.match(s, i)
        if not m:
            raise SipParseError(f"Bad Via protocol in {s[:40]!r}")
        parts.append(m.group(0))
        i = m.end()
        while i < len(s) and s[i] in " \t":
            i += 1
        if len(parts) < 3:
            if i >= len(s) or s[i] != "/":
                raise SipParseError(f"Bad Via protocol in {s[:40]!r}")
            i += 1
            while i < len(s) and s[i] in " \t":
                i += 1
    name, version, transport = parts
    if i >= len(s):
        raise SipParseError("Via without sent-by")
    j = i
    while j < len(s) and s[j] not in "; \t":
        j += 1
    hostport = s[i:j]
    # LWS is allowed around ':' in sent-by
    rest = s[j:]
    m2 = re.match(r"[ \t]*:[ \t]*(\d+)", rest)
    if m2 and ":" not in hostport.lstrip("[").split("]")[-1]:
        hostport = f"{hostport}:{m2.group(1)}"
        rest = rest[m2.end() :]
    try:
        host, port = split_hostport(hostport)
    except SipParseError as exc:
        raise SipParseError(f"Bad Via sent-by: {exc.reason}") from None
    params = parse_header_params(rest, "Via") if rest.strip(" \t") else ()
    _check_via_params(params)
    return Via(
        transport=transport.upper(),
        host=host,
        port=port,
        params=params,
        protocol=f"{name}/{version}",
    )


@dataclass(frozen=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


@lru_cache(maxsize=8192)
def parse_cseq(text: str) -> CSeq:
    parts = text.split()
    if len(parts) != 2:
        raise SipParseError("Bad CSeq")
    num, method = parts
    if not num.isdigit() or not num.isascii() or len(num) > 10 or int(num) >= 2**31:
        raise SipParseError("Bad CSeq number")
    if not is_token(method):
        raise SipParseError("Bad CSeq method")
    return CSeq(int(num), method)


def parse_int_header(text: str, name: str, *, maximum: int = 2**32 - 1) -> int:
    s = text.strip(" \t")
    if not s.isdigit() or not s.isascii() or len(s) > 10 or int(s) > maximum:
        raise SipParseError(f"Bad {name}")
    return int(s)


@dataclass(frozen=True)
class AuthHeader:
    """``scheme param=value, ...`` of WWW-Authenticate, Authorization and the
    proxy forms.  Values are stored unquoted; ``str()`` quotes every value but
    the ones RFC 2617 requires as tokens (algorithm, qop in credentials,
    nc, stale)."""

    scheme: str
    params: tuple[tuple[str, str], ...] = ()

    _TOKEN_PARAMS = frozenset(["algorithm", "nc", "stale"])

    def get(self, name: str) -> str | None:
        lname = name.lower()
        for n, v in self.params:
            if n.lower() == lname:
                return v
        return None

    def __str__(self) -> str:
        items = []
        for n, v in self.params:
            if n.lower() in self._TOKEN_PARAMS and is_token(v):
                items.append(f"{n}={v}")
            else:
                items.append(f"{n}={quote(v)}")
        return f"{self.scheme} " + ", ".join(items)


@lru_cache(maxsize=4096)
def parse_auth(text: str) -> AuthHeader:
    """An Authorization or WWW-Authenticate value, kept (it is frozen): the
    I-CSCF and then the S-CSCF read the same REGISTER's Authorization."""
    s = text.strip(" \t")
    m = _TOKEN_RE.match(s)
    if not m:
        raise SipParseError("Bad authentication scheme")
    scheme = m.group(0)
    i = m.end()
    params: list[tuple[str, str]] = []
    n = len(s)
    while True:
        while i < n and s[i] in " \t":
            i += 1
        if i >= n:
            break
        m = _TOKEN_RE.match(s, i)
        if not m:
            raise SipParseError("Bad authentication parameter")
        name = m.group(0)
        i = m.end()
        while i < n and s[i] in " \t":
            i += 1
        if i >= n or s[i] != "=":
            raise SipParseError(f"Authentication parameter {name!r} without value")
        i += 1
        while i < n and s[i] in " \t":
            i += 1
        if i < n and s[i] == '"':
            value, i = parse_quoted(s, i)
        else:
            m = _TOKEN_RE.match(s, i)
            if not m:
                raise SipParseError(f"Bad value of authentication parameter {name!r}")
            value = m.group(0)
            i = m.end()
        params.append((name, value))
        while i < n and s[i] in " \t":
            i += 1
        if i < n:
            if s[i] != ",":
                raise SipParseError("Missing ',' between authentication parameters")
            i += 1
    return AuthHeader(scheme=scheme, params=tuple(params))
