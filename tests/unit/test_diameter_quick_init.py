"""quick_init: the codec's and the peer's per-message dataclasses built as the generated __init__ builds them."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imsp2pd.diameter import cx, peer
from imsp2pd.diameter.avp import GENERATED_INITS, quick_init
from imsp2pd.diameter.message import Header, Message

QUICK = [
    Header,
    Message,
    cx.Outcome,
    cx.AuthItem,
    peer.Send,
    peer.IncomingRequest,
    peer.AnswerReceived,
]


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__name__)
def test_same_signature_as_the_generated_init(cls: type) -> None:
    generated = GENERATED_INITS[cls]
    assert inspect.signature(cls.__init__) == inspect.signature(generated)
    assert cls.__init__.__qualname__ == generated.__qualname__


VALUES = st.one_of(st.integers(), st.text(max_size=4), st.binary(max_size=4), st.none())


@given(data=st.data())
def test_same_object_as_the_generated_init(data: st.DataObject) -> None:
    cls = data.draw(st.sampled_from(QUICK))
    fields = dataclasses.fields(cls)
    required = [f for f in fields if f.default is dataclasses.MISSING]
    given_ = len(required) + data.draw(st.integers(0, len(fields) - len(required)))
    values = [data.draw(VALUES) for _ in range(given_)]
    as_keywords = data.draw(st.booleans())
    args: tuple[Any, ...] = () if as_keywords else tuple(values)
    kwargs = {f.name: v for f, v in zip(fields, values, strict=False)} if as_keywords else {}
    quick = cls(*args, **kwargs)
    slow = object.__new__(cls)
    GENERATED_INITS[cls](slow, *args, **kwargs)
    assert quick == slow and repr(quick) == repr(slow) and hash(quick) == hash(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(quick, fields[0].name, 1)


def test_refuses_what_it_cannot_copy() -> None:
    @dataclass(frozen=True, slots=True)
    class WithFactory:
        items: list[int] = field(default_factory=list)

    @dataclass(frozen=True, slots=True)
    class WithPostInit:
        x: int

        def __post_init__(self) -> None:
            pass

    for cls in (WithFactory, WithPostInit):
        with pytest.raises(TypeError):
            quick_init(cls)
    with pytest.raises(TypeError):
        Message()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Header(1, 2, 3, 4, 5, 6)  # type: ignore[call-arg]
