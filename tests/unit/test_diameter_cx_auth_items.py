"""cx.auth_items (one pass per group) against the AVP-by-AVP reading it replaced."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from imsp2pd.diameter import cx
from imsp2pd.diameter.avp import Avp, AvpType
from imsp2pd.diameter.codes import AvpCode, TgppAvp, Vendor
from imsp2pd.diameter.message import Message


def careful(msg: Message) -> list[cx.AuthItem]:
    """The reading auth_items did before: one search per field."""

    def opt_bytes(avp: Avp, code: int) -> bytes | None:
        value = avp.get(code)
        return value if isinstance(value, bytes) else None

    def opt_str(avp: Avp | None, code: int) -> str | None:
        if avp is None:
            return None
        value = avp.get(code)
        return value if isinstance(value, str) else None

    items = []
    for item in msg.find_all(TgppAvp.SIP_AUTH_DATA_ITEM):
        if item.type is not AvpType.GROUPED:
            continue
        digest = item.find(TgppAvp.SIP_DIGEST_AUTHENTICATE)
        if digest is not None and digest.type is not AvpType.GROUPED:
            digest = None
        number = item.get(TgppAvp.SIP_ITEM_NUMBER)
        items.append(
            cx.AuthItem(
                scheme=opt_str(item, TgppAvp.SIP_AUTHENTICATION_SCHEME) or "",
                number=number if isinstance(number, int) else None,
                authenticate=opt_bytes(item, TgppAvp.SIP_AUTHENTICATE),
                authorization=opt_bytes(item, TgppAvp.SIP_AUTHORIZATION),
                confidentiality_key=opt_bytes(item, TgppAvp.CONFIDENTIALITY_KEY),
                integrity_key=opt_bytes(item, TgppAvp.INTEGRITY_KEY),
                digest_realm=opt_str(digest, AvpCode.DIGEST_REALM),
                digest_algorithm=opt_str(digest, AvpCode.DIGEST_ALGORITHM),
                digest_qop=opt_str(digest, AvpCode.DIGEST_QOP),
                digest_ha1=opt_str(digest, AvpCode.DIGEST_HA1),
            )
        )
    return items


TGPP = int(Vendor.TGPP)
CODES = [
    (int(TgppAvp.SIP_AUTHENTICATION_SCHEME), TGPP),
    (int(TgppAvp.SIP_ITEM_NUMBER), TGPP),
    (int(TgppAvp.SIP_AUTHENTICATE), TGPP),
    (int(TgppAvp.SIP_AUTHORIZATION), TGPP),
    (int(TgppAvp.CONFIDENTIALITY_KEY), TGPP),
    (int(TgppAvp.INTEGRITY_KEY), TGPP),
    (int(AvpCode.DIGEST_REALM), 0),
    (int(AvpCode.DIGEST_ALGORITHM), 0),
    (int(AvpCode.DIGEST_QOP), 0),
    (int(AvpCode.DIGEST_HA1), 0),
    (int(TgppAvp.SIP_AUTHENTICATION_SCHEME), 0),  # the right code, no vendor
    (999, TGPP),
]
VALUES = st.one_of(st.binary(max_size=3), st.text(max_size=3), st.integers(0, 9))


def leaf() -> st.SearchStrategy[Avp]:
    return st.builds(
        lambda key, value, vendor_bit: Avp(
            key[0], value, AvpType.OCTET_STRING, key[1] if key[1] or vendor_bit else None
        ),
        st.sampled_from(CODES),
        VALUES,
        st.booleans(),
    )


def group(code: int, vendor: int | None, children: st.SearchStrategy[Avp]) -> Any:
    return st.one_of(
        st.lists(children, max_size=8).map(
            lambda cs: Avp(code, tuple(cs), AvpType.GROUPED, vendor)
        ),
        VALUES.map(lambda v: Avp(code, v, AvpType.OCTET_STRING, vendor)),  # not Grouped
    )


DIGEST = group(int(TgppAvp.SIP_DIGEST_AUTHENTICATE), TGPP, leaf())
ITEM = group(int(TgppAvp.SIP_AUTH_DATA_ITEM), TGPP, st.one_of(leaf(), DIGEST))


@given(st.lists(st.one_of(ITEM, leaf()), max_size=4))
def test_auth_items_reads_as_the_careful_reading(avps: list[Avp]) -> None:
    msg = Message(303, 16777216, 0x80, 1, 2, tuple(avps))
    assert cx.auth_items(msg) == careful(msg)


def test_an_maa_and_a_mar() -> None:
    origin = cx.Origin("s.ims.example.org", "ims.example.org")
    mar = cx.mar(origin, "s;1;1", "ims.example.org", "a@x", "sip:a@x", "sip:s", cx.SCHEME_DIGEST)
    assert cx.auth_items(mar) == careful(mar) == [cx.AuthItem(scheme=cx.SCHEME_DIGEST)]
