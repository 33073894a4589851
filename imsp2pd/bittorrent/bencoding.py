"""Strict bencoding (BEP 3).

The encoder takes ``int`` (not ``bool``), ``bytes``/``bytearray``/``memoryview``,
``str`` (encoded as UTF-8), ``list``/``tuple`` and ``dict`` with ``bytes`` or
``str`` keys (sorted by their raw bytes, as BEP 3 requires).

The decoder is strict, so that anything it accepts re-encodes to the same
bytes (which is why an info-hash may be computed by re-encoding a parsed
info dictionary): integers without leading zeros or ``-0``; string lengths
without leading zeros; dictionary keys that are strings, strictly ascending
(no duplicates); nothing after the value; nesting at most ``max_depth``.
Strings come back as ``bytes`` and dictionaries as ``dict[bytes, Any]``.
Every problem raises :class:`BencodeError` (a ``ValueError``) naming the
offset.

bencode.py (the PyPI package) reads and writes the same format but accepts
non-canonical input; this module exists for the strictness.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BencodeError", "Preencoded", "bdecode", "bencode"]

DEFAULT_MAX_DEPTH = 32


class BencodeError(ValueError):
    """Input is not strict bencoding, or a value cannot be bencoded."""


class Preencoded(bytes):
    """Bytes that are already bencoded: the encoder copies them verbatim."""


def _encode(value: Any, out: list[bytes], depth: int) -> None:
    if depth > 64:
        raise BencodeError("nesting too deep to encode")
    if isinstance(value, Preencoded):
        out.append(value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, bool):
        raise BencodeError("booleans have no bencoding")
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    elif isinstance(value, dict):
        items: list[tuple[bytes, Any]] = []
        for key, item in value.items():
            if isinstance(key, str):
                key = key.encode("utf-8")
            elif not isinstance(key, bytes):
                raise BencodeError(f"dictionary key {key!r} is not a string")
            items.append((key, item))
        items.sort(key=lambda kv: kv[0])
        out.append(b"d")
        previous: bytes | None = None
        for key, item in items:
            if key == previous:
                raise BencodeError(f"duplicate dictionary key {key!r}")
            previous = key
            out.append(b"%d:" % len(key))
            out.append(key)
            _encode(item, out, depth + 1)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot bencode {type(value).__name__}")


def bencode(value: Any) -> bytes:
    """Return the bencoding of *value*."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


class _Decoder:
    __slots__ = ("data", "max_depth", "pos")

    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth

    def fail(self, what: str) -> BencodeError:
        return BencodeError(f"{what} at offset {self.pos}")

    def _digits_until(self, end: int) -> int:
        data = self.data
        stop = data.find(end, self.pos)
        if stop < 0 or stop - self.pos > 20:
            raise self.fail("unterminated number")
        text = data[self.pos : stop]
        neg = text.startswith(b"-")
        body = text[1:] if neg else text
        if not body or not body.isdigit():
            raise self.fail("bad number")
        if (body[0] == 0x30 and len(body) > 1) or (neg and body == b"0"):
            raise self.fail("non-canonical number")
        if neg and end == 0x3A:
            raise self.fail("negative string length")
        self.pos = stop + 1
        value = int(body)
        return -value if neg else value

    def string(self) -> bytes:
        length = self._digits_until(0x3A)  # ':'
        end = self.pos + length
        if end > len(self.data):
            raise self.fail(f"string of {length} bytes runs past the end")
        value = self.data[self.pos : end]
        self.pos = end
        return value

    def value(self, depth: int) -> Any:
        data = self.data
        if self.pos >= len(data):
            raise self.fail("unexpected end of input")
        c = data[self.pos]
        if c == 0x69:  # i
            self.pos += 1
            return self._digits_until(0x65)
        if 0x30 <= c <= 0x39:
            return self.string()
        if depth >= self.max_depth:
            raise self.fail(f"nesting deeper than {self.max_depth}")
        if c == 0x6C:  # l
            self.pos += 1
            items: list[Any] = []
            while True:
                if self.pos >= len(data):
                    raise self.fail("unterminated list")
                if data[self.pos] == 0x65:
                    self.pos += 1
                    return items
                items.append(self.value(depth + 1))
        if c == 0x64:  # d
            self.pos += 1
            result: dict[bytes, Any] = {}
            previous: bytes | None = None
            while True:
                if self.pos >= len(data):
                    raise self.fail("unterminated dictionary")
                c = data[self.pos]
                if c == 0x65:
                    self.pos += 1
                    return result
                if not 0x30 <= c <= 0x39:
                    raise self.fail("dictionary key is not a string")
                key = self.string()
                if previous is not None and key <= previous:
                    raise self.fail(f"dictionary key {key[:40]!r} out of order or repeated")
                previous = key
                result[key] = self.value(depth + 1)
        raise self.fail(f"unexpected byte {bytes([c])!r}")


def bdecode(data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode one strict bencoded value that spans all of *data*."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BencodeError("bdecode needs bytes")
    decoder = _Decoder(bytes(data), max_depth)
    value = decoder.value(0)
    if decoder.pos != len(decoder.data):
        raise decoder.fail("trailing data")
    return value
