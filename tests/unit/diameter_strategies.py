"""Hypothesis strategies shared by the Diameter tests."""

from __future__ import annotations

from hypothesis import strategies as st

from imsp2pd.diameter.avp import Avp, AvpType


def grouped_or_not(
    code: int, children: st.SearchStrategy[list[Avp]], vendors: st.SearchStrategy[int | None]
) -> st.SearchStrategy[Avp]:
    """An AVP ``code`` that is Grouped (of ``children``) or, mistyped, an
    OctetString, with any of ``vendors``."""
    return st.builds(
        lambda kids, vendor, grouped: Avp(
            code,
            tuple(kids) if grouped else b"x",
            AvpType.GROUPED if grouped else AvpType.OCTET_STRING,
            vendor,
        ),
        children,
        vendors,
        st.booleans(),
    )
