"""Ro for IMS event charging (RFC 4006 + TS 32.299): the CCR EVENT and its CCA.

Pure: builds and reads :class:`~imsp2pd.diameter.message.Message` values.
The AS builds a CCR with :func:`build_ccr` (direct debit or refund of a
monetary amount, with the icid of the purchase); the OCS reads it with
:func:`parse_ccr`, which raises :class:`CcrError` carrying the Result-Code
and the Failed-AVP of RFC 6733 §7.5 for anything it cannot use; the OCS
answers with :func:`build_cca`; the AS reads that with :func:`read_cca`.

A CCR EVENT as built here::

    Session-Id, Origin-Host, Origin-Realm, Destination-Realm,
    Auth-Application-Id = 4, Service-Context-Id = "32260@3gpp.org",
    CC-Request-Type = 4 (EVENT_REQUEST), CC-Request-Number = 0,
    Event-Timestamp, Requested-Action = 0 (DIRECT_DEBITING) | 1 (REFUND_ACCOUNT),
    Subscription-Id { Subscription-Id-Type = 2 (END_USER_SIP_URI), Subscription-Id-Data = IMPU },
    Requested-Service-Unit { CC-Money { Unit-Value { Value-Digits, Exponent }, Currency-Code } },
    Service-Information { IMS-Information { Node-Functionality = 6 (AS),
        IMS-Charging-Identifier = icid,
        Service-Specific-Info { Service-Specific-Data = "DOI offer" } } }

Amounts are decimals (``Decimal("2.50")`` → Value-Digits 250, Exponent -2);
currencies are ISO 4217 codes (EUR = 978).

A CCR and a CCA built here are what decoding their bytes gives, value for
value and type for type: plain ints where the codes are IntEnums, and an
Event-Timestamp in whole seconds (the Time type carries no more), so that an
OCS in the AS's process may take the AS's CCR from the local hops
(imsp2pd.local_hops) instead of decoding it, and the AS the OCS's CCA.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from imsp2pd.diameter.avp import Avp
from imsp2pd.diameter.codes import (
    Application,
    AvpCode,
    CcRequestType,
    Command,
    RequestedAction,
    ResultCode,
    SubscriptionIdType,
    TgppAvp,
)
from imsp2pd.diameter.dictionary import Dictionary, default_dictionary
from imsp2pd.diameter.message import Message, answer, request

SERVICE_CONTEXT_IMS = "32260@3gpp.org"
MAX_AMOUNT = Decimal("1000000000")

#: ISO 4217 numeric codes of the currencies the lab knows.
CURRENCIES = {"EUR": 978, "USD": 840, "GBP": 826, "CHF": 756, "JPY": 392}
CURRENCY_NAMES = {v: k for k, v in CURRENCIES.items()}
#: ISO 4217 minor units, for showing amounts as the currency writes them.
MINOR_UNITS = {978: 2, 840: 2, 826: 2, 756: 2, 392: 0}


def shown_amount(amount: Decimal, currency: int) -> str:
    """``Decimal("2.5")`` in EUR is "2.50"; more precise amounts keep their digits."""
    places = MINOR_UNITS.get(currency)
    exponent = amount.as_tuple().exponent
    if places is None or not isinstance(exponent, int) or -exponent > places:
        return str(amount)
    return str(amount.quantize(Decimal(1).scaleb(-places)))


NODE_FUNCTIONALITY_AS = 6

# the codes as plain ints, as a receiver decodes them (not IntEnums)
_CREDIT_CONTROL = int(Application.CREDIT_CONTROL)
_EVENT_REQUEST = int(CcRequestType.EVENT_REQUEST)
_SIP_URI = int(SubscriptionIdType.END_USER_SIP_URI)


class CcrError(Exception):
    """A CCR the OCS cannot use: the Result-Code and the Failed-AVP to answer with."""

    def __init__(self, result_code: int, message: str, failed_avp: Avp | None = None) -> None:
        super().__init__(message)
        self.result_code = result_code
        self.message = message
        self.failed_avp = failed_avp


@dataclass(frozen=True)
class CreditRequest:
    session_id: str
    request_number: int
    impu: str
    action: RequestedAction
    amount: Decimal
    currency: int
    icid: str | None
    origin_host: str
    detail: str | None = None


@dataclass(frozen=True)
class CreditAnswer:
    result_code: int
    amount: Decimal | None = None
    currency: int | None = None


def money(d: Dictionary, amount: Decimal, currency: int) -> Avp:
    """CC-Money { Unit-Value { Value-Digits, Exponent }, Currency-Code }."""
    sign, digits, exponent = amount.normalize().as_tuple()
    assert isinstance(exponent, int)
    value = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    if exponent > 0:  # Decimal("1E+2") normalises so; keep Exponent <= 0
        value, exponent = value * 10**exponent, 0
    return d.group(
        AvpCode.CC_MONEY,
        d.group(
            AvpCode.UNIT_VALUE,
            d.make(AvpCode.VALUE_DIGITS, value),
            d.make(AvpCode.EXPONENT, exponent),
        ),
        d.make(AvpCode.CURRENCY_CODE, currency),
    )


def read_money(cc_money: Avp) -> tuple[Decimal, int]:
    """(amount, currency) of a CC-Money AVP; :class:`CcrError` when malformed."""
    unit = cc_money.find(AvpCode.UNIT_VALUE)
    if unit is None:
        raise CcrError(
            ResultCode.MISSING_AVP, "CC-Money without Unit-Value", _empty(AvpCode.UNIT_VALUE)
        )
    digits = unit.get(AvpCode.VALUE_DIGITS)
    exponent = unit.get(AvpCode.EXPONENT, default=0)
    if not isinstance(digits, int):
        raise CcrError(
            ResultCode.MISSING_AVP, "Unit-Value without Value-Digits", _empty(AvpCode.VALUE_DIGITS)
        )
    if not isinstance(exponent, int) or not -18 <= exponent <= 18:
        raise CcrError(
            ResultCode.INVALID_AVP_VALUE, "Exponent out of range", unit.find(AvpCode.EXPONENT)
        )
    currency = cc_money.get(AvpCode.CURRENCY_CODE)
    if not isinstance(currency, int):
        raise CcrError(
            ResultCode.MISSING_AVP, "CC-Money without Currency-Code", _empty(AvpCode.CURRENCY_CODE)
        )
    return Decimal(digits).scaleb(exponent), currency


def _empty(code: int) -> Avp:
    return (
        default_dictionary().make(code, 0)
        if code
        in (
            AvpCode.VALUE_DIGITS,
            AvpCode.EXPONENT,
            AvpCode.CURRENCY_CODE,
            AvpCode.REQUESTED_ACTION,
            AvpCode.CC_REQUEST_NUMBER,
        )
        else default_dictionary().group(code)
    )


def build_ccr(
    *,
    session_id: str,
    origin_host: str,
    origin_realm: str,
    destination_realm: str,
    destination_host: str | None,
    impu: str,
    action: RequestedAction,
    amount: Decimal,
    currency: int,
    icid: str | None,
    detail: str | None = None,
    event_time: datetime | None = None,
    dictionary: Dictionary | None = None,
) -> Message:
    d = dictionary or default_dictionary()
    ims = [d.make(TgppAvp.NODE_FUNCTIONALITY, NODE_FUNCTIONALITY_AS)]
    if icid:
        ims.append(d.make(TgppAvp.IMS_CHARGING_IDENTIFIER, icid))
    if detail:
        ims.append(
            d.group(TgppAvp.SERVICE_SPECIFIC_INFO, d.make(TgppAvp.SERVICE_SPECIFIC_DATA, detail))
        )
    avps = [
        d.make(AvpCode.SESSION_ID, session_id),
        d.make(AvpCode.ORIGIN_HOST, origin_host),
        d.make(AvpCode.ORIGIN_REALM, origin_realm),
        d.make(AvpCode.DESTINATION_REALM, destination_realm),
    ]
    if destination_host:
        avps.append(d.make(AvpCode.DESTINATION_HOST, destination_host))
    avps += [
        d.make(AvpCode.AUTH_APPLICATION_ID, _CREDIT_CONTROL),
        d.make(AvpCode.SERVICE_CONTEXT_ID, SERVICE_CONTEXT_IMS),
        d.make(AvpCode.CC_REQUEST_TYPE, _EVENT_REQUEST),
        d.make(AvpCode.CC_REQUEST_NUMBER, 0),
        d.make(AvpCode.EVENT_TIMESTAMP, event_timestamp(event_time)),
        d.make(AvpCode.REQUESTED_ACTION, int(action)),
        d.group(
            AvpCode.SUBSCRIPTION_ID,
            d.make(AvpCode.SUBSCRIPTION_ID_TYPE, _SIP_URI),
            d.make(AvpCode.SUBSCRIPTION_ID_DATA, impu),
        ),
        d.group(AvpCode.REQUESTED_SERVICE_UNIT, money(d, amount, currency)),
        d.group(TgppAvp.SERVICE_INFORMATION, d.group(TgppAvp.IMS_INFORMATION, *ims)),
    ]
    return request(Command.CREDIT_CONTROL, _CREDIT_CONTROL, avps)


def event_timestamp(when: datetime | None = None) -> datetime:
    """``when`` (default now) rounded down to the second, in UTC if it is
    aware: what the Time type carries, so what a receiver decodes (a naive
    ``when`` stays naive, and the encoder refuses it as before)."""
    if when is None:
        when = datetime.now(UTC)
    elif when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.replace(microsecond=0)


def parse_ccr(msg: Message) -> CreditRequest:
    """The credit request in a CCR, or :class:`CcrError` naming what is wrong."""
    d = default_dictionary()
    session_id = msg.session_id
    if session_id is None:
        raise CcrError(ResultCode.MISSING_AVP, "no Session-Id", d.make(AvpCode.SESSION_ID, ""))
    rtype = msg.get_int(AvpCode.CC_REQUEST_TYPE)
    if rtype != CcRequestType.EVENT_REQUEST:
        raise CcrError(
            ResultCode.INVALID_AVP_VALUE,
            "only EVENT_REQUEST is supported (IMS event charging)",
            msg.find(AvpCode.CC_REQUEST_TYPE),
        )
    if msg.get_int(AvpCode.AUTH_APPLICATION_ID) != Application.CREDIT_CONTROL:
        raise CcrError(
            ResultCode.INVALID_AVP_VALUE,
            "Auth-Application-Id must be 4",
            msg.find(AvpCode.AUTH_APPLICATION_ID),
        )
    number = msg.get_int(AvpCode.CC_REQUEST_NUMBER)
    if number is None:
        raise CcrError(
            ResultCode.MISSING_AVP, "no CC-Request-Number", _empty(AvpCode.CC_REQUEST_NUMBER)
        )
    action_value = msg.get_int(AvpCode.REQUESTED_ACTION)
    if action_value is None:
        raise CcrError(
            ResultCode.MISSING_AVP,
            "an EVENT request needs Requested-Action",
            _empty(AvpCode.REQUESTED_ACTION),
        )
    if action_value not in (RequestedAction.DIRECT_DEBITING, RequestedAction.REFUND_ACCOUNT):
        raise CcrError(
            ResultCode.INVALID_AVP_VALUE,
            "only DIRECT_DEBITING and REFUND_ACCOUNT are supported",
            msg.find(AvpCode.REQUESTED_ACTION),
        )
    impu = None
    for sub in msg.find_all(AvpCode.SUBSCRIPTION_ID):
        if sub.get(AvpCode.SUBSCRIPTION_ID_TYPE) == SubscriptionIdType.END_USER_SIP_URI:
            data = sub.get(AvpCode.SUBSCRIPTION_ID_DATA)
            if isinstance(data, str) and data:
                impu = data
                break
    if impu is None:
        raise CcrError(
            ResultCode.MISSING_AVP,
            "no Subscription-Id of type END_USER_SIP_URI",
            _empty(AvpCode.SUBSCRIPTION_ID),
        )
    rsu = msg.find(AvpCode.REQUESTED_SERVICE_UNIT)
    cc_money = rsu.find(AvpCode.CC_MONEY) if rsu is not None else None
    if cc_money is None:
        raise CcrError(
            ResultCode.MISSING_AVP,
            "no Requested-Service-Unit with CC-Money",
            _empty(AvpCode.REQUESTED_SERVICE_UNIT),
        )
    amount, currency = read_money(cc_money)
    if amount < 0 or amount > MAX_AMOUNT:
        raise CcrError(ResultCode.INVALID_AVP_VALUE, "amount out of range", cc_money)
    icid = detail = None
    info = msg.find(TgppAvp.SERVICE_INFORMATION)
    ims = info.find(TgppAvp.IMS_INFORMATION) if info is not None else None
    if ims is not None:
        v = ims.get(TgppAvp.IMS_CHARGING_IDENTIFIER)
        icid = v if isinstance(v, str) else None
        ssi = ims.find(TgppAvp.SERVICE_SPECIFIC_INFO)
        if ssi is not None:
            v = ssi.get(TgppAvp.SERVICE_SPECIFIC_DATA)
            detail = v if isinstance(v, str) else None
    return CreditRequest(
        session_id=session_id,
        request_number=number,
        impu=impu,
        action=RequestedAction(action_value),
        amount=amount,
        currency=currency,
        icid=icid,
        origin_host=msg.origin_host or "",
        detail=detail,
    )


def build_cca(
    ccr: Message,
    origin_host: str,
    origin_realm: str,
    result: CreditAnswer,
    error: CcrError | None = None,
    dictionary: Dictionary | None = None,
) -> Message:
    d = dictionary or default_dictionary()
    avps = [
        d.make(AvpCode.AUTH_APPLICATION_ID, _CREDIT_CONTROL),
        d.make(
            AvpCode.CC_REQUEST_TYPE,
            int(ccr.get_int(AvpCode.CC_REQUEST_TYPE) or _EVENT_REQUEST),
        ),
        d.make(AvpCode.CC_REQUEST_NUMBER, int(ccr.get_int(AvpCode.CC_REQUEST_NUMBER) or 0)),
    ]
    if (
        result.result_code == ResultCode.SUCCESS
        and result.amount is not None
        and result.currency is not None
    ):
        avps.append(d.group(AvpCode.GRANTED_SERVICE_UNIT, money(d, result.amount, result.currency)))
        avps.append(
            d.group(
                AvpCode.COST_INFORMATION,
                money(d, result.amount, result.currency).children()[0],  # Unit-Value
                d.make(AvpCode.CURRENCY_CODE, result.currency),
            )
        )
    return answer(
        ccr,
        origin_host,
        origin_realm,
        result.result_code,
        avps,
        error_message=error.message if error else None,
        failed_avps=(error.failed_avp,) if error and error.failed_avp is not None else (),
        dictionary=d,
    )


def read_cca(msg: Message) -> CreditAnswer:
    code = msg.result_code
    gsu = msg.find(AvpCode.GRANTED_SERVICE_UNIT)
    cc_money = gsu.find(AvpCode.CC_MONEY) if gsu is not None else None
    if cc_money is not None:
        try:
            amount, currency = read_money(cc_money)
        except CcrError:
            return CreditAnswer(code if code is not None else 0)
        return CreditAnswer(code if code is not None else 0, amount, currency)
    return CreditAnswer(code if code is not None else 0)
