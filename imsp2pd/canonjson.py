"""RFC 8785 JSON Canonicalization Scheme (JCS) for the JSON imsp2pd signs.

``dumps(value)`` returns the canonical UTF-8 bytes of a value made of
``dict`` (``str`` keys), ``list``/``tuple``, ``str``, ``int``, ``float``,
``bool`` and ``None``:

* no whitespace;
* object members sorted by the UTF-16 code units of their names (RFC 8785
  §3.2.3), which differs from Python's code-point order only for characters
  above U+FFFF against characters in U+E000..U+FFFF;
* strings escaped as ECMAScript ``JSON.stringify`` does: ``\\"``, ``\\\\``,
  ``\\b \\f \\n \\r \\t``, other C0 controls as ``\\u00xx`` (lower-case hex),
  everything else literal UTF-8; lone surrogates are refused;
* numbers in the ECMAScript ``Number.prototype.toString`` form (RFC 8785
  §3.2.2.3), so ``1.0`` is ``1`` and ``1e21`` is ``1e+21``; NaN and the
  infinities are refused, and so are integers outside the IEEE 754 exact
  range (|n| > 2**53 - 1), because a peer in another language could not
  read them back exactly (I-JSON, RFC 7493).

``loads(data)`` is the strict reader to use on signed payloads: UTF-8 only,
no duplicate member names, no NaN/Infinity, bounded depth; with
``require_canonical=True`` it also refuses input that is not byte-for-byte
the canonical form of what it parsed, so one value has exactly one signed
encoding.

Every failure raises :class:`CanonicalJSONError` (a ``ValueError``).
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

__all__ = ["CanonicalJSONError", "MAX_SAFE_INTEGER", "dumps", "loads"]

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 64

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


class CanonicalJSONError(ValueError):
    """The value cannot be canonicalised, or the input is not strict JSON."""


def _utf16_key(name: str) -> bytes:
    # Big-endian UTF-16 bytes compare like the sequence of code units.
    return name.encode("utf-16-be", "surrogatepass")


_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\\ud800-\udfff]')


def _escape_string(s: str) -> str:
    if _NEEDS_ESCAPE.search(s) is None:
        return '"' + s + '"'
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif o < 0x20:
            out.append(f"\\u{o:04x}")
        elif 0xD800 <= o <= 0xDFFF:
            raise CanonicalJSONError(f"lone surrogate U+{o:04X} in a string")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _format_number(value: int | float) -> str:
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalJSONError(
                f"integer {value} is outside the exact range of IEEE 754 doubles"
            )
        return str(value)
    if math.isnan(value) or math.isinf(value):
        raise CanonicalJSONError("NaN and Infinity are not JSON")
    if value == 0:
        return "0"  # also -0.0
    sign = "-" if value < 0 else ""
    # repr() gives the shortest digits that round-trip, as ECMAScript does.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    n = len(digits) + exponent  # value = 0.digits * 10**n
    k = len(digits)
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        esign = "+" if e >= 0 else "-"
        head = digits[0] + ("." + digits[1:] if k > 1 else "")
        text = f"{head}e{esign}{abs(e)}"
    return sign + text


def _encode(value: Any, out: list[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CanonicalJSONError(f"nesting deeper than {MAX_DEPTH}")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_escape_string(value))
    elif isinstance(value, (int, float)):
        out.append(_format_number(value))
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalJSONError(f"object member name {key!r} is not a string")
        out.append("{")
        for i, key in enumerate(sorted(value, key=_utf16_key)):
            if i:
                out.append(",")
            out.append(_escape_string(key))
            out.append(":")
            _encode(value[key], out, depth + 1)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out, depth + 1)
        out.append("]")
    else:
        raise CanonicalJSONError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 encoding of *value*."""
    out: list[str] = []
    _encode(value, out, 0)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as exc:  # pragma: no cover - surrogates caught above
        raise CanonicalJSONError(str(exc)) from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, val in pairs:
        if key in result:
            raise CanonicalJSONError(f"duplicate member name {key!r}")
        result[key] = val
    return result


def _no_constant(name: str) -> Any:
    raise CanonicalJSONError(f"{name} is not JSON")


def _parse_int(text: str) -> int | float:
    # JSON numbers are IEEE 754 doubles (RFC 8785 §3.2.2.3): integers beyond
    # the exact range are read as the double they denote.
    value = int(text)
    return value if abs(value) <= MAX_SAFE_INTEGER else float(value)


def _depth_ok(data: bytes) -> bool:
    depth = 0
    in_string = False
    escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def loads(data: bytes | str, *, require_canonical: bool = False) -> Any:
    """Parse strict JSON; optionally insist that *data* is already canonical."""
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            raise CanonicalJSONError("lone surrogate in input") from None
    else:
        raw = bytes(data)
    if not _depth_ok(raw):
        raise CanonicalJSONError(f"nesting deeper than {MAX_DEPTH}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CanonicalJSONError("input is not UTF-8") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_int=_parse_int,
        )
    except CanonicalJSONError:
        raise
    except (ValueError, RecursionError) as exc:
        raise CanonicalJSONError(f"not JSON: {exc}") from None
    if require_canonical and dumps(value) != raw:
        raise CanonicalJSONError("input is not in RFC 8785 canonical form")
    return value
