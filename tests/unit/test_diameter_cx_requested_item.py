"""The HSS reads an MAR's first SIP-Auth-Data-Item with cx.requested_item:
held to what cx.auth_items gives of it (scheme, authorization), over odd
messages (several items, some not Grouped, other vendors, repeated or
mistyped children)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd.diameter import cx
from imsp2pd.diameter.avp import Avp, AvpType
from imsp2pd.diameter.codes import TgppAvp
from imsp2pd.diameter.message import Message

from .diameter_strategies import grouped_or_not

vendors = st.sampled_from([None, 0, 10415, 10415, 10415])
child = st.builds(
    lambda code, value, vendor: Avp(
        int(code),
        value,
        AvpType.UTF8_STRING if isinstance(value, str) else AvpType.OCTET_STRING,
        vendor,
    ),
    st.sampled_from(
        [
            TgppAvp.SIP_AUTHENTICATION_SCHEME,
            TgppAvp.SIP_AUTHORIZATION,
            TgppAvp.SIP_ITEM_NUMBER,
            TgppAvp.SIP_AUTHENTICATE,
        ]
    ),
    st.text(max_size=5) | st.binary(max_size=5),
    vendors,
)
item = grouped_or_not(int(TgppAvp.SIP_AUTH_DATA_ITEM), st.lists(child, max_size=5), vendors)
other = st.just(Avp(int(TgppAvp.SERVER_NAME), "sip:s", AvpType.UTF8_STRING, 10415))


@settings(max_examples=400)
@given(st.lists(item | other, max_size=4))
def test_requested_item_is_the_first_auth_item(avps: list[Avp]) -> None:
    msg = Message(303, 16777216, 0x80, 1, 2, tuple(avps))
    items = cx.auth_items(msg)
    want = (items[0].scheme, items[0].authorization) if items else None
    assert cx.requested_item(msg) == want
