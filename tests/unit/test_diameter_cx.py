"""Cx request builders and answer readers (TS 29.229)."""

from __future__ import annotations

from imsp2pd.diameter import cx
from imsp2pd.diameter.codes import (
    Application,
    AvpCode,
    Command,
    CxResult,
    ReasonCode,
    ServerAssignmentType,
    TgppAvp,
    UserAuthorizationType,
    Vendor,
)
from imsp2pd.diameter.dictionary import default_dictionary
from imsp2pd.diameter.message import answer, decode_message

D = default_dictionary()
ME = cx.Origin("icscf.ims.example.org", "ims.example.org")


def roundtrip(msg):  # type: ignore[no-untyped-def]
    # Strict request decoding checks every required AVP of the command.
    return decode_message(msg.encode(), D)


def test_session_ids_are_unique_and_well_formed() -> None:
    ids = cx.SessionIds("scscf.ims.example.org", 1234.5)
    a, b = ids.next(), ids.next()
    assert a == "scscf.ims.example.org;1234;1" and b.endswith(";2")


def test_every_request_has_the_cx_header_avps() -> None:
    reqs = [
        cx.uar(
            ME,
            "s;1",
            "ims.example.org",
            "a@x",
            "sip:a@x",
            "ims.example.org",
            UserAuthorizationType.DE_REGISTRATION,
        ),
        cx.mar(
            ME, "s;2", "ims.example.org", "a@x", "sip:a@x", "sip:s", cx.SCHEME_AKA, 3, b"r" * 30
        ),
        cx.sar(
            ME,
            "s;3",
            "ims.example.org",
            ["sip:a@x", "tel:+1"],
            "sip:s",
            ServerAssignmentType.REGISTRATION,
            impi="a@x",
        ),
        cx.lir(ME, "s;4", "ims.example.org", "sip:a@x", dest_host="hss.ims.example.org"),
        cx.rtr(
            ME,
            "s;5",
            "scscf",
            "ims.example.org",
            "a@x",
            ["sip:a@x"],
            ReasonCode.SERVER_CHANGE,
            "moved",
        ),
        cx.ppr(ME, "s;6", "scscf", "ims.example.org", "a@x", b"<IMSSubscription/>"),
    ]
    codes = [r.code for r in reqs]
    assert codes == [300, 303, 301, 302, 304, 305]
    for r in reqs:
        got = roundtrip(r)
        assert got.application == Application.CX and got.is_request and got.is_proxiable
        assert got.avps[0].code == AvpCode.SESSION_ID  # Session-Id first
        vsa = got.find(AvpCode.VENDOR_SPECIFIC_APPLICATION_ID)
        assert vsa is not None and vsa.get(AvpCode.VENDOR_ID) == Vendor.TGPP
        assert got.get(AvpCode.AUTH_SESSION_STATE) == 1


def test_request_details() -> None:
    uar = roundtrip(
        cx.uar(ME, "s", "r", "a@x", "sip:a@x", "visited", UserAuthorizationType.DE_REGISTRATION)
    )
    assert uar.get(TgppAvp.VISITED_NETWORK_IDENTIFIER) == b"visited"
    assert uar.get(TgppAvp.USER_AUTHORIZATION_TYPE) == UserAuthorizationType.DE_REGISTRATION
    mar = roundtrip(cx.mar(ME, "s", "r", "a@x", "sip:a@x", "sip:s", cx.SCHEME_AKA, 3, b"r" * 30))
    (item,) = cx.auth_items(mar)
    assert (item.scheme, item.authorization) == (cx.SCHEME_AKA, b"r" * 30)
    assert mar.get(TgppAvp.SIP_NUMBER_AUTH_ITEMS) == 3
    sar = roundtrip(
        cx.sar(
            ME,
            "s",
            "r",
            ["sip:a@x", "tel:+1"],
            "sip:s",
            ServerAssignmentType.TIMEOUT_DEREGISTRATION,
            data_available=True,
        )
    )
    assert cx.public_identities(sar) == ["sip:a@x", "tel:+1"]
    assert sar.get(TgppAvp.USER_DATA_ALREADY_AVAILABLE) == 1
    rtr = roundtrip(
        cx.rtr(ME, "s", "scscf", "r", "a@x", ["sip:a@x"], ReasonCode.SERVER_CHANGE, "moved")
    )
    reason = rtr.find(TgppAvp.DEREGISTRATION_REASON)
    assert reason is not None and reason.get(TgppAvp.REASON_CODE) == ReasonCode.SERVER_CHANGE
    assert reason.get(TgppAvp.REASON_INFO) == "moved"
    assert rtr.get_str(AvpCode.DESTINATION_HOST) == "scscf"
    ppr = roundtrip(cx.ppr(ME, "s", "scscf", "r", "a@x", b"<x/>"))
    assert cx.user_data(ppr) == b"<x/>"


def test_outcome_reads_result_and_experimental_result() -> None:
    req = cx.lir(ME, "s", "r", "sip:a@x")
    plain = answer(req, "hss", "r", 2001)
    assert cx.outcome(plain) == cx.Outcome(2001, False) and cx.outcome(plain).success
    exp = answer(req, "hss", "r", experimental=(Vendor.TGPP, CxResult.ERROR_USER_UNKNOWN))
    assert cx.outcome(exp) == cx.Outcome(5001, True) and not cx.outcome(exp).success
    assert cx.outcome(answer(req, "hss", "r", None)) == cx.Outcome(0, False)
    assert Command.LOCATION_INFO == plain.code
