"""parse_quoted's one-slice path for a quoted string without escapes agrees
with reading it character by character (RFC 3261 §25.1 quoted-pair)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from imsp2pd.sip.errors import SipParseError
from imsp2pd.sip.headers import parse_quoted


def reference(text: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text):
                break
            if text[i + 1] in "\r\n":
                raise SipParseError("Bad escape in quoted string")
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise SipParseError("Unterminated quoted string")


@given(st.text(alphabet='a"\\\r\n x,=', max_size=30))
def test_same_as_the_character_loop(tail: str) -> None:
    text = '"' + tail
    try:
        expected: tuple[str, int] | str = reference(text, 0)
    except SipParseError as exc:
        expected = exc.reason
    try:
        got: tuple[str, int] | str = parse_quoted(text, 0)
    except SipParseError as exc:
        got = exc.reason
    assert got == expected


def test_examples() -> None:
    assert parse_quoted('x="abc", y', 2) == ("abc", 7)
    assert parse_quoted(r'"a\"b"', 0) == ('a"b', 6)
