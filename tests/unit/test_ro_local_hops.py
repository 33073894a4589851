"""Ro over the local hops: a CCR the AS builds and a CCA the OCS builds are
what decoding their bytes gives, type for type, in every charging case the
OCS answers, so an OCS in the AS's process may take the AS's CCR (and the AS
the OCS's CCA) from imsp2pd.local_hops instead of decoding it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail

from imsp2pd.diameter.codes import Application, AvpCode, CcRequestType, ResultCode
from imsp2pd.diameter.dictionary import default_dictionary
from imsp2pd.diameter.message import Message, decode_message
from imsp2pd.diameter.node import _decode
from imsp2pd.diameter.peer import (
    AnswerReceived,
    IncomingRequest,
    LocalConfig,
    PeerConnection,
    Role,
    Send,
)
from imsp2pd.ims.ocs import MIGRATIONS, OnlineChargingSystem
from imsp2pd.ims.ro import (
    CURRENCIES,
    CreditAnswer,
    RequestedAction,
    build_cca,
    build_ccr,
    event_timestamp,
    read_cca,
)
from imsp2pd.local_hops import LocalHops
from imsp2pd.store import SQLiteStore
from tests.unit.test_diameter_local_hops import typed
from tests.unit.test_diameter_peer import of
from tests.unit.test_ocs import drop, replace

D = default_dictionary()
REALM = "ims.example.org"
EUR, USD = CURRENCIES["EUR"], CURRENCIES["USD"]
ALICE = "sip:alice@ims.example.org"  # 10.00 EUR
DAVE = "sip:dave@ims.example.org"  # 0.00 EUR
EVE = "sip:eve@ims.example.org"  # no account
AS_ADDR = ("127.0.0.1", 40001)
OCS_ADDR = ("127.0.0.1", 3869)


def decoded(msg: Message) -> Message:
    return decode_message(msg.encode(), D)


def assert_decodes_as_itself(msg: Message) -> None:
    """``msg`` is what its bytes decode to, type for type (what a local hop needs)."""
    assert typed(msg) == typed(decoded(msg))


_text = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)
_amounts = st.decimals(
    min_value=Decimal(0), max_value=Decimal("1000000"), places=3, allow_nan=False
) | st.sampled_from([Decimal("1E+2"), Decimal("2.50"), Decimal("0"), Decimal("10.00")])
_times = st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5))]),
)


@st.composite
def ccrs(draw: st.DrawFn, impu: st.SearchStrategy[str] = _text) -> Message:
    return build_ccr(
        session_id=draw(_text),
        origin_host=draw(_text),
        origin_realm=draw(_text),
        destination_realm=draw(_text),
        destination_host=draw(st.none() | _text),
        impu=draw(impu),
        action=draw(
            st.sampled_from([RequestedAction.DIRECT_DEBITING, RequestedAction.REFUND_ACCOUNT])
        ),
        amount=draw(_amounts),
        currency=draw(st.sampled_from(sorted(CURRENCIES.values()))),
        icid=draw(st.none() | _text),
        detail=draw(st.none() | _text),
        event_time=draw(st.none() | _times),
    )


@settings(max_examples=200, deadline=None)
@given(ccrs())
def test_a_built_ccr_is_its_decoding(ccr: Message) -> None:
    assert_decodes_as_itself(ccr)


def test_the_event_timestamp_is_rounded_down_to_the_second() -> None:
    when = datetime(2026, 5, 1, 12, 0, 7, 999_999, tzinfo=timezone(timedelta(hours=2)))
    assert event_timestamp(when) == datetime(2026, 5, 1, 10, 0, 7, tzinfo=UTC)
    assert event_timestamp(when).tzinfo is UTC
    now = event_timestamp()
    assert now.microsecond == 0 and now <= datetime.now(UTC)
    # the bytes are those of the unrounded time: the wire never had the microseconds
    kw: dict[str, Any] = dict(
        session_id="as;1",
        origin_host="as.ims.example.org",
        origin_realm=REALM,
        destination_realm=REALM,
        destination_host=None,
        impu=ALICE,
        action=RequestedAction.DIRECT_DEBITING,
        amount=Decimal("2.50"),
        currency=EUR,
        icid="icid-1",
    )
    assert (
        build_ccr(**kw, event_time=when).encode()
        == build_ccr(**kw, event_time=when.replace(microsecond=0)).encode()
    )


# The OCS's answers --------------------------------------------------------------


def int_avp(code: int, value: int) -> Any:
    return D.make(code, value)  # a plain int, as decoded


def _money(msg: Message, cc_money: Any) -> Message:
    return replace(
        msg, AvpCode.REQUESTED_SERVICE_UNIT, D.group(AvpCode.REQUESTED_SERVICE_UNIT, cc_money)
    )


#: what can be wrong with a CCR that decodes (one without Session-Id, CC-Request-Type
#: or CC-Request-Number the peer refuses before the OCS sees it), and the
#: Result-Code the OCS answers it with
MALFORMED = {
    "initial": (
        lambda m: replace(
            m,
            AvpCode.CC_REQUEST_TYPE,
            int_avp(AvpCode.CC_REQUEST_TYPE, CcRequestType.INITIAL_REQUEST.value),
        ),
        ResultCode.INVALID_AVP_VALUE,
    ),
    "update": (
        lambda m: replace(
            replace(m, AvpCode.CC_REQUEST_TYPE, int_avp(AvpCode.CC_REQUEST_TYPE, 2)),
            AvpCode.CC_REQUEST_NUMBER,
            int_avp(AvpCode.CC_REQUEST_NUMBER, 3),
        ),
        ResultCode.INVALID_AVP_VALUE,
    ),
    "termination": (
        lambda m: replace(m, AvpCode.CC_REQUEST_TYPE, int_avp(AvpCode.CC_REQUEST_TYPE, 3)),
        ResultCode.INVALID_AVP_VALUE,
    ),
    "other application": (
        lambda m: replace(
            m, AvpCode.AUTH_APPLICATION_ID, int_avp(AvpCode.AUTH_APPLICATION_ID, 16777216)
        ),
        ResultCode.INVALID_AVP_VALUE,
    ),
    "no action": (lambda m: drop(m, AvpCode.REQUESTED_ACTION), ResultCode.MISSING_AVP),
    "price enquiry": (
        lambda m: replace(m, AvpCode.REQUESTED_ACTION, int_avp(AvpCode.REQUESTED_ACTION, 3)),
        ResultCode.INVALID_AVP_VALUE,
    ),
    "no subscription": (lambda m: drop(m, AvpCode.SUBSCRIPTION_ID), ResultCode.MISSING_AVP),
    "no service unit": (
        lambda m: drop(m, AvpCode.REQUESTED_SERVICE_UNIT),
        ResultCode.MISSING_AVP,
    ),
    "no unit value": (
        lambda m: _money(m, D.group(AvpCode.CC_MONEY, int_avp(AvpCode.CURRENCY_CODE, EUR))),
        ResultCode.MISSING_AVP,
    ),
    "no value digits": (
        lambda m: _money(
            m,
            D.group(
                AvpCode.CC_MONEY,
                D.group(AvpCode.UNIT_VALUE, int_avp(AvpCode.EXPONENT, -2)),
                int_avp(AvpCode.CURRENCY_CODE, EUR),
            ),
        ),
        ResultCode.MISSING_AVP,
    ),
    "exponent out of range": (
        lambda m: _money(
            m,
            D.group(
                AvpCode.CC_MONEY,
                D.group(
                    AvpCode.UNIT_VALUE,
                    int_avp(AvpCode.VALUE_DIGITS, 1),
                    int_avp(AvpCode.EXPONENT, 40),
                ),
                int_avp(AvpCode.CURRENCY_CODE, EUR),
            ),
        ),
        ResultCode.INVALID_AVP_VALUE,
    ),
    "no currency": (
        lambda m: _money(
            m,
            D.group(
                AvpCode.CC_MONEY,
                D.group(
                    AvpCode.UNIT_VALUE,
                    int_avp(AvpCode.VALUE_DIGITS, 1),
                    int_avp(AvpCode.EXPONENT, 0),
                ),
            ),
        ),
        ResultCode.MISSING_AVP,
    ),
    "negative amount": (
        lambda m: _money(
            m,
            D.group(
                AvpCode.CC_MONEY,
                D.group(
                    AvpCode.UNIT_VALUE,
                    int_avp(AvpCode.VALUE_DIGITS, -250),
                    int_avp(AvpCode.EXPONENT, -2),
                ),
                int_avp(AvpCode.CURRENCY_CODE, EUR),
            ),
        ),
        ResultCode.INVALID_AVP_VALUE,
    ),
}

#: the charging cases the OCS decides: (impu, action, amount, currency) and the Result-Code
DECIDED = {
    "debit": ((ALICE, RequestedAction.DIRECT_DEBITING, "2.50", EUR), ResultCode.SUCCESS),
    "debit all": ((ALICE, RequestedAction.DIRECT_DEBITING, "10", EUR), ResultCode.SUCCESS),
    "refund": ((DAVE, RequestedAction.REFUND_ACCOUNT, "0.001", EUR), ResultCode.SUCCESS),
    "insufficient credit": (
        (ALICE, RequestedAction.DIRECT_DEBITING, "10.01", EUR),
        ResultCode.CREDIT_LIMIT_REACHED,
    ),
    "no credit": (
        (DAVE, RequestedAction.DIRECT_DEBITING, "1", EUR),
        ResultCode.CREDIT_LIMIT_REACHED,
    ),
    "unknown user": ((EVE, RequestedAction.DIRECT_DEBITING, "1", EUR), ResultCode.USER_UNKNOWN),
    "other currency": (
        (ALICE, RequestedAction.DIRECT_DEBITING, "1", USD),
        ResultCode.RATING_FAILED,
    ),
}


def make_ocs(store: Any = None) -> OnlineChargingSystem:
    if store is None:
        store = SQLiteStore(":memory:")
        store.migrate(MIGRATIONS)
    o = OnlineChargingSystem(store, "ocs.ims.example.org", REALM, lambda: 1000.0)
    o.seed({ALICE: "10.00", DAVE: "0"}, "EUR").addErrback(lambda _: None)
    return o


class BrokenStore:
    """A store whose transactions fail: the OCS answers UNABLE_TO_COMPLY."""

    def migrate(self, migrations: Any) -> None:
        pass

    def transact(self, fn: Any) -> Deferred[Any]:
        return fail(RuntimeError("disk on fire"))


def the_ccr(case: str, session: str = "as;p;1", when: datetime | None = None) -> Message:
    impu, action, amount, currency = DECIDED.get(case, DECIDED["debit"])[0]
    msg = build_ccr(
        session_id=session,
        origin_host="as.ims.example.org",
        origin_realm=REALM,
        destination_realm=REALM,
        destination_host="ocs.ims.example.org",
        impu=impu,
        action=action,
        amount=Decimal(amount),
        currency=currency,
        icid="icid-42",
        detail="10.5555/x rent",
        event_time=when,
    )
    if case in MALFORMED:
        msg = MALFORMED[case][0](msg)
    return msg


def answered(o: OnlineChargingSystem, ccr: Message) -> Message:
    out: list[Message] = []
    o.handle_ccr(ccr).addCallback(out.append)
    (cca,) = out
    return cca


CASES = [*DECIDED, *MALFORMED, "duplicate", "store down"]


def expected(case: str) -> int:
    if case in DECIDED:
        return DECIDED[case][1]
    if case in MALFORMED:
        return MALFORMED[case][1]
    return ResultCode.SUCCESS if case == "duplicate" else ResultCode.UNABLE_TO_COMPLY


def exchange(
    case: str, session: str = "as;p;1", when: datetime | None = None
) -> tuple[Message, Message]:
    """The CCR of ``case`` as the AS builds it and the CCA the OCS answers
    it with, given the CCR as built (as a local hop hands it over)."""
    ccr = the_ccr(case, session, when)
    o = make_ocs(BrokenStore() if case == "store down" else None)
    if case == "duplicate":
        answered(o, ccr)
    return ccr, answered(o, ccr)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(CASES), _text, st.none() | _times)
def test_every_cca_the_ocs_builds_is_its_decoding(case: str, session: str, when: Any) -> None:
    """Each CCR (the malformed ones too, made of plain ints as a decoder
    makes them) and its CCA are their decodings, and the CCA is the one the
    OCS gives the decoded CCR: taking either from a local hop changes nothing."""
    ccr, cca = exchange(case, session, when)
    assert_decodes_as_itself(ccr)
    assert_decodes_as_itself(cca)
    assert read_cca(cca).result_code == expected(case)
    o = make_ocs(BrokenStore() if case == "store down" else None)
    if case == "duplicate":
        answered(o, decoded(ccr))
    assert typed(answered(o, decoded(ccr))) == typed(cca)


def test_every_case_gets_its_result_code() -> None:
    got = {case: read_cca(exchange(case)[1]).result_code for case in CASES}
    assert got == {case: expected(case) for case in CASES}
    assert len(set(got.values())) == 7  # 2001, 4012, 5030, 5031, 5004, 5005, 5012


def test_a_cca_for_a_request_type_of_its_own_echoes_it_as_an_int() -> None:
    ccr = decoded(the_ccr("update"))
    cca = build_cca(ccr, "ocs.ims.example.org", REALM, CreditAnswer(ResultCode.INVALID_AVP_VALUE))
    assert_decodes_as_itself(cca)
    assert (cca.get_int(AvpCode.CC_REQUEST_TYPE), cca.get_int(AvpCode.CC_REQUEST_NUMBER)) == (2, 3)
    assert type(cca.find(AvpCode.CC_REQUEST_TYPE).value) is int  # type: ignore[union-attr]


# Through the peer connections, as the AS's and the OCS's nodes in one process ----


def ro_config(host: str) -> LocalConfig:
    return LocalConfig(
        origin_host=host,
        origin_realm=REALM,
        auth_applications=(Application.CREDIT_CONTROL,),
        watchdog_jitter=0.0,
    )


class RoPair:
    """The AS's connection to the OCS and the OCS's from the AS, sharing ``hops``."""

    def __init__(self, hops: LocalHops[Message] | None) -> None:
        self.now = 1000.0
        self.client = PeerConnection(
            ro_config("as.ims.example.org"),
            Role.INITIATOR,
            self.now,
            rng=random.Random(1),
            local_hops=hops,
            peer_address=OCS_ADDR,
        )
        self.server = PeerConnection(
            ro_config("ocs.ims.example.org"),
            Role.RESPONDER,
            self.now,
            rng=random.Random(2),
            local_hops=hops,
            peer_address=AS_ADDR,
        )
        for e in self.client.start(self.now):
            assert isinstance(e, Send)
            for r in self.server.data_received(e.data, self.now):
                if isinstance(r, Send):
                    self.client.data_received(r.data, self.now)
        assert self.client.is_open and self.server.is_open

    def charge(self, ccr: Message, ocs: OnlineChargingSystem) -> tuple[Message, Message]:
        """The CCR as the OCS got it, and the CCA as the AS got it."""
        _, events = self.client.send_request(ccr, self.now)
        (data,) = [e.data for e in events if isinstance(e, Send)]
        (incoming,) = of(self.server.data_received(data, self.now), IncomingRequest)
        cca = answered(ocs, incoming.message)
        (reply,) = [e.data for e in self.server.send_answer(cca) if isinstance(e, Send)]
        (got,) = of(self.client.data_received(reply, self.now), AnswerReceived)
        return incoming.message, got.answer


def test_ro_hops_between_the_as_and_the_ocs_are_taken_with_no_mismatch() -> None:
    hops: LocalHops[Message] = LocalHops(check=_decode)
    for address in (AS_ADDR, OCS_ADDR):
        hops.add_address(*address)
    with_hops, plain = RoPair(hops), RoPair(None)
    cases = [c for c in CASES if c not in ("duplicate", "store down")]
    for n, case in enumerate(cases):
        ccr = the_ccr(case, f"as;p;{n}")
        got_h = with_hops.charge(ccr, make_ocs())
        got_p = plain.charge(ccr, make_ocs())
        assert [typed(m) for m in got_h] == [typed(m) for m in got_p]
        assert read_cca(got_h[1]).result_code == expected(case)
    assert (hops.taken, hops.mismatches) == (2 * len(cases), 0)
