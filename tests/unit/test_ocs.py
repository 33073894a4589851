"""Ro CCR/CCA and the OCS's decisions, without sockets."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from imsp2pd.diameter.codes import AvpCode, CcRequestType, ResultCode
from imsp2pd.diameter.dictionary import default_dictionary
from imsp2pd.diameter.message import Message, decode_message
from imsp2pd.ims.ocs import ACCOUNTS, MIGRATIONS, AccountError, OnlineChargingSystem
from imsp2pd.ims.ro import (
    CURRENCIES,
    CcrError,
    RequestedAction,
    build_ccr,
    parse_ccr,
    read_cca,
    read_money,
)
from imsp2pd.store import SQLiteStore

D = default_dictionary()
EUR = CURRENCIES["EUR"]
ALICE = "sip:alice@ims.example.org"


def ccr(
    session: str = "as;1",
    impu: str = ALICE,
    action=RequestedAction.DIRECT_DEBITING,
    amount: str = "2.50",
    currency: int = EUR,
) -> Message:
    msg = build_ccr(
        session_id=session,
        origin_host="as.ims.example.org",
        origin_realm="ims.example.org",
        destination_realm="ims.example.org",
        destination_host="ocs.ims.example.org",
        impu=impu,
        action=action,
        amount=Decimal(amount),
        currency=currency,
        icid="icid-42",
        detail="10.5555/x rent",
    )
    return decode_message(msg.encode(), D)  # what the OCS sees off the wire


def replace(msg: Message, code: int, avp) -> Message:
    """``msg`` with its base (vendor 0) AVP ``code`` replaced by ``avp``."""
    avps = tuple(avp if a.code == code and not a.vendor else a for a in msg.avps)
    return Message(msg.code, msg.application, msg.flags, msg.hop_by_hop, msg.end_to_end, avps)


def drop(msg: Message, code: int) -> Message:
    return Message(
        msg.code,
        msg.application,
        msg.flags,
        msg.hop_by_hop,
        msg.end_to_end,
        tuple(a for a in msg.avps if a.code != code or a.vendor),
    )


def test_ccr_round_trip() -> None:
    req = parse_ccr(ccr())
    assert (req.session_id, req.impu, req.action, req.amount, req.currency) == (
        "as;1",
        ALICE,
        RequestedAction.DIRECT_DEBITING,
        Decimal("2.50"),
        EUR,
    )
    assert (req.icid, req.detail, req.origin_host) == (
        "icid-42",
        "10.5555/x rent",
        "as.ims.example.org",
    )
    assert parse_ccr(ccr(amount="100")).amount == Decimal("100")
    assert parse_ccr(ccr(amount="0.001")).amount == Decimal("0.001")


def test_a_unit_value_without_exponent_is_whole_units() -> None:
    # Exponent is optional in Unit-Value (RFC 4006 §8.8): absent, it is 0
    money = D.group(
        AvpCode.CC_MONEY,
        D.group(AvpCode.UNIT_VALUE, D.make(AvpCode.VALUE_DIGITS, 7)),
        D.make(AvpCode.CURRENCY_CODE, EUR),
    )
    assert read_money(money) == (Decimal(7), EUR)


@pytest.mark.parametrize(
    ("mutate", "code", "failed"),
    [
        (
            lambda m: replace(
                m,
                AvpCode.CC_REQUEST_TYPE,
                D.make(AvpCode.CC_REQUEST_TYPE, CcRequestType.INITIAL_REQUEST),
            ),
            ResultCode.INVALID_AVP_VALUE,
            AvpCode.CC_REQUEST_TYPE,
        ),
        (
            lambda m: replace(m, AvpCode.REQUESTED_ACTION, D.make(AvpCode.REQUESTED_ACTION, 2)),
            ResultCode.INVALID_AVP_VALUE,
            AvpCode.REQUESTED_ACTION,
        ),
        (
            lambda m: drop(m, AvpCode.REQUESTED_ACTION),
            ResultCode.MISSING_AVP,
            AvpCode.REQUESTED_ACTION,
        ),
        (
            lambda m: drop(m, AvpCode.SUBSCRIPTION_ID),
            ResultCode.MISSING_AVP,
            AvpCode.SUBSCRIPTION_ID,
        ),
        (
            lambda m: drop(m, AvpCode.REQUESTED_SERVICE_UNIT),
            ResultCode.MISSING_AVP,
            AvpCode.REQUESTED_SERVICE_UNIT,
        ),
    ],
)
def test_unusable_ccrs_name_the_failed_avp(mutate, code: int, failed: int) -> None:
    with pytest.raises(CcrError) as e:
        parse_ccr(mutate(ccr()))
    assert e.value.result_code == code
    assert e.value.failed_avp is not None and e.value.failed_avp.code == failed


@pytest.fixture
def ocs(tmp_path: Path) -> OnlineChargingSystem:
    store = SQLiteStore(tmp_path / "ocs.sqlite")
    store.migrate(MIGRATIONS)
    o = OnlineChargingSystem(store, "ocs.ims.example.org", "ims.example.org", lambda: 1000.0)
    made = []
    o.seed({ALICE: "10.00", "sip:dave@ims.example.org": "0"}, "EUR").addCallback(made.append)
    assert made == [[ALICE, "sip:dave@ims.example.org"]]
    return o


def answer(o: OnlineChargingSystem, msg: Message) -> Message:
    out: list = []
    o.handle_ccr(msg).addCallback(out.append)
    (cca,) = out
    return decode_message(cca.encode(), D)


def balance(o: OnlineChargingSystem, impu: str = ALICE) -> str:
    out: list = []
    o.account(impu).addCallback(out.append)
    return out[0]["balance"]


def test_debit_then_duplicate_then_refund(ocs: OnlineChargingSystem) -> None:
    cca = answer(ocs, ccr("as;p1;1"))
    a = read_cca(cca)
    assert (a.result_code, a.amount, a.currency) == (ResultCode.SUCCESS, Decimal("2.50"), EUR)
    assert cca.get_int(AvpCode.CC_REQUEST_TYPE) == CcRequestType.EVENT_REQUEST
    assert cca.session_id == "as;p1;1"
    assert balance(ocs) == "7.50"
    assert read_cca(answer(ocs, ccr("as;p1;1"))).result_code == ResultCode.SUCCESS
    assert balance(ocs) == "7.50"  # the same Session-Id moved no money again
    answer(ocs, ccr("as;p1;1;refund", action=RequestedAction.REFUND_ACCOUNT))
    answer(ocs, ccr("as;p1;1;refund", action=RequestedAction.REFUND_ACCOUNT))
    assert balance(ocs) == "10.00"
    recs: list = []
    ocs.records(ALICE).addCallback(recs.append)
    assert [(r["action"], r["result_code"], r["icid"]) for r in recs[0]] == [
        ("DIRECT_DEBITING", 2001, "icid-42"),
        ("REFUND_ACCOUNT", 2001, "icid-42"),
    ]


def test_no_credit_unknown_user_and_wrong_currency(ocs: OnlineChargingSystem) -> None:
    assert (
        read_cca(answer(ocs, ccr("s1", amount="10.01"))).result_code
        == ResultCode.CREDIT_LIMIT_REACHED
    )
    assert read_cca(answer(ocs, ccr("s2", impu="sip:dave@ims.example.org"))).result_code == 4012
    assert (
        read_cca(answer(ocs, ccr("s3", impu="sip:eve@ims.example.org"))).result_code
        == ResultCode.USER_UNKNOWN
    )
    assert (
        read_cca(answer(ocs, ccr("s4", currency=CURRENCIES["USD"]))).result_code
        == ResultCode.RATING_FAILED
    )
    assert balance(ocs) == "10.00"
    assert read_cca(answer(ocs, ccr("s5", amount="10.00"))).result_code == ResultCode.SUCCESS
    assert balance(ocs) == "0.00"


def test_a_bad_ccr_is_answered_with_failed_avp(ocs: OnlineChargingSystem) -> None:
    cca = answer(ocs, drop(ccr(), AvpCode.SUBSCRIPTION_ID))
    assert cca.result_code == ResultCode.MISSING_AVP
    failed = cca.find(AvpCode.FAILED_AVP)
    assert failed is not None and failed.children()[0].code == AvpCode.SUBSCRIPTION_ID


def test_seed_never_overwrites_and_admin_adjusts(ocs: OnlineChargingSystem) -> None:
    answer(ocs, ccr("s1", amount="1"))
    made: list = []
    ocs.seed({ALICE: "10.00"}, "EUR").addCallback(made.append)
    assert made == [[]]
    assert balance(ocs) == "9.00"
    out: list = []
    ocs.adjust(ALICE, credit="5.5").addCallback(out.append)
    assert out[0]["balance"] == "14.50"
    ocs.adjust("sip:new@ims.example.org", set_to="3").addCallback(out.append)
    assert out[1] == {"impu": "sip:new@ims.example.org", "balance": "3", "currency": "EUR"}
    errors: list = []
    ocs.adjust(ALICE, credit="-100").addErrback(errors.append)
    assert errors[0].check(AccountError)
    with pytest.raises(AccountError):
        ocs.adjust(ALICE, credit="lots")
    with pytest.raises(AccountError):
        ocs.adjust(ALICE)
    count: list = []
    ocs.store.transact(lambda t: t.count(ACCOUNTS)).addCallback(count.append)
    assert count == [3]


def test_amounts_are_shown_in_the_currencys_minor_units() -> None:
    from imsp2pd.ims.ro import shown_amount

    assert shown_amount(Decimal("2.5"), EUR) == "2.50"
    assert shown_amount(Decimal("100"), EUR) == "100.00"
    assert shown_amount(Decimal("0.001"), EUR) == "0.001"
    assert shown_amount(Decimal("300"), CURRENCIES["JPY"]) == "300"
    assert shown_amount(Decimal("2.5"), 999) == "2.5"


def test_balances_from_the_provisioning_file(tmp_path: Path) -> None:
    from imsp2pd.ims.ocs import balances_from_provisioning

    f = tmp_path / "subscribers.toml"
    f.write_text(
        '[[subscriber]]\nimpi = "a@x"\nimpus = ["sip:a@x"]\nbalance = "5"\n'
        '[[subscriber]]\nimpi = "b@x"\nimpus = ["sip:b@x"]\n'
    )
    assert balances_from_provisioning(str(f)) == {"sip:a@x": "5"}
    f.write_text('[[subscriber]]\nimpi = "a@x"\nimpus = ["sip:a@x"]\nbalance = "lots"\n')
    with pytest.raises(AccountError, match="balance of sip:a@x"):
        balances_from_provisioning(str(f))
    with pytest.raises(AccountError, match="cannot read"):
        balances_from_provisioning(str(tmp_path / "none.toml"))
