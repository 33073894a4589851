"""multipart/mixed bodies (RFC 2046 §5.1) for the content PUBLISH.

The provider's PUBLISH carries two parts: the .torrent
(``application/x-bittorrent``) and the metadata (``application/json``).
:func:`build` makes such a body and its Content-Type; :func:`parse` takes a
body and the boundary from the Content-Type and returns the parts, raising
:class:`MultipartError` (answered with 400) for anything malformed. Parts are
binary-safe: a .torrent holds arbitrary bytes, so the boundary is random and
checked not to occur in any part.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

MAX_PARTS = 16
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
_PARAM = re.compile(r';\s*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')


class MultipartError(ValueError):
    """A multipart body that cannot be used; the message names the fault."""


@dataclass(frozen=True)
class Part:
    content_type: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def content_type_params(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype; a=b; c="d"`` → (``type/subtype`` lower-cased, params)."""
    main, _, rest = value.partition(";")
    params = {}
    for m in _PARAM.finditer(";" + rest):
        v = m.group(2)
        if v.startswith('"'):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        params[m.group(1).lower()] = v
    return main.strip().lower(), params


def build(parts: Sequence[Part]) -> tuple[str, bytes]:
    """The Content-Type (with a fresh boundary) and the body for ``parts``."""
    while True:
        boundary = "imsp2p-" + secrets.token_hex(16)
        marker = b"--" + boundary.encode()
        if not any(marker in p.body for p in parts):
            break
    out = bytearray()
    for p in parts:
        out += marker + b"\r\n"
        out += f"Content-Type: {p.content_type}\r\n".encode()
        for k, v in p.headers.items():
            out += f"{k}: {v}\r\n".encode()
        out += b"\r\n" + p.body + b"\r\n"
    out += marker + b"--\r\n"
    return f'multipart/mixed;boundary="{boundary}"', bytes(out)


def parse(content_type: str, body: bytes) -> list[Part]:
    """The parts of a multipart/mixed ``body``."""
    kind, params = content_type_params(content_type)
    if kind != "multipart/mixed":
        raise MultipartError(f"expected multipart/mixed, not {kind or 'nothing'}")
    boundary = params.get("boundary")
    if not boundary or not _BOUNDARY.match(boundary):
        raise MultipartError("multipart/mixed without a valid boundary parameter")
    delimiter = b"--" + boundary.encode()
    # The body may start with the delimiter or have a preamble ending in CRLF.
    if body.startswith(delimiter):
        pos = 0
    else:
        pos = body.find(b"\r\n" + delimiter)
        if pos < 0:
            raise MultipartError("no boundary delimiter in the body")
        pos += 2
    parts: list[Part] = []
    while True:
        pos += len(delimiter)
        if body[pos : pos + 2] == b"--":
            break  # close delimiter; an epilogue may follow
        eol = body.find(b"\r\n", pos)
        if eol < 0 or body[pos:eol].strip(b" \t"):
            raise MultipartError("malformed boundary delimiter line")
        start = eol + 2
        end = body.find(b"\r\n" + delimiter, start)
        if end < 0:
            raise MultipartError("multipart body ends without a close delimiter")
        parts.append(_part(body[start:end]))
        if len(parts) > MAX_PARTS:
            raise MultipartError(f"more than {MAX_PARTS} parts")
        pos = end + 2
    if not parts:
        raise MultipartError("multipart body without parts")
    return parts


def _part(raw: bytes) -> Part:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        if raw.startswith(b"\r\n"):  # no headers at all
            head, body = b"", raw[2:]
        else:
            raise MultipartError("part without a blank line after its headers")
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n") if head else []:
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            raise MultipartError("malformed part header")
        try:
            headers[name.decode("ascii").strip().lower()] = value.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise MultipartError("part header is not text") from None
    ctype = headers.pop("content-type", "text/plain")
    return Part(ctype, body, headers)
