"""The HSS: subscribers, identities, credentials, profiles, PSIs and S-CSCF assignment over Cx.

Store collections (migration ``hss-0001-subscribers``):

* ``hss_subscribers`` keyed by IMPI: ``{"impi", "ha1" (hex MD5 of
  IMPI:realm:password, never the password), "aka": {"k", "opc", "amf" (hex),
  "sqn" (int)} | None, "ifcs": [iFC documents, see imsp2pd.ims.profile],
  "mandatory_capabilities", "optional_capabilities": [int] | None (None or
  absent: the ``[hss]`` defaults)}``
* ``hss_identities`` keyed by IMPU or PSI: ``{"impu", "impi", "kind"
  ("user" | "psi"), "barred", "irs" (implicit registration set id), "state"
  ("not_registered" | "registered" | "unregistered"), "scscf" (SIP URI),
  "scscf_host" (its Diameter identity), "as" (for a PSI: the AS that hosts
  it)}``, indexed by ``impi`` and ``irs``.

:meth:`Hss.process` answers one Cx request inside one store transaction
(``txn``), so a state change or an SQN step is durable before the answer
leaves; :meth:`Hss.handle` is the :class:`~imsp2pd.diameter.node.DiameterNode`
handler that runs it off the reactor thread. Results follow TS 29.228/29.229:
plain success as Result-Code 2001, the Cx-specific outcomes in
Experimental-Result with Vendor-Id 10415.

S-CSCF assignment (TS 29.228 §6.1.1.1, §6.1.4.1, §6.7): a UAR for a user
with an S-CSCF (registered, unregistered, or a name kept by the MAR or a
deregistration that stores it) gets Server-Name with
DIAMETER_SUBSEQUENT_REGISTRATION (2002); a user with none gets
Server-Capabilities with DIAMETER_FIRST_REGISTRATION (2001), and so does
every REGISTRATION_AND_CAPABILITIES UAR, with Result-Code DIAMETER_SUCCESS
(the I-CSCF is choosing anew). An LIR for a user that is not registered
but has services for the unregistered state gets the kept Server-Name or
else Server-Capabilities, with DIAMETER_UNREGISTERED_SERVICE (2003).

Server-Capabilities holds the subscriber's capabilities: its
``mandatory_capabilities`` and ``optional_capabilities`` (provisioning),
else ``[hss] mandatory_capabilities`` / ``optional_capabilities`` (both
empty by default: any S-CSCF will do). The numbers are the operator's own,
the same as in the I-CSCF's ``[[icscf.scscfs]] capabilities``, which
chooses among its S-CSCFs with them. ``[hss] scscf_names`` (empty by
default) adds Server-Name values: the I-CSCF prefers a named S-CSCF among
equally capable ones, falls back to the first name when none of its own
qualifies, and, when the capabilities are empty, takes the first name as
it is. Leave it empty when the I-CSCF knows its S-CSCFs; set it when the
I-CSCF does not (a bare I-CSCF then routes to the named S-CSCF).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet.defer import Deferred

from imsp2pd.diameter import cx
from imsp2pd.diameter.avp import Avp, keep_encoded
from imsp2pd.diameter.codes import (
    AvpCode,
    Command,
    CxResult,
    ResultCode,
    ServerAssignmentType,
    TgppAvp,
    UserAuthorizationType,
    Vendor,
)
from imsp2pd.diameter.dictionary import Dictionary, default_dictionary
from imsp2pd.diameter.message import Message, answer
from imsp2pd.diameter.peer import PeerInfo
from imsp2pd.ims import milenage
from imsp2pd.ims.profile import (
    ApplicationServer,
    IMSSubscription,
    InitialFilterCriteria,
    ProfileError,
    PublicIdentity,
    ServiceProfile,
    SessionCase,
    Spt,
    TriggerPoint,
    ifc_from_dict,
    ifc_to_dict,
    to_xml,
)
from imsp2pd.store import Collection, Migration, Store

T = TypeVar("T")

SUBSCRIBERS = "hss_subscribers"
IDENTITIES = "hss_identities"
MIGRATIONS = (
    Migration(
        "hss-0001-subscribers",
        (Collection(SUBSCRIBERS), Collection(IDENTITIES, ("impi", "irs"))),
    ),
)

NOT_REGISTERED = "not_registered"
REGISTERED = "registered"
UNREGISTERED = "unregistered"

_DEREGISTRATIONS = {
    ServerAssignmentType.TIMEOUT_DEREGISTRATION: False,
    ServerAssignmentType.USER_DEREGISTRATION: False,
    ServerAssignmentType.ADMINISTRATIVE_DEREGISTRATION: False,
    ServerAssignmentType.DEREGISTRATION_TOO_MUCH_DATA: False,
    ServerAssignmentType.TIMEOUT_DEREGISTRATION_STORE_SERVER_NAME: True,
    ServerAssignmentType.USER_DEREGISTRATION_STORE_SERVER_NAME: True,
}


#: User-Data documents kept (one per subscriber profile); the cache empties when full.
_USER_DATA_CACHE = 50_000


class ProvisioningError(ValueError):
    """A subscriber, identity or PSI document that cannot be stored, as one line."""


def digest_ha1(impi: str, realm: str, password: str) -> str:
    """RFC 2617 HA1 = MD5(username:realm:password), hex."""
    return hashlib.md5(f"{impi}:{realm}:{password}".encode()).hexdigest()


def content_ifcs(psi: str, application_server: str) -> list[InitialFilterCriteria]:
    """The lab iFCs (DESIGN.md section 2): MESSAGE/PUBLISH/SUBSCRIBE to the PSI, and REGISTER.

    Priority 0, CNF: (Method MESSAGE or PUBLISH or SUBSCRIBE) and Request-URI =
    the PSI and SessionCase originating, to the AS. Priority 1: REGISTER to the
    AS (third-party registration).
    """
    methods = tuple(Spt(group=(0,), method=m) for m in ("MESSAGE", "PUBLISH", "SUBSCRIBE"))
    content = InitialFilterCriteria(
        priority=0,
        application_server=ApplicationServer(application_server),
        trigger=TriggerPoint(
            cnf=True,
            spts=methods
            + (
                Spt(group=(1,), request_uri=psi),
                Spt(group=(2,), session_case=SessionCase.ORIGINATING),
            ),
        ),
    )
    register = InitialFilterCriteria(
        priority=1,
        application_server=ApplicationServer(application_server),
        trigger=TriggerPoint(cnf=True, spts=(Spt(group=(0,), method="REGISTER"),)),
    )
    return [content, register]


@dataclass(frozen=True, slots=True)
class HssConfig:
    origin_host: str = "hss.ims.example.org"
    realm: str = "ims.example.org"
    #: Server-Name values added to Server-Capabilities (none unless configured).
    scscf_names: tuple[str, ...] = ()
    #: the capabilities of a subscriber whose provisioning names none
    mandatory_capabilities: tuple[int, ...] = ()
    optional_capabilities: tuple[int, ...] = ()
    max_auth_items: int = 5
    default_amf: str = "8000"


class Hss:
    def __init__(
        self,
        config: HssConfig,
        store: Store | None = None,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
        dictionary: Dictionary | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.random_bytes = random_bytes
        self.d = dictionary or default_dictionary()
        self._cache = _Cache()
        #: Server-Capabilities AVPs by (mandatory, optional) capabilities
        self._server_capabilities: dict[tuple[tuple[int, ...], tuple[int, ...]], Avp] = {}
        #: User-Data XML by profile content (see :meth:`user_data`)
        self._user_data: dict[tuple[str, tuple[tuple[str, bool], ...], str], bytes] = {}
        #: iFCs by their documents' repr (most subscribers share them)
        self._ifcs: dict[str, tuple[InitialFilterCriteria, ...]] = {}
        #: the repr of iFC document lists, by the list (see :meth:`user_data`)
        self._ifcs_text: dict[int, tuple[list[Any], str]] = {}
        self._handlers: dict[int, Callable[[Any, Message], Message]] = {
            Command.USER_AUTHORIZATION: self.uar,
            Command.MULTIMEDIA_AUTH: self.mar,
            Command.SERVER_ASSIGNMENT: self.sar,
            Command.LOCATION_INFO: self.lir,
        }
        d = self.d
        #: the AVPs every SIP Digest MAA has (SIP-Item-Number 1 and the scheme; the
        #: realm, algorithm and qop of SIP-Digest-Authenticate), made once
        self._digest_item = (
            d.constant(TgppAvp.SIP_ITEM_NUMBER, 1),
            d.constant(TgppAvp.SIP_AUTHENTICATION_SCHEME, cx.SCHEME_DIGEST),
        )
        self._digest_params = (
            d.constant(AvpCode.DIGEST_REALM, config.realm),
            d.constant(AvpCode.DIGEST_ALGORITHM, "MD5"),
            d.constant(AvpCode.DIGEST_QOP, "auth"),
        )
        #: store transactions in flight from :meth:`transact` (their writes unknown)
        self._transactions = 0
        #: writes in flight from :meth:`handle`: collection -> key -> (before, after)
        self._in_flight = _InFlight()

    # Diameter entry points --------------------------------------------------------

    def handle(self, req: Message, peer: PeerInfo) -> Message | Deferred[Message]:
        """The node's handler: the request processed once, from the cache when it can be.

        A request whose reads the cache holds is processed in the reactor
        thread. If it wrote nothing (MAR with SIP Digest, a re-registration
        SAR that changes nothing, UAR, LIR) it is answered at once (no
        Deferred); if it wrote (the MAR that keeps the S-CSCF, the SAR that
        registers, an AKA SQN step), only its writes go to the store, and the
        answer fires once they are committed. A miss, or a write that could
        rest on something a transaction in flight changes, runs the request
        in a store transaction instead (:meth:`transact`); so does any request
        that reads what a write of this path, in flight, changes. (A request
        that only reads, while a :meth:`transact` is in flight, sees what was
        committed before it.)
        """
        view = _CacheView(self._cache, self._in_flight)
        try:
            ans = self.process(view, req)
        except _CacheMiss:
            return self.transact(lambda txn: self.process(txn, req))
        if view.stale or (view.written and self._transactions):
            # It read what a write in flight changes, or it writes while a transaction
            # whose writes are not known yet is in flight: after them, from the store.
            return self.transact(lambda txn: self.process(txn, req))
        if not view.written:
            return ans
        return self._write_behind(view, ans)

    def _write_behind(self, view: _CacheView, ans: Message) -> Deferred[Message]:
        """Commit ``view``'s writes alone; then the cache has them, and ``ans`` fires."""
        if self.store is None:
            raise RuntimeError("Hss needs a store")
        written, before = view.written, view.before
        in_flight = self._in_flight
        in_flight.add(written, before)

        def write(txn: Any) -> Message:
            for (collection, key), doc in written.items():
                txn.put(collection, key, doc)
            return ans

        # (no inner function calls another: compiled, that would be a cycle)
        def committed(result: Message) -> Message:
            in_flight.remove(written, before)
            _apply(self._cache, before, written, {})
            return result

        def failed(f: Any) -> Any:
            in_flight.remove(written, before)
            self.forget_cache()
            return f

        return self.store.transact(write).addCallbacks(committed, failed)

    def transact(self, fn: Callable[[Any], T]) -> Deferred[T]:
        """Run ``fn(txn)`` in a store transaction and keep the cache in step with it.

        Every write to the HSS collections must go through here (or be
        followed by :meth:`forget_cache`).
        """
        if self.store is None:
            raise RuntimeError("Hss needs a store")
        recorders: list[_Recorder] = []

        def run(txn: Any) -> T:
            rec = _Recorder(txn)
            recorders.append(rec)
            return fn(rec)

        def committed(result: T) -> T:
            self._transactions -= 1
            for rec in recorders[-1:]:
                rec.apply(self._cache)
            return result

        def failed(f: Any) -> Any:
            self._transactions -= 1
            self.forget_cache()
            return f

        self._transactions += 1
        return self.store.transact(run).addCallbacks(committed, failed)

    def forget_cache(self) -> None:
        self._cache.clear()

    def warm_cache(self, limit: int | None = None) -> Deferred[int]:
        """Read subscribers and identities into the cache (one store transaction).

        After provisioning at start, so that the first UAR of each user is
        answered from the cache too. ``limit`` per collection (default: half
        the cache's size); fires with the number of documents read. When
        every identity was read, so are the registration sets and the
        identities of each IMPI (the queries of a first MAR and SAR).
        """
        cap = self._cache.max_docs // 2 if limit is None else limit

        def read(txn: Any) -> int:
            subs = sum(1 for _ in txn.scan(SUBSCRIBERS, limit=cap))
            idents = list(txn.scan(IDENTITIES, limit=cap))
            if len(idents) < cap and isinstance(txn, _Recorder):
                for field in ("impi", "irs"):
                    groups: dict[Any, list[tuple[str, dict[str, Any]]]] = {}
                    for key, doc in idents:  # in key order, as a find gives them
                        groups.setdefault(doc.get(field), []).append((key, doc))
                    for value, found in groups.items():
                        txn.found(IDENTITIES, {field: value}, found)
            return subs + len(idents)

        return self.transact(read).addCallback(self._share_ifcs)

    def _share_ifcs(self, read: int) -> int:
        """After warming: one list for the equal iFC documents of the cached
        subscribers (most share a profile), its repr kept for :meth:`user_data`,
        so that a first SAR does not repr its subscriber's own copy."""
        shared: dict[str, list[Any]] = {}
        for (collection, _), doc in self._cache.docs.items():
            if collection != SUBSCRIBERS or doc is None or type(doc.get("ifcs")) is not list:
                continue
            text = repr(doc["ifcs"])
            one = doc["ifcs"] = shared.setdefault(text, doc["ifcs"])  # equal: repr tells
            if len(self._ifcs_text) >= _USER_DATA_CACHE:
                self._ifcs_text.clear()
            self._ifcs_text[id(one)] = (one, text)
        return read

    def process(self, txn: Any, req: Message) -> Message:
        handler = self._handlers.get(req.code)
        if handler is None:
            return self._answer(req, ResultCode.COMMAND_UNSUPPORTED)
        result: Message = handler(txn, req)
        return result

    # Answers ----------------------------------------------------------------------

    def _answer(
        self,
        req: Message,
        result: int | None = ResultCode.SUCCESS,
        avps: Iterable[Avp] = (),
        experimental: int | None = None,
        error_message: str | None = None,
    ) -> Message:
        d = self.d
        return answer(
            req,
            self.config.origin_host,
            self.config.realm,
            result,
            [*cx.cx_head(d), *avps],
            experimental=(Vendor.TGPP, experimental) if experimental is not None else None,
            error_message=error_message,
            dictionary=d,
        )

    def _exp(
        self, req: Message, code: CxResult, avps: Iterable[Avp] = (), why: str | None = None
    ) -> Message:
        return self._answer(req, None, avps, experimental=code, error_message=why)

    # Lookups ----------------------------------------------------------------------

    def _identity(self, txn: Any, impu: str | None) -> dict[str, Any] | None:
        if not impu:
            return None
        doc: dict[str, Any] | None = txn.get(IDENTITIES, impu)
        return doc

    def _user_pair(self, txn: Any, req: Message) -> tuple[dict[str, Any], dict[str, Any]] | Message:
        """(subscriber, identity) for User-Name + Public-Identity, or the error answer."""
        impi = req.get_str(AvpCode.USER_NAME)
        impu = req.get_str(TgppAvp.PUBLIC_IDENTITY)
        sub = txn.get(SUBSCRIBERS, impi) if impi else None
        ident = self._identity(txn, impu)
        if sub is None or ident is None or ident.get("kind") == "psi":
            return self._exp(req, CxResult.ERROR_USER_UNKNOWN, why="unknown user")
        if ident.get("impi") != impi:
            return self._exp(req, CxResult.ERROR_IDENTITIES_DONT_MATCH, why="IMPU not of this IMPI")
        return sub, ident

    def _set_members(self, txn: Any, ident: dict[str, Any]) -> list[dict[str, Any]]:
        """The implicit registration set of an identity (itself included)."""
        irs = ident.get("irs")
        if not irs:
            return [ident]
        return [doc for _, doc in txn.find(IDENTITIES, irs=irs)]

    def _update_set(self, txn: Any, ident: dict[str, Any], **changes: Any) -> None:
        for member in self._set_members(txn, ident):
            if all(member.get(k) == v for k, v in changes.items()):
                continue  # a re-registration changes nothing: no write, no fsync
            member.update(changes)
            txn.put(IDENTITIES, member["impu"], member)

    # UAR --------------------------------------------------------------------------

    def uar(self, txn: Any, req: Message) -> Message:
        pair = self._user_pair(txn, req)
        if isinstance(pair, Message):
            return pair
        sub, ident = pair
        if ident.get("barred"):
            return self._answer(
                req, ResultCode.AUTHORIZATION_REJECTED, error_message="identity is barred"
            )
        auth_type = req.get_int(TgppAvp.USER_AUTHORIZATION_TYPE) or 0
        state, scscf = ident.get("state", NOT_REGISTERED), ident.get("scscf")
        name = [self.d.constant(TgppAvp.SERVER_NAME, scscf)] if scscf else []
        if auth_type == UserAuthorizationType.DE_REGISTRATION:
            if state == NOT_REGISTERED and not scscf:
                return self._exp(req, CxResult.ERROR_IDENTITY_NOT_REGISTERED)
            return self._answer(req, ResultCode.SUCCESS, name)
        if auth_type == UserAuthorizationType.REGISTRATION_AND_CAPABILITIES:
            # TS 29.228 6.1.1.1: the I-CSCF selects a new S-CSCF.
            return self._answer(req, ResultCode.SUCCESS, self._capabilities(sub))
        if scscf:
            return self._exp(req, CxResult.SUBSEQUENT_REGISTRATION, name)
        return self._exp(req, CxResult.FIRST_REGISTRATION, self._capabilities(sub))

    def capabilities(self, sub: Mapping[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(mandatory, optional) capabilities of a subscriber, the defaults if it has none."""
        mandatory = sub.get("mandatory_capabilities")
        optional = sub.get("optional_capabilities")
        return (
            self.config.mandatory_capabilities if mandatory is None else tuple(mandatory),
            self.config.optional_capabilities if optional is None else tuple(optional),
        )

    def _capabilities(self, sub: Mapping[str, Any]) -> list[Avp]:
        """Server-Capabilities (TS 29.229 6.3.4): mandatory, optional, then
        Server-Names; none at all when all three are empty (an empty grouped
        AVP is what dissectors flag; the I-CSCF reads no Server-Capabilities
        in a successful answer as no requirement)."""
        d = self.d
        mandatory, optional = self.capabilities(sub)
        if not (mandatory or optional or self.config.scscf_names):
            return []
        found = self._server_capabilities.get((mandatory, optional))
        if found is not None:
            return [found]
        found = d.group(
            TgppAvp.SERVER_CAPABILITIES,
            *(d.make(TgppAvp.MANDATORY_CAPABILITY, c) for c in mandatory),
            *(d.make(TgppAvp.OPTIONAL_CAPABILITY, c) for c in optional),
            *(d.make(TgppAvp.SERVER_NAME, n) for n in self.config.scscf_names),
        )
        if len(self._server_capabilities) >= 1024:
            self._server_capabilities.clear()
        self._server_capabilities[(mandatory, optional)] = keep_encoded(found)
        return [found]

    # MAR --------------------------------------------------------------------------

    def mar(self, txn: Any, req: Message) -> Message:
        pair = self._user_pair(txn, req)
        if isinstance(pair, Message):
            return pair
        sub, ident = pair
        item = cx.requested_item(req)  # (scheme, authorization) of the first item
        scheme = item[0] if item is not None else cx.SCHEME_UNKNOWN
        if scheme == cx.SCHEME_UNKNOWN:
            scheme = cx.SCHEME_AKA if sub.get("aka") else cx.SCHEME_DIGEST
        server = req.get_str(TgppAvp.SERVER_NAME)
        if server and ident.get("state", NOT_REGISTERED) == NOT_REGISTERED:
            # TS 29.228 6.3: the HSS keeps the S-CSCF that authenticates an unregistered user.
            self._update_set(txn, ident, scscf=server, scscf_host=req.origin_host)
        if scheme == cx.SCHEME_DIGEST and sub.get("ha1"):
            return self._digest_answer(req, sub)
        if scheme == cx.SCHEME_AKA and sub.get("aka"):
            authorization = item[1] if item is not None else None
            return self._aka_answer(txn, req, sub, authorization)
        return self._exp(
            req,
            CxResult.ERROR_AUTH_SCHEME_NOT_SUPPORTED,
            why=f"no {scheme} credentials for this user",
        )

    def _mar_head(self, req: Message, sub: dict[str, Any], count: int) -> list[Avp]:
        d = self.d
        return [
            d.make(AvpCode.USER_NAME, sub["impi"]),
            d.make(TgppAvp.PUBLIC_IDENTITY, req.get_str(TgppAvp.PUBLIC_IDENTITY) or ""),
            d.constant(TgppAvp.SIP_NUMBER_AUTH_ITEMS, count),
        ]

    def _digest_answer(self, req: Message, sub: dict[str, Any]) -> Message:
        d = self.d
        item = d.group(
            TgppAvp.SIP_AUTH_DATA_ITEM,
            *self._digest_item,
            d.group(
                TgppAvp.SIP_DIGEST_AUTHENTICATE,
                *self._digest_params,
                d.make(AvpCode.DIGEST_HA1, sub["ha1"]),
            ),
        )
        return self._answer(req, ResultCode.SUCCESS, [*self._mar_head(req, sub, 1), item])

    def _aka_answer(
        self, txn: Any, req: Message, sub: dict[str, Any], authorization: bytes | None
    ) -> Message:
        d = self.d
        aka = dict(sub["aka"])
        k, opc, amf = bytes.fromhex(aka["k"]), bytes.fromhex(aka["opc"]), bytes.fromhex(aka["amf"])
        sqn = int(aka.get("sqn", 0))
        if authorization is not None:
            if len(authorization) != 30:
                return self._answer(
                    req,
                    ResultCode.INVALID_AVP_VALUE,
                    error_message="SIP-Authorization must be RAND (16) || AUTS (14)",
                )
            try:
                sqn = milenage.resynchronise(k, opc, authorization[:16], authorization[16:]) + 1
            except milenage.MilenageError as exc:
                return self._answer(req, ResultCode.AUTHENTICATION_REJECTED, error_message=str(exc))
        wanted = req.get_int(TgppAvp.SIP_NUMBER_AUTH_ITEMS) or 1
        count = max(1, min(wanted, self.config.max_auth_items))
        items = []
        for i in range(count):
            sqn = (sqn + 1) % (milenage.SQN_MAX + 1)
            v = milenage.generate_vector(k, opc, sqn, amf, self.random_bytes(16))
            items.append(
                d.group(
                    TgppAvp.SIP_AUTH_DATA_ITEM,
                    d.make(TgppAvp.SIP_ITEM_NUMBER, i + 1),
                    d.make(TgppAvp.SIP_AUTHENTICATION_SCHEME, cx.SCHEME_AKA),
                    d.make(TgppAvp.SIP_AUTHENTICATE, v.sip_authenticate),
                    d.make(TgppAvp.SIP_AUTHORIZATION, v.xres),
                    d.make(TgppAvp.CONFIDENTIALITY_KEY, v.ck),
                    d.make(TgppAvp.INTEGRITY_KEY, v.ik),
                )
            )
        aka["sqn"] = sqn
        sub = {**sub, "aka": aka}
        txn.put(SUBSCRIBERS, sub["impi"], sub)  # the SQN step is durable before the MAA
        return self._answer(req, ResultCode.SUCCESS, [*self._mar_head(req, sub, count), *items])

    # SAR --------------------------------------------------------------------------

    def sar(self, txn: Any, req: Message) -> Message:
        impus = cx.public_identities(req)
        impi = req.get_str(AvpCode.USER_NAME)
        idents = [self._identity(txn, i) for i in impus]
        if not impus or any(i is None or i.get("kind") == "psi" for i in idents):
            return self._exp(req, CxResult.ERROR_USER_UNKNOWN, why="unknown public identity")
        first = idents[0]
        assert first is not None
        if impi is not None and any(i is not None and i.get("impi") != impi for i in idents):
            return self._exp(req, CxResult.ERROR_IDENTITIES_DONT_MATCH)
        owner = first["impi"]
        sub = txn.get(SUBSCRIBERS, owner)
        if sub is None:
            return self._exp(req, CxResult.ERROR_USER_UNKNOWN)
        kind = req.get_int(TgppAvp.SERVER_ASSIGNMENT_TYPE)
        server = req.get_str(TgppAvp.SERVER_NAME)
        host = req.origin_host
        want_data = req.get_int(TgppAvp.USER_DATA_ALREADY_AVAILABLE) != 1
        if kind in (ServerAssignmentType.REGISTRATION, ServerAssignmentType.RE_REGISTRATION):
            self._update_set(txn, first, state=REGISTERED, scscf=server, scscf_host=host)
        elif kind == ServerAssignmentType.UNREGISTERED_USER:
            if first.get("state") != REGISTERED:
                self._update_set(txn, first, state=UNREGISTERED, scscf=server, scscf_host=host)
        elif kind in _DEREGISTRATIONS:
            keep = _DEREGISTRATIONS[ServerAssignmentType(kind)]
            changes: dict[str, Any] = {"state": NOT_REGISTERED}
            if not keep:
                changes.update(scscf=None, scscf_host=None)
            self._update_set(txn, first, **changes)
            want_data = keep and want_data
        elif kind in (
            ServerAssignmentType.AUTHENTICATION_FAILURE,
            ServerAssignmentType.AUTHENTICATION_TIMEOUT,
        ):
            if first.get("state", NOT_REGISTERED) == NOT_REGISTERED:
                self._update_set(txn, first, scscf=None, scscf_host=None)
            want_data = False
        elif kind == ServerAssignmentType.NO_ASSIGNMENT:
            if first.get("scscf") and server and first.get("scscf") != server:
                return self._answer(
                    req, ResultCode.UNABLE_TO_COMPLY, error_message="another S-CSCF serves the user"
                )
        else:
            return self._exp(req, CxResult.ERROR_IN_ASSIGNMENT_TYPE)
        avps = [self.d.make(AvpCode.USER_NAME, owner)]
        if want_data:
            avps.append(self.d.make(TgppAvp.USER_DATA, self.user_data(txn, sub)))
        return self._answer(req, ResultCode.SUCCESS, avps)

    def user_data(self, txn: Any, sub: dict[str, Any]) -> bytes:
        """The CxDataType XML of a subscriber: one ServiceProfile with all its IMPUs.

        Built once per profile content (IMPI, IMPUs with their barring, iFC
        documents) and kept: a re-registration's SAR sends the same bytes.
        """
        idents = sorted(
            (doc for _, doc in txn.find(IDENTITIES, impi=sub["impi"])), key=lambda d: d["impu"]
        )
        publics = tuple((i["impu"], bool(i.get("barred"))) for i in idents)
        ifcs = sub.get("ifcs", [])
        # repr of JSON values tells different contents apart; equal contents
        # written in another key order only miss the cache. A document from the
        # cache shares its list with the cached one (copies are shallow, and
        # nothing changes a document's lists in place): its repr is kept with it.
        seen = self._ifcs_text.get(id(ifcs))
        if seen is not None and seen[0] is ifcs:
            text = seen[1]
        else:
            text = repr(ifcs)
            if len(self._ifcs_text) >= _USER_DATA_CACHE:
                self._ifcs_text.clear()
            self._ifcs_text[id(ifcs)] = (ifcs, text)
        key = (sub["impi"], publics, text)
        cached = self._user_data.get(key)
        if cached is not None:
            return cached
        criteria = self._ifcs.get(text)
        if criteria is None:
            criteria = tuple(ifc_from_dict(f) for f in ifcs)
            if len(self._ifcs) >= 1024:
                self._ifcs.clear()
            self._ifcs[text] = criteria
        profile = ServiceProfile(
            tuple(PublicIdentity(impu, barred) for impu, barred in publics), criteria
        )
        data = to_xml(IMSSubscription(sub["impi"], (profile,)))
        if len(self._user_data) >= _USER_DATA_CACHE:
            self._user_data.clear()
        self._user_data[key] = data
        return data

    # LIR --------------------------------------------------------------------------

    def lir(self, txn: Any, req: Message) -> Message:
        ident = self._identity(txn, req.get_str(TgppAvp.PUBLIC_IDENTITY))
        if ident is None:
            return self._exp(req, CxResult.ERROR_USER_UNKNOWN, why="unknown public identity")
        d = self.d
        if ident.get("kind") == "psi":
            return self._answer(req, ResultCode.SUCCESS, [d.make(TgppAvp.SERVER_NAME, ident["as"])])
        scscf = ident.get("scscf")
        if scscf and ident.get("state") in (REGISTERED, UNREGISTERED):
            return self._answer(req, ResultCode.SUCCESS, [d.make(TgppAvp.SERVER_NAME, scscf)])
        sub = txn.get(SUBSCRIBERS, ident.get("impi") or "")
        if sub is not None and _has_unregistered_services(sub):
            avps = [d.make(TgppAvp.SERVER_NAME, scscf)] if scscf else self._capabilities(sub)
            return self._exp(req, CxResult.UNREGISTERED_SERVICE, avps)
        return self._exp(req, CxResult.ERROR_IDENTITY_NOT_REGISTERED)

    # Provisioning (used by the role's loader and admin API) -------------------------

    def put_subscriber(
        self,
        txn: Any,
        impi: str,
        impus: Sequence[str],
        *,
        password: str | None = None,
        ha1: str | None = None,
        aka: Mapping[str, Any] | None = None,
        ifcs: Sequence[Mapping[str, Any]] = (),
        barred: Sequence[str] = (),
        replace_credentials: bool = True,
        mandatory_capabilities: Sequence[int] | None = None,
        optional_capabilities: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        """Create or change a subscriber and its IMPUs (one implicit registration set).

        Registration state and S-CSCF of IMPUs that already exist are kept,
        and so is the SQN of existing AKA credentials, so loading the same
        provisioning file at every start changes nothing. Capabilities left
        out (None) are the ``[hss]`` defaults at the time of each answer.
        """
        if not impi or "@" not in impi:
            raise ProvisioningError(f"IMPI {impi!r} must look like user@realm")
        if not impus:
            raise ProvisioningError(f"subscriber {impi} needs at least one IMPU")
        for impu in impus:
            if not impu.startswith(("sip:", "sips:", "tel:")):
                raise ProvisioningError(f"IMPU {impu!r} must be a sip:, sips: or tel: URI")
        try:
            for f in ifcs:
                ifc_from_dict(dict(f))
        except ProfileError as exc:
            raise ProvisioningError(f"subscriber {impi}: {exc}") from None
        caps = {
            "mandatory_capabilities": mandatory_capabilities,
            "optional_capabilities": optional_capabilities,
        }
        for key, value in caps.items():
            why = capabilities_error(value) if value is not None else None
            if why:
                raise ProvisioningError(f"subscriber {impi}: {key} {why}")
        old = txn.get(SUBSCRIBERS, impi) or {}
        doc: dict[str, Any] = {"impi": impi, "ha1": old.get("ha1"), "aka": old.get("aka")}
        if replace_credentials or not old:
            if password is not None:
                doc["ha1"] = digest_ha1(impi, self.config.realm, password)
            elif ha1 is not None:
                if len(ha1) != 32 or any(c not in "0123456789abcdef" for c in ha1.lower()):
                    raise ProvisioningError(f"subscriber {impi}: ha1 must be 32 hex digits")
                doc["ha1"] = ha1.lower()
            if aka is not None:
                doc["aka"] = self._aka_doc(impi, aka, old.get("aka"))
        doc["ifcs"] = [dict(f) for f in ifcs]
        for key, value in caps.items():
            if value is not None:
                doc[key] = [int(c) for c in value]
        txn.put(SUBSCRIBERS, impi, doc)
        current = {k for k, _ in txn.find(IDENTITIES, impi=impi)}
        for impu in impus:
            other = txn.get(IDENTITIES, impu)
            if other is not None and other.get("impi") != impi:
                raise ProvisioningError(f"{impu} already belongs to {other.get('impi') or 'a PSI'}")
            ident = other or {
                "impu": impu,
                "state": NOT_REGISTERED,
                "scscf": None,
                "scscf_host": None,
            }
            ident.update(impi=impi, kind="user", irs=impi, barred=impu in barred)
            txn.put(IDENTITIES, impu, ident)
        for gone in current - set(impus):
            txn.delete(IDENTITIES, gone)
        return doc

    def _aka_doc(
        self, impi: str, aka: Mapping[str, Any], old: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        try:
            k = bytes.fromhex(str(aka["k"]))
            if "opc" in aka:
                opc = bytes.fromhex(str(aka["opc"]))
            else:
                opc = milenage.compute_opc(k, bytes.fromhex(str(aka["op"])))
            amf = bytes.fromhex(str(aka.get("amf", self.config.default_amf)))
            milenage.Milenage(k, opc)
            if len(amf) != 2:
                raise ValueError("amf must be 2 bytes")
        except (KeyError, ValueError) as exc:
            raise ProvisioningError(f"subscriber {impi}: bad AKA credentials ({exc})") from None
        sqn = int(aka.get("sqn", (old or {}).get("sqn", 0)))
        return {"k": k.hex(), "opc": opc.hex(), "amf": amf.hex(), "sqn": sqn}

    def delete_subscriber(self, txn: Any, impi: str) -> bool:
        if not txn.delete(SUBSCRIBERS, impi):
            return False
        for key, _ in txn.find(IDENTITIES, impi=impi):
            txn.delete(IDENTITIES, key)
        return True

    def put_psi(self, txn: Any, psi: str, application_server: str) -> dict[str, Any]:
        if not psi.startswith(("sip:", "sips:", "tel:")):
            raise ProvisioningError(f"PSI {psi!r} must be a sip:, sips: or tel: URI")
        if not application_server.startswith(("sip:", "sips:")):
            raise ProvisioningError(f"PSI {psi}: application server must be a SIP URI")
        other = txn.get(IDENTITIES, psi)
        if other is not None and other.get("kind") != "psi":
            raise ProvisioningError(f"{psi} is already a user identity of {other.get('impi')}")
        doc = {"impu": psi, "impi": None, "kind": "psi", "as": application_server, "irs": None}
        txn.put(IDENTITIES, psi, doc)
        return doc

    def get_subscriber(self, txn: Any, impi: str) -> dict[str, Any] | None:
        """The subscriber as the admin API shows it (no credentials)."""
        sub = txn.get(SUBSCRIBERS, impi)
        if sub is None:
            return None
        idents = [doc for _, doc in txn.find(IDENTITIES, impi=impi)]
        return {
            "impi": impi,
            "digest": bool(sub.get("ha1")),
            "aka": bool(sub.get("aka")),
            "ifcs": sub.get("ifcs", []),
            # None: the [hss] defaults
            "mandatory_capabilities": sub.get("mandatory_capabilities"),
            "optional_capabilities": sub.get("optional_capabilities"),
            "impus": [
                {
                    "impu": i["impu"],
                    "barred": bool(i.get("barred")),
                    "state": i.get("state", NOT_REGISTERED),
                    "scscf": i.get("scscf"),
                }
                for i in sorted(idents, key=lambda i: i["impu"])
            ],
        }

    def deregister(self, txn: Any, impi: str) -> tuple[str | None, list[str]]:
        """Administrative deregistration: (S-CSCF Diameter host to send RTR to, IMPUs)."""
        idents = [doc for _, doc in txn.find(IDENTITIES, impi=impi)]
        host = next((i.get("scscf_host") for i in idents if i.get("scscf_host")), None)
        registered = [i["impu"] for i in idents if i.get("state") in (REGISTERED, UNREGISTERED)]
        for i in idents:
            i.update(state=NOT_REGISTERED, scscf=None, scscf_host=None)
            txn.put(IDENTITIES, i["impu"], i)
        return host, registered


def load_provisioning(
    hss: Hss, txn: Any, data: Mapping[str, Any], source: str = "provisioning"
) -> dict[str, int]:
    """Apply a provisioning document (etc/subscribers.toml) idempotently.

    ``[[psi]]`` entries: ``identity``, ``application_server``.
    ``[[subscriber]]`` entries: ``impi``, ``impus``, one of ``password`` (made
    into HA1 here) or ``ha1``, optional ``aka = {k, op | opc, amf, sqn}``,
    ``barred`` (IMPUs), ``profile = "content"`` (the lab iFCs towards the
    first PSI's AS, the default) or ``"none"``, or explicit ``ifcs``, and
    ``mandatory_capabilities`` / ``optional_capabilities`` (lists of
    unsigned 32-bit integers for Server-Capabilities; left out: the ``[hss]``
    defaults).
    Credentials in the file win (a changed password applies at the next
    start); registration state and AKA sequence numbers are kept.
    """
    unknown = set(data) - {"psi", "subscriber"}
    if unknown:
        raise ProvisioningError(f"{source}: unknown section {sorted(unknown)[0]!r}")
    psis = list(data.get("psi", []))
    subs = list(data.get("subscriber", []))
    for entry in psis:
        if (
            not isinstance(entry, Mapping)
            or "identity" not in entry
            or "application_server" not in entry
        ):
            raise ProvisioningError(f"{source}: a [[psi]] needs identity and application_server")
        hss.put_psi(txn, str(entry["identity"]), str(entry["application_server"]))
    content = (
        ifc_documents(content_ifcs(str(psis[0]["identity"]), str(psis[0]["application_server"])))
        if psis
        else []
    )
    # "balance" is the OCS's (its prepaid account, imsp2pd.ims.ocs.balances_from_provisioning).
    allowed = {"impi", "impus", "password", "ha1", "aka", "barred", "profile", "ifcs", "balance"}
    allowed |= {"mandatory_capabilities", "optional_capabilities"}
    for entry in subs:
        if not isinstance(entry, Mapping) or "impi" not in entry:
            raise ProvisioningError(f"{source}: a [[subscriber]] needs impi")
        extra = set(entry) - allowed
        if extra:
            raise ProvisioningError(
                f"{source}: subscriber {entry['impi']}: unknown key {sorted(extra)[0]!r}"
            )
        profile = entry.get("profile", "content")
        if "ifcs" in entry:
            ifcs = list(entry["ifcs"])
        elif profile == "content":
            ifcs = content
        elif profile == "none":
            ifcs = []
        else:
            raise ProvisioningError(
                f"{source}: subscriber {entry['impi']}: profile must be 'content' or 'none'"
            )
        hss.put_subscriber(
            txn,
            str(entry["impi"]),
            [str(i) for i in entry.get("impus", [])],
            password=entry.get("password"),
            ha1=entry.get("ha1"),
            aka=entry.get("aka"),
            ifcs=ifcs,
            barred=[str(b) for b in entry.get("barred", [])],
            mandatory_capabilities=entry.get("mandatory_capabilities"),
            optional_capabilities=entry.get("optional_capabilities"),
        )
    return {"subscribers": len(subs), "psis": len(psis)}


def capabilities_error(value: Any) -> str | None:
    """Why ``value`` is not a list of capabilities (unsigned 32-bit integers), or None."""
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 2**32 for c in value
    ):
        return "must be a list of unsigned 32-bit integers"
    return None


class _CacheMiss(Exception):
    pass


_Key = tuple[str, str]
_Query = tuple[str, frozenset[tuple[str, Any]]]


class _Cache:
    """Documents and query results as the last committed transactions saw them.

    Only this process writes the HSS collections, always through
    :meth:`Hss.transact`, so the cache cannot go stale; it is filled by what
    the transactions read.
    """

    def __init__(self, max_docs: int = 200_000) -> None:
        self.docs: dict[_Key, dict[str, Any] | None] = {}
        self.queries: dict[_Query, list[str]] = {}
        #: the field names the cached queries of each collection test
        self.shapes: dict[str, set[tuple[str, ...]]] = {}
        self.max_docs = max_docs

    def clear(self) -> None:
        self.docs.clear()
        self.queries.clear()
        self.shapes.clear()

    def forget_queries(self, collection: str) -> None:
        for q in [q for q in self.queries if q[0] == collection]:
            del self.queries[q]
        self.shapes.pop(collection, None)


_UNKNOWN: Any = object()


def _matches(doc: dict[str, Any] | None, eq: frozenset[tuple[str, Any]]) -> bool:
    return doc is not None and all(doc.get(f) == v for f, v in eq)


#: The fields each HSS collection can be searched by (the only ones a find tests).
_INDEXES = {c.name: c.indexes for m in MIGRATIONS for c in m.collections}


class _InFlight:
    """The writes of :meth:`Hss.handle` that are not committed yet.

    ``docs``: collection -> keys written; ``values``: how many of those
    documents, before or after their write, hold each (collection, field,
    value) for the fields the collection is searched by (hashable values
    only), so that a query is checked against them without a pass over
    every write in flight.
    """

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, int]] = {}
        self.values: dict[tuple[str, str, Any], int] = {}

    def __bool__(self) -> bool:
        return bool(self.docs)

    def _fields(self, collection: str, doc: dict[str, Any] | None, step: int) -> None:
        if doc is None:
            return
        values = self.values
        for field in _INDEXES.get(collection, ()):
            value = doc.get(field)
            if value is None:  # None is not indexed (see may_change)
                continue
            try:
                k = (collection, field, value)
                n = values.get(k, 0) + step
            except TypeError:  # a list or a dict: not indexed (queries only test scalars)
                continue
            if n:
                values[k] = n
            else:
                del values[k]

    def add(
        self, written: Mapping[_Key, dict[str, Any]], before: Mapping[_Key, dict[str, Any] | None]
    ) -> None:
        for (collection, key), doc in written.items():
            keys = self.docs.setdefault(collection, {})
            keys[key] = keys.get(key, 0) + 1
            self._fields(collection, before[(collection, key)], 1)
            self._fields(collection, doc, 1)

    def remove(
        self, written: Mapping[_Key, dict[str, Any]], before: Mapping[_Key, dict[str, Any] | None]
    ) -> None:
        for (collection, key), doc in written.items():
            keys = self.docs[collection]
            if keys[key] > 1:
                keys[key] -= 1
            else:
                del keys[key]
                if not keys:
                    del self.docs[collection]
            self._fields(collection, before[(collection, key)], -1)
            self._fields(collection, doc, -1)

    def has(self, collection: str, key: str) -> bool:
        keys = self.docs.get(collection)
        return keys is not None and key in keys

    def may_change(self, collection: str, query: frozenset[tuple[str, Any]]) -> bool:
        """True if a document in flight matched ``query`` before its write or
        matches it after (or may have: several fields are each checked alone,
        and None, or a field that is not an index, is taken to match)."""
        if collection not in self.docs:
            return False
        indexes = _INDEXES.get(collection, ())
        try:
            return all(
                v is None or f not in indexes or (collection, f, v) in self.values for f, v in query
            )
        except TypeError:
            return True


class _CacheView:
    """A transaction served from the cache, for :meth:`Hss.handle`.

    Reads come from the cache (:class:`_CacheMiss` where it has nothing);
    writes are kept in ``written`` (with the documents they replace in
    ``before``) and seen by the reads that follow. ``stale`` tells that a
    read met a document, or a query result, that a write in flight
    (``in_flight``, not yet committed) changes.
    """

    def __init__(self, cache: _Cache, in_flight: _InFlight) -> None:
        self._cache = cache
        self._in_flight = in_flight
        self.written: dict[_Key, dict[str, Any]] = {}
        self.before: dict[_Key, dict[str, Any] | None] = {}
        self.stale = False

    def get(self, collection: str, key: str) -> dict[str, Any] | None:
        k = (collection, key)
        mine = self.written.get(k)
        if mine is not None:
            return dict(mine)
        try:
            doc = self._cache.docs[k]
        except KeyError:
            raise _CacheMiss from None
        if self._in_flight and self._in_flight.has(collection, key):
            self.stale = True
        return None if doc is None else dict(doc)

    def find(
        self, collection: str, limit: int | None = None, **eq: Any
    ) -> list[tuple[str, dict[str, Any]]]:
        query = frozenset(eq.items())
        keys = self._cache.queries.get((collection, query))
        if keys is None or limit is not None:
            raise _CacheMiss
        if self._in_flight and self._in_flight.may_change(collection, query):
            self.stale = True
        written = self.written
        if written:  # what this transaction wrote moves documents in or out of the result
            members = set(keys)
            for (c, k), mine in written.items():
                if c == collection:
                    if _matches(mine, query):
                        members.add(k)
                    else:
                        members.discard(k)
            keys = sorted(members)
        docs = self._cache.docs
        out = []
        for k in keys:
            found = written.get((collection, k))
            if found is None:
                found = docs.get((collection, k))
            if found is None:
                raise _CacheMiss
            out.append((k, dict(found)))
        return out

    def put(self, collection: str, key: str, doc: dict[str, Any]) -> None:
        k = (collection, key)
        if k not in self.written:
            try:
                self.before[k] = self._cache.docs[k]
            except KeyError:  # what it replaces is not known
                raise _CacheMiss from None
            if self._in_flight and self._in_flight.has(collection, key):
                self.stale = True
        self.written[k] = dict(doc)

    def delete(self, collection: str, key: str) -> bool:
        raise _CacheMiss

    def insert(self, collection: str, key: str, doc: dict[str, Any]) -> None:
        raise _CacheMiss

    def scan(self, *args: Any, **kw: Any) -> Any:
        raise _CacheMiss


class _Recorder:
    """Wraps a store transaction and records what it read and wrote, for the cache."""

    def __init__(self, txn: Any) -> None:
        self._txn = txn
        self.read: dict[_Key, dict[str, Any] | None] = {}
        self.written: dict[_Key, dict[str, Any] | None] = {}
        self.queries: dict[_Query, list[tuple[str, dict[str, Any]]]] = {}

    def get(self, collection: str, key: str) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = self._txn.get(collection, key)
        if (collection, key) not in self.written:
            self.read.setdefault((collection, key), None if doc is None else dict(doc))
        return doc

    def find(
        self, collection: str, limit: int | None = None, **eq: Any
    ) -> list[tuple[str, dict[str, Any]]]:
        found: list[tuple[str, dict[str, Any]]] = self._txn.find(collection, limit, **eq)
        copies = [(k, dict(d)) for k, d in found]
        if limit is None:
            self.queries[(collection, frozenset(eq.items()))] = copies
        for k, d in copies:  # what is not written yet is what the store had: a read
            if (collection, k) not in self.written:
                self.read.setdefault((collection, k), d)
        return found

    def found(
        self, collection: str, eq: dict[str, Any], found: list[tuple[str, dict[str, Any]]]
    ) -> None:
        """Record ``found`` as what ``find(collection, **eq)`` gives (read otherwise)."""
        self.queries[(collection, frozenset(eq.items()))] = [(k, dict(d)) for k, d in found]

    def put(self, collection: str, key: str, doc: dict[str, Any]) -> None:
        self._txn.put(collection, key, doc)
        self.written[(collection, key)] = dict(doc)

    def insert(self, collection: str, key: str, doc: dict[str, Any]) -> None:
        self._txn.insert(collection, key, doc)
        self.written[(collection, key)] = dict(doc)

    def delete(self, collection: str, key: str) -> bool:
        gone: bool = self._txn.delete(collection, key)
        self.written[(collection, key)] = None
        return gone

    def scan(
        self, collection: str, prefix: str = "", after: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        for k, d in self._txn.scan(collection, prefix, after, limit):
            if (collection, k) not in self.written:  # what the store had: a read
                self.read.setdefault((collection, k), dict(d))
            yield k, d

    def count(self, *args: Any, **kw: Any) -> Any:
        return self._txn.count(*args, **kw)

    def apply(self, cache: _Cache) -> None:
        """After the commit: what was read and not written, then what was written."""
        _apply(cache, self.read, self.written, self.queries)


def _apply(
    cache: _Cache,
    read: Mapping[_Key, dict[str, Any] | None],
    written: Mapping[_Key, dict[str, Any] | None],
    queries: Mapping[_Query, list[tuple[str, dict[str, Any]]]],
) -> None:
    """Bring the cache in step with a committed transaction: what it read
    (documents and query results) and what it wrote.

    A write changes the result of a query only if the document matched
    it before and not after, or the other way round (results are keys;
    the documents themselves are cached apart). Such queries are
    forgotten, and the ones this transaction ran are kept unless one of
    its writes changed them. Where the document before the write is not
    known, every query of its collection is forgotten.
    """
    if len(cache.docs) > cache.max_docs:
        cache.clear()
    # (collection, document before, document after) of every write
    changes: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = []
    blind: set[str] = set()
    for key, doc in written.items():
        before = read.get(key, _UNKNOWN)
        if before is _UNKNOWN:
            before = cache.docs.get(key, _UNKNOWN)
        if before is _UNKNOWN:
            blind.add(key[0])
        else:
            changes.append((key[0], before, doc))
    for collection in blind:
        cache.forget_queries(collection)
    for collection, before, after in changes:
        if collection in blind:
            continue
        for shape in cache.shapes.get(collection, ()):
            if (
                before is not None
                and after is not None
                and all(before.get(f) == after.get(f) for f in shape)
            ):
                continue  # the fields the queries test kept their values: no query changed
            try:
                old = None if before is None else frozenset((f, before.get(f)) for f in shape)
                new = None if after is None else frozenset((f, after.get(f)) for f in shape)
            except TypeError:  # an unhashable value: no telling which queries it is in
                cache.forget_queries(collection)
                blind.add(collection)
                break
            if old != new:
                for eq in (old, new):
                    if eq is not None:
                        cache.queries.pop((collection, eq), None)
    for (collection, eq), found in queries.items():
        if collection in blind or any(
            c == collection and _matches(before, eq) != _matches(after, eq)
            for c, before, after in changes
        ):
            continue
        cache.queries[(collection, eq)] = [k for k, _ in found]
        cache.shapes.setdefault(collection, set()).add(tuple(sorted(f for f, _ in eq)))
        for k, d in found:
            cache.docs.setdefault((collection, k), d)
    for key, doc in read.items():
        cache.docs[key] = doc
    for key, doc in written.items():
        cache.docs[key] = doc


class MemoryTxn:
    """A dict-backed stand-in for a store transaction: dry runs (config checks) and tests."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, dict[str, Any]]] = {}

    def get(self, collection: str, key: str) -> dict[str, Any] | None:
        doc = self.data.get(collection, {}).get(key)
        return dict(doc) if doc is not None else None

    def put(self, collection: str, key: str, doc: dict[str, Any]) -> None:
        self.data.setdefault(collection, {})[key] = dict(doc)

    def delete(self, collection: str, key: str) -> bool:
        return self.data.get(collection, {}).pop(key, None) is not None

    def find(
        self, collection: str, limit: int | None = None, **eq: Any
    ) -> list[tuple[str, dict[str, Any]]]:
        found = [
            (k, dict(d))
            for k, d in sorted(self.data.get(collection, {}).items())
            if all(d.get(f) == v for f, v in eq.items())
        ]
        return found[:limit] if limit is not None else found

    def scan(
        self, collection: str, prefix: str = "", after: str | None = None, limit: int | None = None
    ) -> Any:
        items = [
            (k, dict(d))
            for k, d in sorted(self.data.get(collection, {}).items())
            if k.startswith(prefix) and (after is None or k > after)
        ]
        return iter(items[:limit] if limit is not None else items)


def _has_unregistered_services(sub: Mapping[str, Any]) -> bool:
    """True if an iFC triggers on a terminating-unregistered session case."""
    for doc in sub.get("ifcs", []):
        trigger = doc.get("trigger") or {}
        for spt in trigger.get("spts", []):
            if spt.get("session_case") == SessionCase.TERMINATING_UNREGISTERED:
                return True
    return False


def ifc_documents(ifcs: Iterable[InitialFilterCriteria]) -> list[dict[str, Any]]:
    return [ifc_to_dict(i) for i in ifcs]


__all__ = [
    "MIGRATIONS",
    "Hss",
    "HssConfig",
    "ProvisioningError",
    "capabilities_error",
    "content_ifcs",
    "digest_ha1",
    "ifc_documents",
    "MemoryTxn",
    "load_provisioning",
]
