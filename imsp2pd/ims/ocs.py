"""The online charging system: balances and durable charging records over Ro.

:class:`OnlineChargingSystem` answers CCR EVENT requests (see
:mod:`imsp2pd.ims.ro`): a DIRECT_DEBITING takes the amount off the
subscriber's balance or answers 4012 CREDIT_LIMIT_REACHED; a REFUND_ACCOUNT
gives it back. Every decision is one store transaction that updates the
account and writes the charging record before the CCA leaves, so an answered
debit survives ``kill -9``.

Duplicates: the charging record is keyed by (Session-Id, CC-Request-Number).
A CCR that repeats one already decided (the T-flagged retransmission of RFC
6733 §5.5.4, or the AS re-sending a debit whose answer it lost) gets the
recorded answer again and moves no money. That is what makes the AS's
purchases idempotent (imsp2pd.content.purchase).

Accounts: ``{"impu", "balance" (decimal string), "currency" (ISO 4217
numeric)}``, seeded from ``[ocs] accounts`` when missing (never overwritten
at restart) and managed through the admin API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from imsp2pd.diameter.codes import ResultCode
from imsp2pd.diameter.message import Message
from imsp2pd.ims.ro import (
    CURRENCIES,
    CURRENCY_NAMES,
    CcrError,
    CreditAnswer,
    CreditRequest,
    RequestedAction,
    build_cca,
    parse_ccr,
    shown_amount,
)
from imsp2pd.store import Collection, Migration, Store

log = Logger()

ACCOUNTS = "ocs_accounts"
RECORDS = "ocs_records"
MIGRATIONS = [
    Migration(
        "ocs-0001-accounts", [Collection(ACCOUNTS), Collection(RECORDS, ("impu", "session_id"))]
    ),
]


def balances_from_provisioning(path: str) -> dict[str, str]:
    """``balance`` of each ``[[subscriber]]`` of a provisioning file, by first IMPU.

    The lab provisions subscribers once (etc/subscribers.toml): the HSS takes
    their identities and credentials, the OCS their prepaid balances.
    """
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise AccountError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise AccountError(f"{path} is not valid TOML: {e}") from None
    out: dict[str, str] = {}
    for entry in data.get("subscriber", []):
        if not isinstance(entry, dict) or "balance" not in entry:
            continue
        impus = entry.get("impus")
        if not isinstance(impus, list) or not impus or not isinstance(impus[0], str):
            raise AccountError(f"{path}: a subscriber with a balance needs impus")
        out[impus[0]] = str(parse_amount(entry["balance"], f"balance of {impus[0]}"))
    return out


class AccountError(ValueError):
    """A bad admin request about an account (unknown user, bad amount)."""


def parse_amount(text: Any, what: str = "amount") -> Decimal:
    if not isinstance(text, str):
        raise AccountError(f'{what} must be a decimal string such as "10.00"')
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise AccountError(
            f'{what} must be a decimal string such as "10.00", not {text!r}'
        ) from None
    if not value.is_finite() or abs(value) > Decimal("1e9") or value.as_tuple().exponent < -6:  # type: ignore[operator]
        raise AccountError(f"{what} out of range: {text!r}")
    return value


def currency_code(name: str) -> int:
    try:
        return CURRENCIES[name.upper()]
    except KeyError:
        raise AccountError(
            f"unknown currency {name!r} (known: {', '.join(sorted(CURRENCIES))})"
        ) from None


@dataclass(frozen=True)
class Decision:
    answer: CreditAnswer
    duplicate: bool
    balance: Decimal | None


def decide(txn: Any, req: CreditRequest, now: float) -> Decision:
    """Apply one credit request inside a store transaction (pure over ``txn``)."""
    key = f"{req.session_id}#{req.request_number}"
    old = txn.get(RECORDS, key)
    if old is not None:
        return Decision(
            CreditAnswer(old["result_code"], Decimal(old["amount"]), old["currency"]),
            duplicate=True,
            balance=None,
        )
    account = txn.get(ACCOUNTS, req.impu)
    balance: Decimal | None = None
    if account is None:
        code = ResultCode.USER_UNKNOWN
    elif account["currency"] != req.currency:
        code = ResultCode.RATING_FAILED
    else:
        balance = Decimal(account["balance"])
        if req.action is RequestedAction.DIRECT_DEBITING:
            if req.amount > balance:
                code = ResultCode.CREDIT_LIMIT_REACHED
            else:
                code = ResultCode.SUCCESS
                balance -= req.amount
        else:
            code = ResultCode.SUCCESS
            balance += req.amount
        if code == ResultCode.SUCCESS:
            txn.put(ACCOUNTS, req.impu, {**account, "balance": str(balance)})
    txn.put(
        RECORDS,
        key,
        {
            "session_id": req.session_id,
            "request_number": req.request_number,
            "impu": req.impu,
            "action": req.action.name,
            "amount": shown_amount(req.amount, req.currency),
            "currency": req.currency,
            "icid": req.icid,
            "detail": req.detail,
            "origin_host": req.origin_host,
            "result_code": int(code),
            "balance_after": None if balance is None else str(balance),
            "time": now,
        },
    )
    return Decision(
        CreditAnswer(int(code), req.amount, req.currency), duplicate=False, balance=balance
    )


class OnlineChargingSystem:
    """The OCS's Ro handler and account management; Diameter-node agnostic."""

    def __init__(
        self,
        store: Store,
        origin_host: str,
        origin_realm: str,
        clock: Callable[[], float],
        on_decision: Callable[[CreditRequest, Decision], None] | None = None,
    ) -> None:
        self.store = store
        self.origin_host = origin_host
        self.origin_realm = origin_realm
        self.clock = clock
        self.on_decision = on_decision

    # -- Ro -----------------------------------------------------------------

    def handle_ccr(self, msg: Message) -> Deferred[Message]:
        """The CCA for a CCR (fires with it; never fails)."""
        try:
            req = parse_ccr(msg)
        except CcrError as e:
            log.info("ocs: refused CCR {sid}: {why}", sid=msg.session_id, why=e.message)
            cca = build_cca(
                msg, self.origin_host, self.origin_realm, CreditAnswer(e.result_code), e
            )
            return succeed(cca)
        now = self.clock()
        d = self.store.transact(lambda t: decide(t, req, now))

        def answered(decision: Decision) -> Message:
            if self.on_decision is not None:
                self.on_decision(req, decision)
            log.info(
                "ocs: {action} {amount} {currency} for {impu}: {result}{dup}",
                action=req.action.name,
                amount=str(req.amount),
                currency=CURRENCY_NAMES.get(req.currency, req.currency),
                impu=req.impu,
                result=decision.answer.result_code,
                dup=" (duplicate)" if decision.duplicate else "",
            )
            return build_cca(msg, self.origin_host, self.origin_realm, decision.answer)

        def failed(f: Any) -> Message:
            log.failure("ocs: cannot record the charge of {sid}", f, sid=req.session_id)
            return build_cca(
                msg, self.origin_host, self.origin_realm, CreditAnswer(ResultCode.UNABLE_TO_COMPLY)
            )

        return d.addCallbacks(answered, failed)

    # -- accounts -------------------------------------------------------------

    def seed(self, accounts: Mapping[str, str], currency: str) -> Deferred[list[str]]:
        """Create the accounts that do not exist yet; the IMPUs created."""
        code = currency_code(currency)
        initial = {
            impu: str(parse_amount(v, f"[ocs] accounts {impu}")) for impu, v in accounts.items()
        }

        def txn(t: Any) -> list[str]:
            made = []
            for impu, balance in initial.items():
                if t.get(ACCOUNTS, impu) is None:
                    t.put(ACCOUNTS, impu, {"impu": impu, "balance": balance, "currency": code})
                    made.append(impu)
            return made

        return self.store.transact(txn)

    def accounts(self) -> Deferred[list[dict[str, Any]]]:
        return self.store.transact(lambda t: [_shown(doc) for _, doc in t.scan(ACCOUNTS)])

    def account(self, impu: str) -> Deferred[dict[str, Any] | None]:
        return self.store.transact(lambda t: _maybe_shown(t.get(ACCOUNTS, impu)))

    def adjust(
        self,
        impu: str,
        *,
        credit: str | None = None,
        set_to: str | None = None,
        currency: str | None = None,
    ) -> Deferred[dict[str, Any]]:
        """Credit (or debit, negative) an account, or set its balance; creates it with set."""
        delta = parse_amount(credit, "credit") if credit is not None else None
        target = parse_amount(set_to, "balance") if set_to is not None else None
        if (delta is None) == (target is None):
            raise AccountError("give exactly one of credit and balance")
        code = currency_code(currency) if currency else None
        now = self.clock()

        def txn(t: Any) -> dict[str, Any]:
            acc = t.get(ACCOUNTS, impu)
            if acc is None:
                if target is None:
                    raise AccountError(f"no account for {impu}")
                acc = {"impu": impu, "balance": "0", "currency": code or CURRENCIES["EUR"]}
            new = target if target is not None else Decimal(acc["balance"]) + (delta or 0)
            if new < 0:
                raise AccountError("a balance cannot go below zero")
            acc = {**acc, "balance": str(new)}
            if code is not None:
                acc["currency"] = code
            t.put(ACCOUNTS, impu, acc)
            t.put(
                RECORDS,
                f"admin#{impu}#{now!r}",
                {
                    "session_id": "admin",
                    "request_number": 0,
                    "impu": impu,
                    "action": "ADMIN",
                    "amount": str(delta if delta is not None else new),
                    "currency": acc["currency"],
                    "icid": None,
                    "detail": "set" if target is not None else "credit",
                    "origin_host": "admin",
                    "result_code": int(ResultCode.SUCCESS),
                    "balance_after": str(new),
                    "time": now,
                },
            )
            return _shown(acc)

        return self.store.transact(txn)

    def records(self, impu: str | None = None, limit: int = 1000) -> Deferred[list[dict[str, Any]]]:
        def txn(t: Any) -> list[dict[str, Any]]:
            rows = t.find(RECORDS, impu=impu) if impu else list(t.scan(RECORDS))
            docs = sorted((doc for _, doc in rows), key=lambda r: r["time"])
            return [_shown_record(r) for r in docs[-limit:]]

        return self.store.transact(txn)


def _shown(acc: dict[str, Any]) -> dict[str, Any]:
    return {
        "impu": acc["impu"],
        "balance": acc["balance"],
        "currency": CURRENCY_NAMES.get(acc["currency"], str(acc["currency"])),
    }


def _maybe_shown(acc: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if acc is None else _shown(acc)


def _shown_record(r: dict[str, Any]) -> dict[str, Any]:
    return {**r, "currency": CURRENCY_NAMES.get(r["currency"], str(r["currency"]))}
