"""The result of an answer read in one pass (:func:`message.result_of`, used by
:attr:`Message.result_code` and :func:`cx.outcome`), held to reading
Result-Code, then Experimental-Result, each looked up on its own."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd.diameter import cx
from imsp2pd.diameter.avp import Avp, AvpType
from imsp2pd.diameter.codes import AvpCode
from imsp2pd.diameter.message import Message

from .diameter_strategies import grouped_or_not

vendors = st.sampled_from([None, 0, 10415])
values = st.integers(0, 2**32 - 1) | st.binary(max_size=4)


def scalar(code: int) -> st.SearchStrategy[Avp]:
    return st.builds(
        lambda v, vendor: Avp(
            code, v, AvpType.UNSIGNED32 if isinstance(v, int) else AvpType.OCTET_STRING, vendor
        ),
        values,
        vendors,
    )


children = st.lists(
    scalar(int(AvpCode.EXPERIMENTAL_RESULT_CODE)) | scalar(int(AvpCode.VENDOR_ID)), max_size=3
)
experimental = grouped_or_not(int(AvpCode.EXPERIMENTAL_RESULT), children, vendors)
avps = st.lists(
    scalar(int(AvpCode.RESULT_CODE))
    | experimental
    | st.just(Avp(int(AvpCode.SESSION_ID), "s;1", AvpType.UTF8_STRING)),
    max_size=6,
)


def careful_result_code(msg: Message) -> int | None:
    code = msg.get_int(AvpCode.RESULT_CODE)
    if code is not None:
        return code
    exp = msg.find(AvpCode.EXPERIMENTAL_RESULT)
    if exp is not None and exp.type is AvpType.GROUPED:
        inner = exp.get(AvpCode.EXPERIMENTAL_RESULT_CODE)
        if isinstance(inner, int):
            return inner
    return None


def careful_outcome(msg: Message) -> cx.Outcome:
    code = msg.get_int(AvpCode.RESULT_CODE)
    if code is not None:
        return cx.Outcome(code, False)
    exp = msg.find(AvpCode.EXPERIMENTAL_RESULT)
    if exp is not None and exp.type is AvpType.GROUPED:
        value = exp.get(AvpCode.EXPERIMENTAL_RESULT_CODE)
        if isinstance(value, int):
            return cx.Outcome(value, True)
    return cx.Outcome(0, False)


@settings(max_examples=400)
@given(avps)
def test_one_pass_reads_as_the_look_ups(found: list[Avp]) -> None:
    msg = Message(300, 16777216, 0, 1, 2, tuple(found))
    assert msg.result_code == careful_result_code(msg)
    assert cx.outcome(msg) == careful_outcome(msg)
