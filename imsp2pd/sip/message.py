"""SIP requests and responses as frozen dataclasses (RFC 3261 §7).

Header fields are an ordered tuple of ``(canonical name, value)`` pairs; list
headers hold one value per field (the parser splits them).  Content-Length
is not stored: :meth:`Message.encode` writes it from the body.  Typed views
of the common headers are computed on first use.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from imsp2pd.sip.errors import SipParseError
from imsp2pd.sip.headers import (
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    parse_cseq,
    parse_int_header,
    parse_name_addr,
    parse_via,
)
from imsp2pd.sip.uri import URI

HeaderFields = tuple[tuple[str, str], ...]

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

BRANCH_MAGIC = "z9hG4bK"

_M = TypeVar("_M", bound="Message")
_V = TypeVar("_V")


class _CachedView(Generic[_V]):
    """``functools.cached_property`` without its lock (Python 3.11 takes an
    RLock on every first read, in Python code): a message is read by one
    thread, and a view computed twice is the same value.  Computed on first
    read and kept in the instance's ``__dict__``, which later reads find
    first (this is a non-data descriptor)."""

    def __init__(self, func: Callable[[Any], _V]) -> None:
        self.func = func
        self.attrname = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.attrname = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = self.func(instance)
        instance.__dict__[self.attrname] = value
        return value


if TYPE_CHECKING:  # what mypy knows how to type
    from functools import cached_property
else:
    cached_property = _CachedView


_BRANCH_PREFIX = BRANCH_MAGIC + secrets.token_hex(4)
_branch_seq = itertools.count(1)


def new_branch() -> str:
    """A branch unique in space and time (§8.1.1.7): a random prefix per
    process and a counter; it need not be unpredictable (tags and Call-IDs,
    which must, stay random)."""
    return f"{_BRANCH_PREFIX}{next(_branch_seq):x}"


class _EntropyPool:
    """Unpredictable bytes from the kernel, drawn 4 KiB at a time: a tag,
    Call-ID, icid or service token per request would otherwise cost a
    getrandom() system call each (``secrets.token_hex``).  A forked child
    starts with an empty pool, so no two processes share bytes."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._buf = b""
        self._pos = 0

    def reset(self) -> None:
        self._buf = b""
        self._pos = 0

    def hex(self, nbytes: int) -> str:
        pos = self._pos
        end = pos + nbytes
        if end > len(self._buf):
            self._buf = os.urandom(max(self._size, nbytes))
            pos, end = 0, nbytes
        self._pos = end
        return self._buf[pos:end].hex()


_POOL = _EntropyPool()
os.register_at_fork(after_in_child=_POOL.reset)


def random_hex(nbytes: int) -> str:
    """``nbytes`` cryptographically random bytes as hex, like
    ``secrets.token_hex`` but without a system call per value."""
    return _POOL.hex(nbytes)


def new_tag() -> str:
    return random_hex(6)


def new_call_id(host: str) -> str:
    return f"{random_hex(10)}@{host}"


#: The typed views cached on a message, and the header each one reads: a
#: copy that changes other headers keeps them.
_VIEWS: dict[str, str] = {
    "vias": "via",
    "top_via": "via",
    "from_": "from",
    "to": "to",
    "cseq": "cseq",
    "contacts": "contact",
    "routes": "route",
    "record_routes": "record-route",
    "max_forwards": "max-forwards",
}
_FIELDS = frozenset(["headers", "body", "method", "uri", "status", "reason"])
_LNAMES: dict[str, str] = {}


_setattr = object.__setattr__
#: what a copy keeps of the original's __dict__, by what changed (see
#: Message._derive): the fields, and the views of the headers unchanged
_KEPT: dict[str | frozenset[str] | None, frozenset[str]] = {}


def _kept(changed: str | frozenset[str] | None) -> frozenset[str]:
    if changed is None:
        keep = _FIELDS
    elif isinstance(changed, str):
        keep = _FIELDS | {k for k, h in _VIEWS.items() if h != changed}
    else:
        keep = _FIELDS | {k for k, h in _VIEWS.items() if h not in changed}
    if len(_KEPT) < 1024:  # the sets of names the program edits: a few
        _KEPT[changed] = keep
    return keep


def _lname(name: str) -> str:
    """The lower-case canonical name of ``name`` (memoised: the names asked
    for are the program's own, a bounded set)."""
    lname = _LNAMES.get(name)
    if lname is None:
        lname = canonical_name(name).lower()
        if len(_LNAMES) < 4096:
            _LNAMES[name] = lname
    return lname


@dataclass(frozen=True)
class Message:
    headers: HeaderFields = ()
    body: bytes = b""

    # -- generic header access -------------------------------------------
    @cached_property
    def _index(self) -> dict[str, list[str]]:
        """Values by lower-case header name, in order (built once; from
        the index of the message this one was copied from, when a one-field
        edit left that behind)."""
        base = self.__dict__.get("_index_base")
        if base is not None:
            parent, lname, values = base
            derived = dict(parent)
            if values:
                derived[lname] = values
            else:
                derived.pop(lname, None)
            return derived
        index: dict[str, list[str]] = {}
        for n, v in self.headers:
            ln = _LNAMES.get(n) or n.lower()
            values = index.get(ln)
            if values is None:
                index[ln] = [v]
            else:
                values.append(v)
        return index

    def get(self, name: str) -> str | None:
        """The first value of a header, None when absent."""
        values = self._index.get(_lname(name))
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return list(self._index.get(_lname(name), ()))

    def has(self, name: str) -> bool:
        return _lname(name) in self._index

    def _derive(self: _M, headers: HeaderFields, changed: str | frozenset[str] | None = None) -> _M:
        """A copy with ``headers``; the typed views of headers other than
        ``changed`` (a lower-case name, or a set of them; None: all may have
        changed) are kept."""
        new = object.__new__(type(self))
        keep = _KEPT.get(changed) or _kept(changed)
        d = new.__dict__
        for k, v in self.__dict__.items():
            if k in keep:
                d[k] = v
        d["headers"] = headers
        return new

    def edit(
        self: _M,
        *,
        remove: tuple[str, ...] = (),
        drop_first: tuple[str, ...] = (),
        replace: tuple[tuple[str, str], ...] = (),
        prepend: tuple[tuple[str, str], ...] = (),
        append: tuple[tuple[str, str], ...] = (),
    ) -> _M:
        """Several edits in one copy, done in this order and each as its own
        method would: every field of the names in ``remove`` dropped
        (:meth:`remove_header`), the first field of each name in
        ``drop_first`` (:meth:`remove_first`), each ``(name, value)`` of
        ``replace`` (:meth:`replace_header`), of ``prepend``
        (:meth:`prepend_header`), then ``append`` added at the end."""
        out = list(self.headers)
        touched: set[str] = set()
        # the copy's index, from this one's when it was built: each edit
        # is one list operation on the values of its name
        parent = self.__dict__.get("_index")
        index = None if parent is None else dict(parent)
        if remove:
            gone = {_lname(n) for n in remove}
            out = [hv for hv in out if (_LNAMES.get(hv[0]) or hv[0].lower()) not in gone]
            touched |= gone
            if index is not None:
                for lname in gone:
                    index.pop(lname, None)
        for name in drop_first:
            lname = _lname(name)
            touched.add(lname)
            if index is not None:
                values = index.get(lname)
                if values is not None:
                    if len(values) > 1:
                        index[lname] = values[1:]
                    else:
                        del index[lname]
            for i, (n, _) in enumerate(out):
                if (_LNAMES.get(n) or n.lower()) == lname:
                    del out[i]
                    break
        for name, value in replace:
            lname = _lname(name)
            touched.add(lname)
            if index is not None:
                index[lname] = [value]
            field = (canonical_name(name), value)
            kept: list[tuple[str, str]] = []
            placed = False
            for hv in out:
                if (_LNAMES.get(hv[0]) or hv[0].lower()) == lname:
                    if not placed:
                        kept.append(field)
                        placed = True
                else:
                    kept.append(hv)
            if not placed:
                kept.append(field)
            out = kept
        for name, value in prepend:
            lname = _lname(name)
            touched.add(lname)
            if index is not None:
                index[lname] = [value, *index.get(lname, ())]
            field = (canonical_name(name), value)
            for i, (n, _) in enumerate(out):
                if (_LNAMES.get(n) or n.lower()) == lname:
                    out.insert(i, field)
                    break
            else:
                out.insert(0, field)
        for name, value in append:
            lname = _lname(name)
            touched.add(lname)
            if index is not None:
                index[lname] = [*index.get(lname, ()), value]
            out.append((canonical_name(name), value))
        copy = self._derive(tuple(out), frozenset(touched))
        if index is not None:
            copy.__dict__["_index"] = index
        return copy

    def with_headers(self: _M, headers: HeaderFields) -> _M:
        return self._derive(headers)

    def replace_header(self: _M, name: str, *values: str) -> _M:
        """Replace every field of ``name`` with ``values`` at the position of
        the first one (appended when absent)."""
        cname = canonical_name(name)
        lname = _lname(name)
        out: list[tuple[str, str]] = []
        placed = False
        for n, v in self.headers:
            if (_LNAMES.get(n) or n.lower()) == lname:
                if not placed:
                    out.extend([(cname, x) for x in values])
                    placed = True
            else:
                out.append((n, v))
        if not placed:
            out.extend([(cname, x) for x in values])
        return self._derive(tuple(out), lname)

    def remove_header(self: _M, *names: str) -> _M:
        """Without any field of the given names (one pass for all of them)."""
        lnames = {_lname(name) for name in names}
        if lnames.isdisjoint(self._index):
            return self
        changed = next(iter(lnames)) if len(lnames) == 1 else frozenset(lnames)
        return self._derive(
            tuple(
                [hv for hv in self.headers if (_LNAMES.get(hv[0]) or hv[0].lower()) not in lnames]
            ),
            changed,
        )

    def prepend_header(self: _M, name: str, value: str) -> _M:
        """Insert a field before the first field of the same name (or first
        of all when there is none): the rule for Via and Record-Route."""
        cname = canonical_name(name)
        lname = _lname(name)
        out = list(self.headers)
        for i, (n, _) in enumerate(out):
            if (_LNAMES.get(n) or n.lower()) == lname:
                out.insert(i, (cname, value))
                break
        else:
            out.insert(0, (cname, value))
        copy = self._derive(tuple(out), lname)
        index = self.__dict__.get("_index")
        if index is not None:
            copy.__dict__["_index_base"] = (index, lname, [value, *index.get(lname, ())])
        return copy

    def append_header(self: _M, name: str, *values: str) -> _M:
        cname = canonical_name(name)
        return self._derive(self.headers + tuple([(cname, v) for v in values]), _lname(name))

    def with_top_via(self: _M, via: Via, *, replace: bool = False) -> _M:
        """A copy with ``via`` on top: before the other Vias, or in place of
        the first one (``replace``); the parsed Via is kept with the copy, and
        so are the others already parsed, so nobody parses them again."""
        text = str(via)
        old = self.__dict__.get("vias")
        if replace:
            headers = list(self.headers)
            for i, (n, _) in enumerate(headers):
                if (_LNAMES.get(n) or n.lower()) == "via":
                    headers[i] = ("Via", text)
                    break
            copy = self._derive(tuple(headers), "via")
            index = self.__dict__.get("_index")
            if index is not None:
                copy.__dict__["_index_base"] = (index, "via", [text, *index["via"][1:]])
            rest = old[1:] if old is not None else None
        else:
            copy = self.prepend_header("Via", text)
            rest = old
        copy.__dict__["top_via"] = via
        if rest is not None:
            copy.__dict__["vias"] = [via, *rest]
        return copy

    def remove_first(self: _M, name: str) -> _M:
        lname = _lname(name)
        out = list(self.headers)
        for i, (n, _) in enumerate(out):
            if (_LNAMES.get(n) or n.lower()) == lname:
                del out[i]
                break
        else:
            return self
        copy = self._derive(tuple(out), lname)
        d = copy.__dict__
        index = self.__dict__.get("_index")
        if index is not None:
            d["_index_base"] = (index, lname, index[lname][1:])
        if lname == "via":  # a proxy relaying a response: the rest is parsed already
            vias = self.__dict__.get("vias")
            if vias is not None:
                d["vias"] = vias[1:]
                if len(vias) > 1:
                    d["top_via"] = vias[1]
        return copy

    # -- typed views -------------------------------------------------------
    @cached_property
    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.get_all("Via")]

    @cached_property
    def top_via(self) -> Via:
        """The first Via, parsed alone (a bad Via further down does not
        stop a response from being routed)."""
        values = self.get_all("Via")
        if not values:
            raise SipParseError("Missing Via")
        return parse_via(values[0])

    @cached_property
    def from_(self) -> NameAddr:
        return parse_name_addr(self._required("From"))

    @cached_property
    def to(self) -> NameAddr:
        return parse_name_addr(self._required("To"))

    @property
    def call_id(self) -> str:
        return self._required("Call-ID")

    @cached_property
    def cseq(self) -> CSeq:
        return parse_cseq(self._required("CSeq"))

    @cached_property
    def contacts(self) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.get_all("Contact") if v.strip() != "*"]

    @cached_property
    def routes(self) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.get_all("Route")]

    @cached_property
    def record_routes(self) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.get_all("Record-Route")]

    @cached_property
    def max_forwards(self) -> int | None:
        value = self.get("Max-Forwards")
        return None if value is None else parse_int_header(value, "Max-Forwards", maximum=255)

    @property
    def expires(self) -> int | None:
        value = self.get("Expires")
        return None if value is None else parse_int_header(value, "Expires")

    @property
    def content_type(self) -> str | None:
        value = self.get("Content-Type")
        return None if value is None else value.split(";", 1)[0].strip().lower()

    def _required(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise SipParseError(f"Missing {name}")
        return value

    # -- encoding ---------------------------------------------------------
    def start_line(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def encode(self) -> bytes:
        """The message on the wire (computed once: a message is immutable)."""
        wire = self.__dict__.get("_wire")
        if wire is None:
            head = "".join([f"{n}: {v}\r\n" for n, v in self.headers])
            wire = (
                f"{self.start_line()}\r\n{head}Content-Length: {len(self.body)}\r\n\r\n".encode(
                    "utf-8", "surrogateescape"
                )
                + self.body
            )
            self.__dict__["_wire"] = wire
        return wire

    def transaction_key(self) -> tuple[str, str, str]:
        """(branch, sent-by, method) of RFC 3261 §17.1.3/§17.2.3, with ACK
        and CANCEL matched to their own keys.  The method is the CSeq method
        (for a response, the one of the request it answers)."""
        via = self.top_via
        host, port = via.sent_by
        method = self.cseq.method
        return (via.branch or "", f"{host.lower()}:{port or ''}", method)


@dataclass(frozen=True, kw_only=True)
class Request(Message):
    method: str
    uri: URI

    def start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    @property
    def is_invite(self) -> bool:
        return self.method == "INVITE"


@dataclass(frozen=True, kw_only=True)
class Response(Message):
    status: int
    reason: str = ""

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    @property
    def is_final(self) -> bool:
        return self.status >= 200


SipMessage = Request | Response


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: HeaderFields = (),
    body: bytes = b"",
) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6.2: Via, From, To,
    Call-ID and CSeq copied (and Record-Route for 18x/2xx, §12.1.1); a To
    tag added when ``to_tag`` is given and the To has none."""
    copied: list[tuple[str, str]] = []
    for n, v in request.headers:
        ln = n.lower()
        if ln in ("via", "from", "call-id", "cseq"):
            copied.append((n, v))
        elif ln == "to":
            if to_tag is not None and status > 100:
                try:
                    has_tag = request.to.tag is not None
                except SipParseError:
                    has_tag = ";tag=" in v.lower()
                if not has_tag:
                    v = f"{v};tag={to_tag}"
            copied.append((n, v))
        elif ln == "record-route" and 100 < status < 300:
            copied.append((n, v))
    return Response(
        headers=tuple(copied) + tuple(extra),
        body=body,
        status=status,
        reason=reason if reason is not None else REASON_PHRASES.get(status, "Unknown"),
    )
