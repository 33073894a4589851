"""The AS's charging client: purchases debited and refunded over Diameter Ro.

Implements :class:`imsp2pd.content.purchase.Charging` on a
:class:`~imsp2pd.diameter.node.DiameterNode` that has the OCS as a peer. The
Session-Id of each CCR is the charge's (one per purchase attempt, see
imsp2pd.content.purchase), so a re-sent debit is recognised by the OCS.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from imsp2pd.content.purchase import BackendDown, Charge, NoCredit, NotAllowed
from imsp2pd.diameter.codes import ResultCode
from imsp2pd.diameter.message import Message
from imsp2pd.ims.ro import CURRENCIES, RequestedAction, build_ccr, read_cca


class RoCharging:
    def __init__(
        self,
        node: Any,
        origin_host: str,
        realm: str,
        destination_host: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.node = node
        self.origin_host = origin_host
        self.realm = realm
        self.destination_host = destination_host
        self.timeout = timeout

    def debit(self, charge: Charge) -> Deferred[None]:
        return self._send(charge, RequestedAction.DIRECT_DEBITING)

    def refund(self, charge: Charge) -> Deferred[None]:
        return self._send(charge, RequestedAction.REFUND_ACCOUNT)

    def _send(self, charge: Charge, action: RequestedAction) -> Deferred[None]:
        currency = CURRENCIES.get(charge.currency.upper())
        if currency is None:
            raise NotAllowed(f"the OCS does not charge in {charge.currency}")
        msg = build_ccr(
            session_id=charge.session_id,
            origin_host=self.origin_host,
            origin_realm=self.realm,
            destination_realm=self.realm,
            destination_host=self.destination_host,
            impu=charge.impu,
            action=action,
            amount=charge.amount,
            currency=currency,
            icid=charge.icid or None,
            detail=f"{charge.doi} {charge.offer_id}",
        )
        d = self.node.request(msg, timeout=self.timeout)
        return d.addCallbacks(_outcome, _unreachable)


def _outcome(cca: Message) -> None:
    code = read_cca(cca).result_code
    if code == ResultCode.SUCCESS:
        return None
    if code == ResultCode.CREDIT_LIMIT_REACHED:
        raise NoCredit("credit limit reached")
    if code in (ResultCode.USER_UNKNOWN, ResultCode.END_USER_SERVICE_DENIED):
        raise NotAllowed(f"charging refused ({code})")
    raise BackendDown(f"the OCS answered {code}")


def _unreachable(f: Failure) -> None:
    from imsp2pd.diameter.errors import PeerUnavailable, RequestTimeout

    if f.check(PeerUnavailable, RequestTimeout):
        raise BackendDown(f"the OCS cannot be reached: {f.getErrorMessage()}")
    f.raiseException()
