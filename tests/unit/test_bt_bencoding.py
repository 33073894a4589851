"""Strict bencoding: canonical forms, refusals, fuzzing, interop with bencode.py."""

from __future__ import annotations

from typing import Any

import bencode as bencode_py
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imsp2pd.bittorrent.bencoding import BencodeError, Preencoded, bdecode, bencode


def test_encode_examples() -> None:
    assert bencode(b"spam") == b"4:spam"
    assert bencode("é") == b"2:\xc3\xa9"
    assert bencode(0) == b"i0e"
    assert bencode(-3) == b"i-3e"
    assert bencode([b"a", 1, []]) == b"l1:ai1elee"
    assert bencode({"b": 1, b"a": {}}) == b"d1:ade1:bi1ee"
    assert bencode({b"\xff": 1, b"a": 2}) == b"d1:ai2e1:\xffi1ee"
    assert bencode({b"x": Preencoded(b"i5e")}) == b"d1:xi5ee"


@pytest.mark.parametrize("value", [True, 1.5, None, {1: 2}, {"a": 1, b"a": 2}, object()])
def test_encode_refuses(value: Any) -> None:
    with pytest.raises(BencodeError):
        bencode(value)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"i01e",
        b"i-0e",
        b"ie",
        b"i-e",
        b"i1",
        b"i1.5e",
        b"01:a",
        b"-1:a",
        b"5:abc",
        b"l",
        b"d",
        b"d1:ai1e",
        b"d1:bi1e1:ai2ee",  # out of order
        b"d1:ai1e1:ai2ee",  # duplicate
        b"di1ei2ee",  # integer key
        b"i1ei2e",  # trailing
        b"x",
        b"i" + b"9" * 30 + b"e",
        b"1" * 30 + b":",
    ],
)
def test_decode_refuses(data: bytes) -> None:
    with pytest.raises(BencodeError):
        bdecode(data)


def test_depth_limit() -> None:
    assert bdecode(b"l" * 32 + b"e" * 32, max_depth=32) is not None
    with pytest.raises(BencodeError, match="nesting"):
        bdecode(b"l" * 33 + b"e" * 33, max_depth=32)
    with pytest.raises(BencodeError):
        bdecode(b"l" * 100_000)


values = st.recursive(
    st.integers(-(2**63), 2**63) | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=6), inner, max_size=4)
    ),
    max_leaves=25,
)


@given(values)
def test_round_trip_and_interop(value: Any) -> None:
    data = bencode(value)
    assert bdecode(data) == value
    assert bencode_py.bencode(value) == data


@given(st.binary(max_size=300))
def test_decode_never_raises_anything_else(data: bytes) -> None:
    try:
        value = bdecode(data)
    except BencodeError:
        return
    assert bencode(value) == data  # strict: whatever is accepted is canonical
