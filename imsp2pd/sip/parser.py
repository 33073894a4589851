"""Parsing SIP messages (RFC 3261 §7, §18.3, §25) and framing them on
stream transports.

:func:`parse_message` turns one datagram (or one framed stream message) into
a :class:`~imsp2pd.sip.message.Request` or
:class:`~imsp2pd.sip.message.Response`, or raises
:class:`~imsp2pd.sip.errors.SipParseError` and nothing else.
:func:`error_response` builds the 400 (or 505, 513...) for a request that
failed, when enough of it was read.  :class:`StreamFramer` cuts a TCP/TLS
byte stream into messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from imsp2pd.sip.errors import SipParseError
from imsp2pd.sip.headers import (
    LIST_HEADERS,
    SINGLE_HEADERS,
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    is_token,
    parse_cseq,
    parse_int_header,
    parse_name_addr,
    parse_via,
    split_list,
)
from imsp2pd.sip.message import HeaderFields, Request, Response, SipMessage, new_tag
from imsp2pd.sip.uri import parse_uri

MAX_MESSAGE = 1 << 20
MAX_HEADERS = 512

#: request methods known to be tokens
_METHODS = frozenset(
    "INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER"
    " MESSAGE UPDATE".split()
)
_VERSION_RE = re.compile(r"SIP/(\d+)\.(\d+)", re.IGNORECASE)
_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")
_LINE_SPLIT_RE = re.compile(r"\r?\n")
_BAD_CHARS_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: every byte but the control characters of _BAD_CHARS_RE other than CR and
#: LF: what is left of a head without them is empty
_NOT_CTL = bytes(c for c in range(256) if c in (9, 10, 13) or 0x20 <= c != 0x7F)
#: the same but CR and LF: what is left of a head without them is its CRs,
#: LFs and control characters
_NOT_CTL_CR_LF = bytes(c for c in range(256) if c == 9 or 0x20 <= c != 0x7F)
_CL_RE = re.compile(
    rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE
)


def _split_head(data: bytes) -> tuple[bytes, bytes, bool]:
    """(head, body, terminated): cut at the first empty line."""
    m = _HEAD_END_RE.search(data)
    if m is None:
        return data, b"", False
    return data[: m.start()], data[m.end() :], True


def parse_message(data: bytes, *, stream: bool = False, check_length: bool = True) -> SipMessage:
    """Parse one SIP message.

    ``stream`` is True for a message framed from TCP/TLS (then the body is
    exactly what Content-Length says, already cut by the framer); for a
    datagram the Content-Length, when present, must not exceed what arrived
    and the rest of the datagram is discarded (§18.3).  ``check_length``
    False parses a header block alone (to answer a message too large).
    """
    i = 0
    while data.startswith(b"\r\n", i):
        i += 2
    if i:
        data = data[i:]
    if not data:
        raise SipParseError("Empty message")
    end = data.find(b"\r\n\r\n")
    head_b = data[:end]
    if end >= 0:
        lines = head_b.decode("utf-8", "surrogateescape").split("\r\n")
        # CRLF line ends only and no control character: no byte of the head
        # is left by the translation but the CR and LF of its CRLFs (then
        # the first CRLFCRLF is the first empty line, and no line is
        # empty); a folded line is no header line to _parse_plain
        if (
            len(head_b.translate(None, _NOT_CTL_CR_LF)) == 2 * len(lines) - 2
            and len(lines) <= MAX_HEADERS + 1
        ):
            try:
                msg = _parse_plain(lines, data[end + 4 :], check_length)
            except SipParseError:
                msg = None
            if msg is not None:
                return msg
        # something is wrong (or unusual): the careful way finds and names it
    crlf = head_b.count(b"\r\n")
    # the usual head: CRLF line ends only (then the first CRLFCRLF is the first
    # empty line, and no line of the head is empty), no folding, no control
    # character
    plain = (
        end >= 0
        and head_b.count(b"\n") == crlf
        and head_b.count(b"\r") == crlf
        and b"\r\n " not in head_b
        and b"\r\n\t" not in head_b
        and not head_b.translate(None, _NOT_CTL)
    )
    if plain:
        body = data[end + 4 :]
        terminated = True
        head = head_b.decode("utf-8", "surrogateescape")
        lines = head.split("\r\n")
    else:
        head_b, body, terminated = _split_head(data)
        head = head_b.decode("utf-8", "surrogateescape")
        lines = _LINE_SPLIT_RE.split(head)
    is_request, method, status, reason, uri_text, deferred = _parse_start_line(lines[0])
    headers, lnames, fault = _parse_header_lines(lines[1:], plain)
    try:
        if deferred is not None:
            raise deferred
        if fault is not None:
            raise fault
        if not terminated:
            raise SipParseError("Incomplete message: no empty line after the headers")
        return _build(
            is_request, method, status, reason, uri_text, headers, lnames, body, check_length
        )
    except SipParseError as exc:
        raise exc.with_context(
            method=method, headers=tuple(headers), is_request=is_request
        ) from None


def _parse_start_line(
    line: str,
) -> tuple[bool, str | None, int, str, str, SipParseError | None]:
    if line[:4].upper() == "SIP/":
        # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        parts = line.split(" ", 2)
        if len(parts) < 2:
            raise SipParseError("Bad status line", is_request=False)
        _check_version(parts[0], is_request=False)
        code = parts[1]
        if (
            len(code) != 3
            or not code.isdigit()
            or not code.isascii()
            or not 100 <= int(code) <= 699
        ):
            raise SipParseError("Bad status code", is_request=False)
        reason = parts[2] if len(parts) == 3 else ""
        if _BAD_CHARS_RE.search(reason):
            raise SipParseError("Control character in reason phrase", is_request=False)
        return False, None, int(code), reason, "", None
    parts = line.split(" ")
    method = parts[0]
    if method not in _METHODS and not is_token(method):
        raise SipParseError("Bad method in request line", is_request=True)
    if len(parts) != 3 or not all(parts):
        return True, method, 0, "", "", SipParseError("Malformed request line", is_request=True)
    _, uri_text, version = parts
    try:
        _check_version(version, is_request=True)
    except SipParseError as exc:
        return True, method, 0, "", uri_text, exc
    return True, method, 0, "", uri_text, None


def _check_version(text: str, *, is_request: bool) -> None:
    if text == "SIP/2.0":
        return
    m = _VERSION_RE.fullmatch(text)
    if m is None:
        raise SipParseError("Bad SIP version", is_request=is_request)
    if (int(m.group(1)), int(m.group(2))) != (2, 0):
        raise SipParseError(f"Version {text} not supported", status=505, is_request=is_request)


# what _parse_plain does with a header field, by its name
_K_OTHER = 0  # keeps it
_K_LIST = 1  # splits it (a list header)
_K_VIA = 2  # splits it and parses each Via
_K_SINGLE = 3  # at most one (the kinds from here on)
_K_FROM = 4
_K_TO = 5
_K_CALL_ID = 6
_K_CSEQ = 7
_K_MAX_FORWARDS = 8
_K_EXPIRES = 9
_K_CONTENT_LENGTH = 10
_CHECKED_KINDS = {
    "from": _K_FROM,
    "to": _K_TO,
    "call-id": _K_CALL_ID,
    "cseq": _K_CSEQ,
    "max-forwards": _K_MAX_FORWARDS,
    "expires": _K_EXPIRES,
    "content-length": _K_CONTENT_LENGTH,
}

#: what the header lines need of a header name as written: its canonical
#: name, that name in lower case, whether it is a list header and its kind
#: for _parse_plain (bounded in number and length: names come from the wire)
_NAME_INFO: dict[str, tuple[str, str, bool, int]] = {}
_NAME_INFO_MAX = 4096


def _kind(lname: str) -> int:
    if lname == "via":
        return _K_VIA
    if lname in LIST_HEADERS:
        return _K_LIST
    if lname in SINGLE_HEADERS:
        return _CHECKED_KINDS.get(lname, _K_SINGLE)
    return _K_OTHER


def _name_info(name: str) -> tuple[str, str, bool, int] | None:
    """The canonical name of a header name as written (with the blanks
    before its colon), its lower case, whether it is a list header and its
    kind; None when the name is not a token."""
    info = _NAME_INFO.get(name)
    if info is None:
        stripped = name.rstrip(" \t")
        if not is_token(stripped):
            return None
        cname = canonical_name(stripped)
        lname = cname.lower()
        info = (cname, lname, lname in LIST_HEADERS, _kind(lname))
        if len(_NAME_INFO) < _NAME_INFO_MAX and len(name) <= 64:
            _NAME_INFO[name] = info
    return info


def _parse_header_lines(
    lines: list[str], plain: bool = False
) -> tuple[list[tuple[str, str]], list[str], SipParseError | None]:
    """The header fields, their names in lower case, and the first fault met
    (the fields that could be read are still returned, so that a 400 can be
    built).  ``plain`` says the lines are neither folded, empty nor hold a
    control character."""
    fault: SipParseError | None = None
    raw: list[str]
    if plain:
        raw = lines
    else:
        # unfold (§7.3.1): a line starting with SP/HTAB continues the last one
        raw = []
        for line in lines:
            if line[:1] in (" ", "\t"):
                if not raw:
                    fault = fault or SipParseError("Header continuation before any header")
                    continue
                raw[-1] = raw[-1].rstrip(" \t") + " " + line.strip(" \t")
            elif line:
                raw.append(line)
            else:
                fault = fault or SipParseError("Empty line inside headers")
    if len(raw) > MAX_HEADERS:
        return [], [], SipParseError("Too many header fields")
    out: list[tuple[str, str]] = []
    lnames: list[str] = []
    known = _NAME_INFO.get
    for line in raw:
        name, colon, value = line.partition(":")
        if not colon:
            fault = fault or SipParseError(f"Header line without colon: {line[:30]!r}")
            continue
        info = known(name) or _name_info(name)
        if info is None:
            name = name.rstrip(" \t")
            fault = fault or SipParseError(f"Bad header name {name[:30]!r}")
            continue
        cname, lname, is_list, _ = info
        value = value.strip(" \t")
        if not plain and _BAD_CHARS_RE.search(value):
            fault = fault or SipParseError(f"Control character in {cname}")
            continue
        if is_list:
            if (
                "," in value
                or '"' in value
                or "\\" in value
                or (
                    ("<" in value or ">" in value)
                    and not (
                        value.find("<") < value.find(">")
                        and value.count("<") == 1
                        and value.count(">") == 1
                    )
                )
            ):
                try:
                    items = split_list(value)
                except SipParseError as exc:
                    fault = fault or SipParseError(f"{exc.reason} ({cname})")
                    continue
                for item in items:
                    out.append((cname, item))
                    lnames.append(lname)
            elif value:
                # one element, at most one <> pair: what split_list would give
                out.append((cname, value))
                lnames.append(lname)
        else:
            out.append((cname, value))
            lnames.append(lname)
    return out, lnames, fault


#: a list header's value that is one element (or none): no comma, quote or
#: backslash, at most one <> pair in order (what split_list would not cut)
_ONE_ELEMENT_RE = re.compile(r'[^,"\\<>]*(?:<[^,"\\<>]*>[^,"\\<>]*)?')
_new = object.__new__
_setattr = object.__setattr__


#: the header lines of plain heads met lately and what _read_line made of
#: them (most lines repeat: a response's Vias, From and To are its
#: request's, and many lines are the same in every message); emptied when
#: full, the lines kept are bounded in length.  Few are kept: the hits that
#: matter come within a transaction's round trip, and each entry is a
#: handful of objects the collector must look at while they live.  With
#: 8192 lines the young collections (every 50,000 objects kept) came every
#: 0.8 s at 1,171 MESSAGE/s and took 20-40 ms each, with a 130 ms older
#: one every 17 s; with 512: a quarter as many collections, ~9% less CPU
#: per MESSAGE, and the p99 latency from 40-56 to 8-32 ms
_LINES: dict[str, tuple[int, str, Any, Any, Any]] = {}
_LINES_MAX = 512
_LINE_KEPT_MAX = 512


#: parse_via and parse_name_addr without their caches, for _read_line: a line
#: it reads is new to _LINES, so its Vias or address are most likely new to
#: those caches too (a branch, a tag), where they would only push out what
#: other callers keep and cost a look-up, an insertion and an eviction each
_parse_via_once = parse_via.__wrapped__
_parse_name_addr_once = parse_name_addr.__wrapped__


def _read_line(line: str) -> tuple[int, str, Any, Any, Any] | None:
    """What _parse_plain takes from one header line, when nothing in it is
    wrong (otherwise None or a SipParseError): its kind, lower-case name,
    then for a list header its fields, values and (for Via) parsed Vias, all
    tuples; for any other its field, value and what was parsed (the
    NameAddr of From and To, the CSeq, the Content-Length)."""
    name, colon, value = line.partition(":")
    info = _NAME_INFO.get(name) or _name_info(name)
    if info is None or not colon:
        return None
    cname, lname, _, kind = info
    value = value.strip(" \t")
    parsed: Any = None
    if (
        kind == _K_VIA
        and value
        and not ("," in value or '"' in value or "\\" in value or "<" in value or ">" in value)
    ):
        # the usual: one Via (what _ONE_ELEMENT_RE would say, quicker)
        return kind, lname, ((cname, value),), (value,), (_parse_via_once(value),)
    if kind == _K_LIST or kind == _K_VIA:
        if _ONE_ELEMENT_RE.fullmatch(value) is None:
            items = tuple(split_list(value))
        else:
            items = (value,) if value else ()
        if kind == _K_VIA:
            parsed = tuple([_parse_via_once(item) for item in items])
        return kind, lname, tuple([(cname, item) for item in items]), items, parsed
    if kind == _K_FROM or kind == _K_TO:
        parsed = _parse_name_addr_once(value)
    elif kind == _K_CSEQ:
        parsed = parse_cseq(value)
    elif kind == _K_CALL_ID:
        if not value or " " in value or "\t" in value:
            return None
    elif kind == _K_MAX_FORWARDS:
        parsed = parse_int_header(value, "Max-Forwards", maximum=255)
    elif kind == _K_EXPIRES:
        parse_int_header(value, "Expires")
    elif kind == _K_CONTENT_LENGTH:
        parsed = parse_int_header(value, "Content-Length")
    return kind, lname, (cname, value), value, parsed


def remember_via(via: Via) -> None:
    """Keep the header line of a Via this process writes (a proxy's own Via,
    a Via it stamped with received/rport) as _read_line would read it: the
    line is new to the parser, and comes back to this process with the
    response (and with the request, when the next hop lives here too).

    For a Via that ``parse_via(str(via))`` gives back equal (the ones
    :class:`~imsp2pd.sip.proxy.SipCore` writes: held by
    tests/unit/test_sip_parser_plain.py) and that is one Via to _read_line
    (none of ``,"\\<>``, nothing to strip)."""
    text = str(via)
    line = "Via: " + text
    if len(line) > _LINE_KEPT_MAX or line in _LINES:
        return
    if (
        not text
        or "," in text
        or '"' in text
        or "\\" in text
        or "<" in text
        or ">" in text
        or text[0] in " \t"
        or text[-1] in " \t"
    ):
        return
    if len(_LINES) >= _LINES_MAX:
        _LINES.clear()
    _LINES[line] = (_K_VIA, "via", (("Via", text),), (text,), (via,))


def _parse_plain(lines: list[str], body: bytes, check_length: bool) -> SipMessage | None:
    """parse_message of a plain head (CRLF line ends, no folding, no
    control character, at most MAX_HEADERS fields) in one pass, when
    nothing in it is wrong or unusual; otherwise None or a SipParseError,
    and the careful way (_parse_header_lines then _build) reads it again,
    finds the fault and names it.  What it returns is what the careful way
    would (held together by tests/unit/test_sip_parser.py)."""
    line = lines[0]
    method: str | None
    if line.startswith("SIP/2.0 "):
        parts = line.split(" ", 2)
        code = parts[1]
        if len(code) != 3 or not code.isdigit() or not code.isascii():
            return None
        status = int(code)
        if not 100 <= status <= 699:
            return None
        # a plain head holds no control character: the reason is good
        reason = parts[2] if len(parts) == 3 else ""
        method = None
        uri_text = ""
    else:
        parts = line.split(" ")
        if len(parts) != 3:
            return None
        method, uri_text, version = parts
        if method not in _METHODS or not uri_text or version != "SIP/2.0":
            return None
        status = 0
        reason = ""
    fields: list[tuple[str, str]] = []
    index: dict[str, list[str]] = {}  # Message._index
    vias: list[Via] = []
    from_: NameAddr | None = None
    to: NameAddr | None = None
    cseq: CSeq | None = None
    max_forwards: int | None = None
    length = -1
    seen = _LINES.get
    append = fields.append
    for line in lines[1:]:
        entry = seen(line)
        if entry is None:
            entry = _read_line(line)
            if entry is None:
                return None
            if len(line) <= _LINE_KEPT_MAX:
                if len(_LINES) >= _LINES_MAX:
                    _LINES.clear()
                _LINES[line] = entry
        kind, lname, field, value, parsed = entry
        if kind == _K_OTHER:
            append(field)
            values = index.get(lname)
            if values is None:
                index[lname] = [value]
            else:
                values.append(value)
        elif kind < _K_SINGLE:  # a list: its fields, values (and Vias)
            if not value:
                continue  # nothing in it
            fields.extend(field)
            values = index.get(lname)
            if values is None:
                index[lname] = list(value)
            else:
                values.extend(value)
            if kind == _K_VIA:
                vias.extend(parsed)
        elif kind == _K_CONTENT_LENGTH:
            if length >= 0:
                return None  # a second one
            length = parsed
        else:
            if lname in index:
                return None  # a second one
            append(field)
            index[lname] = [value]
            if kind == _K_FROM:
                from_ = parsed
            elif kind == _K_TO:
                to = parsed
            elif kind == _K_CSEQ:
                cseq = parsed
            elif kind == _K_MAX_FORWARDS:
                max_forwards = parsed
    if not vias or from_ is None or to is None or cseq is None or "call-id" not in index:
        return None
    if length >= 0:
        if length > len(body) and check_length:
            return None
        if length < len(body):
            body = body[:length]
    # every field is valid: made without the frozen dataclass's __init__,
    # with the views parsed on the way kept (as _build keeps them)
    fields_and_views: dict[str, object] = {
        "headers": tuple(fields),
        "body": body,
        "vias": vias,
        "top_via": vias[0],
        "cseq": cseq,
        "_index": index,
        "from_": from_,
        "to": to,
        "max_forwards": max_forwards,
    }
    msg: SipMessage
    if method is not None:
        if cseq.method != method:
            return None
        fields_and_views["method"] = method
        fields_and_views["uri"] = parse_uri(uri_text)
        msg = _new(Request)
    else:
        fields_and_views["status"] = status
        fields_and_views["reason"] = reason
        msg = _new(Response)
    _setattr(msg, "__dict__", fields_and_views)
    return msg


#: the headers _build checks one by one, in the order of the message
_CHECKED = frozenset(["via", "from", "to", "call-id", "max-forwards", "expires"])
_REQUIRED = (
    ("Via", "via"),
    ("From", "from"),
    ("To", "to"),
    ("Call-ID", "call-id"),
    ("CSeq", "cseq"),
)
_REQUIRED_NAMES = frozenset(ln for _, ln in _REQUIRED)


def _build(
    is_request: bool,
    method: str | None,
    status: int,
    reason: str,
    uri_text: str,
    fields: list[tuple[str, str]],
    lnames: list[str],
    body: bytes,
    check_length: bool,
) -> SipMessage:
    # the names present, in the order they first appear
    present = dict.fromkeys(lnames)
    singles = SINGLE_HEADERS.intersection(present)
    if sum(map(lnames.count, singles)) > len(singles):
        for ln in present:
            if ln in SINGLE_HEADERS and lnames.count(ln) > 1:
                raise SipParseError(f"Multiple {canonical_name(ln)} header fields")
    headers: HeaderFields
    if "content-length" in present:
        # at most one: a second was refused above
        i = lnames.index("content-length")
        cl_value = fields[i][1]
        headers = (*fields[:i], *fields[i + 1 :])
        lnames = lnames[:i] + lnames[i + 1 :]
        length = parse_int_header(cl_value, "Content-Length")
        if length > len(body) and check_length:
            raise SipParseError("Content-Length larger than the body")
        if length < len(body):
            body = body[:length]
    else:
        headers = tuple(fields)
    if not _REQUIRED_NAMES <= present.keys():
        for name, ln in _REQUIRED:
            if ln not in present:
                raise SipParseError(f"Missing {name} header")
    vias = []
    parsed: dict[str, object] = {"max_forwards": None}
    checked = _CHECKED
    index: dict[str, list[str]] = {}  # Message._index, made here from the names we have
    for (n, v), ln in zip(headers, lnames, strict=True):
        values = index.get(ln)
        if values is None:
            index[ln] = [v]
        else:
            values.append(v)
        if ln not in checked:
            continue
        if ln == "via":
            vias.append(parse_via(v))
        elif ln == "from" or ln == "to":
            try:
                parsed["from_" if ln == "from" else "to"] = parse_name_addr(v)
            except SipParseError as exc:
                raise SipParseError(f"Bad {n} header: {exc.reason}") from None
        elif ln == "call-id":
            if not v or " " in v or "\t" in v:
                raise SipParseError("Bad Call-ID")
        elif ln == "max-forwards":
            parsed["max_forwards"] = parse_int_header(v, "Max-Forwards", maximum=255)
        else:  # expires
            parse_int_header(v, "Expires")
    cseq = parse_cseq(headers[lnames.index("cseq")][1])
    msg: SipMessage
    if is_request:
        assert method is not None
        if cseq.method != method:
            raise SipParseError("CSeq method does not match the request method")
        try:
            uri = parse_uri(uri_text)
        except SipParseError as exc:
            raise SipParseError(f"Bad Request-URI: {exc.reason}") from None
        msg = Request(headers, body, method=method, uri=uri)
    else:
        msg = Response(headers, body, status=status, reason=reason)
    # what was parsed to validate is kept: the typed views need not parse again
    cache = msg.__dict__
    cache["vias"] = vias
    cache["top_via"] = vias[0]
    cache["cseq"] = cseq
    cache["_index"] = index
    cache.update(parsed)
    return msg


_REASON_SAFE_RE = re.compile(r"[^\x20-\x7e]")


def head_error_response(head: bytes, status: int, reason: str) -> Response | None:
    """The response (513, 400) to a message of which only the header block
    ``head`` is kept, or None when it cannot be answered."""
    try:
        msg = parse_message(head + b"\r\n\r\n", stream=True, check_length=False)
    except SipParseError as exc:
        return error_response(
            SipParseError(
                reason,
                status=status,
                method=exc.method,
                headers=exc.headers,
                is_request=exc.is_request,
            )
        )
    if not isinstance(msg, Request):
        return None
    return error_response(
        SipParseError(
            reason, status=status, method=msg.method, headers=msg.headers, is_request=True
        )
    )


def error_response(err: SipParseError) -> Response | None:
    """The response to a request that failed to parse, when one can be
    built (a request, not ACK, with a usable top Via and the dialog
    headers); None means drop it."""
    if err.is_request is not True or err.headers is None or err.method in (None, "ACK"):
        return None
    fields = err.headers
    names = {n.lower() for n, _ in fields}
    if not {"via", "from", "to", "call-id", "cseq"} <= names:
        return None
    try:
        top = next(v for n, v in fields if n.lower() == "via")
        parse_via(top)
    except SipParseError:
        return None
    copied: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n, v in fields:
        ln = n.lower()
        if ln == "to" and ";tag=" not in v.lower().replace(" ", ""):
            v = f"{v};tag={new_tag()}"
        if ln == "via" or (ln in ("from", "to", "call-id", "cseq") and ln not in seen):
            copied.append((n, v))
            seen.add(ln)
    reason = _REASON_SAFE_RE.sub("?", err.reason)[:120]
    return Response(tuple(copied), b"", status=err.status, reason=reason)


# -- stream framing -----------------------------------------------------


@dataclass(frozen=True)
class FramedMessage:
    data: bytes


@dataclass(frozen=True)
class KeepAlive:
    """A CRLFCRLF ping (RFC 5626 §3.5.1): answer with a single CRLF."""


@dataclass(frozen=True)
class FrameError:
    """The stream cannot go on.  ``head`` holds the message header when it
    was read, so a response (``status``: 513 too large, 400 bad framing)
    can be sent before closing; ``fatal`` says whether to close (a message
    that is only too large is skipped and the stream goes on)."""

    reason: str
    status: int
    head: bytes | None
    fatal: bool


FrameEvent = FramedMessage | KeepAlive | FrameError


class StreamFramer:
    """Cuts a TCP/TLS byte stream into SIP messages by Content-Length."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        self._scan = 0
        self._skip = 0
        self._dead = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[FrameEvent]:
        if self._dead:
            return []
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
        self._buf += data
        events: list[FrameEvent] = []
        while not self._dead:
            event = self._next()
            if event is None:
                break
            events.append(event)
        return events

    def _next(self) -> FrameEvent | None:
        buf = self._buf
        if self._skip:
            n = min(self._skip, len(buf))
            del buf[:n]
            self._skip -= n
            if self._skip:
                return None
        # keep-alives and stray CRLFs between messages
        while buf[:1] in (b"\r", b"\n"):
            if buf[:4] == b"\r\n\r\n":
                del buf[:4]
                self._scan = 0
                return KeepAlive()
            if buf[:2] == b"\r\n" and len(buf) >= 3 and buf[2:3] != b"\r":
                del buf[:2]
            elif buf[:1] == b"\n":
                del buf[:1]
            elif len(buf) < 4:
                return None
            else:
                del buf[:2]
            self._scan = 0
        if not buf:
            return None
        m = _HEAD_END_RE.search(buf, max(0, self._scan - 3))
        if m is None:
            self._scan = len(buf)
            if len(buf) > self.max_message:
                self._dead = True
                del buf[:]
                return FrameError("Message header too large", 513, None, fatal=True)
            return None
        head = bytes(buf[: m.start()])
        head_len = m.end()
        self._scan = 0
        cls = _CL_RE.findall(head)
        values = {v.strip() for v in cls}
        if len(values) > 1:
            self._dead = True
            return FrameError("Conflicting Content-Length header fields", 400, head, fatal=True)
        length = 0
        if values:
            text = values.pop()
            if not text.isdigit() or len(text) > 10:
                self._dead = True
                return FrameError("Bad Content-Length", 400, head, fatal=True)
            length = int(text)
        total = head_len + length
        if total > self.max_message:
            del buf[:head_len]
            n = min(length, len(buf))
            del buf[:n]
            self._skip = length - n
            return FrameError("Message too large", 513, head + b"\r\n\r\n", fatal=False)
        if len(buf) < total:
            return None
        message = bytes(buf[:total])
        del buf[:total]
        return FramedMessage(message)
