"""RFC 8785 canonical JSON: the RFC's own examples, ordering, escaping, strict reading."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imsp2pd.canonjson import MAX_SAFE_INTEGER, CanonicalJSONError, dumps, loads


@pytest.mark.parametrize(
    ("value", "text"),
    [
        # RFC 8785 Appendix B (IEEE 754 -> ES6 number form)
        (0.0, "0"),
        (-0.0, "0"),
        (5e-324, "5e-324"),
        (-5e-324, "-5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (9007199254740992.0, "9007199254740992"),
        (295147905179352830000.0, "295147905179352830000"),
        (1e23, "1e+23"),
        (1e21, "1e+21"),
        (999999999999999900000.0, "999999999999999900000"),
        (0.000001, "0.000001"),
        (1e-7, "1e-7"),
        (333333333.3333333, "333333333.3333333"),
        (4.5, "4.5"),
        (1.0, "1"),
        (100, "100"),
        (-100, "-100"),
        (MAX_SAFE_INTEGER, "9007199254740991"),
    ],
)
def test_numbers(value: float, text: str) -> None:
    assert dumps(value) == text.encode()


def test_rfc8785_example_object() -> None:
    # RFC 8785 §3.2.2 example, with its literal strings.
    value = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert dumps(value) == expected.encode("utf-8")


def test_sorting_by_utf16_code_units() -> None:
    # RFC 8785 §3.2.3 example keys.
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = list(json.loads(dumps(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


def test_escapes() -> None:
    assert (
        dumps("\b\f\n\r\t\x00\x1f\x7f\u2028") == b'"\\b\\f\\n\\r\\t\\u0000\\u001f\x7f\xe2\x80\xa8"'
    )


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, 2**53, -(2**53), "\ud800", {1: "x"}, {"a": object()}, b"x"],
)
def test_refuses(value: object) -> None:
    with pytest.raises(CanonicalJSONError):
        dumps(value)


def test_too_deep() -> None:
    value: list[object] = []
    for _ in range(100):
        value = [value]
    with pytest.raises(CanonicalJSONError):
        dumps(value)
    with pytest.raises(CanonicalJSONError):
        loads(b"[" * 100 + b"]" * 100)


@pytest.mark.parametrize(
    "data",
    [b'{"a":1,"a":2}', b"NaN", b"[Infinity]", b"\xff", b"{", b"", b'{"a":1}x'],
)
def test_loads_strict(data: bytes) -> None:
    with pytest.raises(CanonicalJSONError):
        loads(data)


def test_loads_require_canonical() -> None:
    assert loads(b'{"a":1,"b":[true]}', require_canonical=True) == {"a": 1, "b": [True]}
    for data in [b'{"b":1,"a":2}', b'{"a": 1}', b'{"a":1.0}', b'"\\u00e9"']:
        assert loads(data) is not None
        with pytest.raises(CanonicalJSONError):
            loads(data, require_canonical=True)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_round_trip_and_idempotent(value: object) -> None:
    data = dumps(value)
    back = loads(data, require_canonical=True)
    assert dumps(back) == data
    # The standard library reads the same value back, reading integers beyond
    # 2**53 as the doubles they are; Python's == treats 1 and 1.0 alike.
    assert json.loads(data, parse_int=lambda t: int(t) if len(t) < 16 else float(t)) == back
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        assert back == value


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_text_reads_back_exactly(value: float) -> None:
    assert float(dumps(value)) == value


@given(st.binary(max_size=200))
def test_loads_never_raises_anything_else(data: bytes) -> None:
    try:
        loads(data, require_canonical=True)
    except CanonicalJSONError:
        pass
