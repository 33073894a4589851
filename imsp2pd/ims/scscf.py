"""The S-CSCF (TS 24.229 §5.4): registrar with MAR/SAR, digest MD5 and
AKAv1-MD5 authentication, iFC routing to application servers over ISC,
third-party REGISTER, and terminating routing to registered contacts.

Pure parts: :class:`Registrar` (bindings, expiry, driven by ``now``),
:func:`register_response_headers`, :func:`odi_route`/:func:`parse_odi`.
:class:`Scscf` is the transaction user on a :class:`~imsp2pd.sip.proxy.SipCore`;
it talks Cx through an injected ``cx_request(message) -> Deferred[answer]``
(a :class:`~imsp2pd.diameter.node.DiameterNode`'s ``request``) and keeps the
registrations durable in the store (``scscf_registrations``) before it
answers 200.

DefaultHandling applies when an AS does not answer at all (timeout or
transport error); a final response from an AS, error or not, is relayed to
the originator, as the AS meant it.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from imsp2pd.diameter import cx
from imsp2pd.diameter.codes import CxResult, ServerAssignmentType
from imsp2pd.diameter.message import Message as DiameterMessage
from imsp2pd.ims.ifc import (
    CompiledIfcs,
    FailureAction,
    RegistrationType,
    compiled_ifcs,
    on_as_failure,
    request_view,
)
from imsp2pd.ims.profile import (
    IMSSubscription,
    InitialFilterCriteria,
    ProfileError,
    ServiceProfile,
    SessionCase,
    from_xml,
)
from imsp2pd.sip.dialog import Dialog, SubscriptionState, event_package, notify_headers
from imsp2pd.sip.digest import (
    Credentials,
    NonceBook,
    NonceStatus,
    aka_nonce_parts,
    challenge,
    compute_ha1,
    verify_credentials,
)
from imsp2pd.sip.errors import SipError, SipParseError
from imsp2pd.sip.headers import parse_auth, parse_name_addr
from imsp2pd.sip.message import Request, make_response, new_call_id, new_tag, random_hex
from imsp2pd.sip.proxy import (
    BranchFailed,
    BranchResponse,
    IncomingAck,
    IncomingRequest,
    Output,
    SipCore,
    Source,
    Target,
    UacFailed,
    UacResponse,
)
from imsp2pd.sip.uri import URI, SipURI, parse_uri
from imsp2pd.store import Collection, Migration

log = Logger()

REGISTRATIONS = "scscf_registrations"
#: challenges awaiting an answer at most (the oldest are dropped beyond it)
MAX_PENDING_AUTH = 100_000
#: AS hops (:meth:`Scscf._as_hop`) kept at most
_AS_HOPS_MAX = 1024
_NO_HOP: Any = object()
MIGRATIONS = (Migration("scscf-0001-registrations", (Collection(REGISTRATIONS, ("impi",)),)),)


def aor_of(text: str) -> str:
    """The address of record of a URI text (``sip:user@host``)."""
    try:
        return parse_uri(text).aor()
    except SipParseError:
        return text.lower()


# -- registrar state (pure) ------------------------------------------------

#: parsed User-Data by its bytes (profiles are shared by many users)
_PROFILE_CACHE: dict[bytes, IMSSubscription] = {}
_NO_IFCS = CompiledIfcs(())
#: the RegistrationType of a REGISTER's iFC evaluation by its SAR type (else de-registration)
_REGISTRATION_TYPES = {
    ServerAssignmentType.REGISTRATION: RegistrationType.INITIAL,
    ServerAssignmentType.RE_REGISTRATION: RegistrationType.RE_REGISTRATION,
}


@dataclass(frozen=True)
class Binding:
    contact: str  # the Contact URI
    expires_at: float
    path: tuple[str, ...] = ()
    call_id: str = ""
    cseq: int = 0


@dataclass
class Registration:
    """One registered public identity (and its implicit set)."""

    impu: str
    impi: str
    associated: tuple[str, ...]
    bindings: dict[str, Binding] = field(default_factory=dict)
    user_data: bytes = b""
    # the profile chosen for the user_data and impu objects it was chosen for
    # (assigning either field, even an equal value, makes it choose again)
    _chosen_for: tuple[bytes, str] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _chosen: ServiceProfile | None = field(default=None, init=False, repr=False, compare=False)
    _compiled: CompiledIfcs = field(default=_NO_IFCS, init=False, repr=False, compare=False)

    def profile(self) -> ServiceProfile | None:
        chosen_for = self._chosen_for
        if (
            chosen_for is not None
            and chosen_for[0] is self.user_data
            and chosen_for[1] is self.impu
        ):
            return self._chosen
        sp = self._choose_profile()
        self._chosen_for = (self.user_data, self.impu)
        self._chosen = sp
        self._compiled = compiled_ifcs(sp.ifcs) if sp is not None else _NO_IFCS
        return sp

    def compiled_ifcs(self) -> CompiledIfcs:
        """The iFCs of :meth:`profile`, compiled (:func:`imsp2pd.ims.ifc.compiled_ifcs`)."""
        chosen_for = self._chosen_for
        if (
            chosen_for is None
            or chosen_for[0] is not self.user_data
            or chosen_for[1] is not self.impu
        ):
            self.profile()
        return self._compiled

    def _choose_profile(self) -> ServiceProfile | None:
        if not self.user_data:
            return None
        cached = _PROFILE_CACHE.get(self.user_data)
        if cached is not None:
            sub = cached
        else:
            try:
                sub = from_xml(self.user_data)
            except ProfileError:
                return None
            if len(_PROFILE_CACHE) > 10_000:
                _PROFILE_CACHE.clear()
            _PROFILE_CACHE[self.user_data] = sub
        for sp in sub.profiles:
            if any(aor_of(p.identity) == self.impu for p in sp.public_identities):
                return sp
        return sub.profiles[0] if sub.profiles else None

    def ifcs(self) -> tuple[InitialFilterCriteria, ...]:
        sp = self.profile()
        return sp.ifcs if sp else ()

    def to_doc(self) -> dict[str, Any]:
        return {
            "impu": self.impu,
            "impi": self.impi,
            "associated": list(self.associated),
            "user_data": self.user_data.decode("utf-8", "replace"),
            "bindings": [
                {
                    "contact": b.contact,
                    "expires_at": b.expires_at,
                    "path": list(b.path),
                    "call_id": b.call_id,
                    "cseq": b.cseq,
                }
                for b in self.bindings.values()
            ],
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Registration:
        reg = cls(doc["impu"], doc["impi"], tuple(doc.get("associated", ())))
        reg.user_data = str(doc.get("user_data", "")).encode()
        for b in doc.get("bindings", ()):
            reg.bindings[b["contact"]] = Binding(
                b["contact"],
                float(b["expires_at"]),
                tuple(b.get("path", ())),
                b.get("call_id", ""),
                int(b.get("cseq", 0)),
            )
        return reg


class Registrar:
    """Registrations by IMPU, with an index from every associated IMPU."""

    def __init__(self) -> None:
        self.by_impu: dict[str, Registration] = {}
        self._index: dict[str, str] = {}
        # the index keys each IMPU was given (some may point elsewhere since):
        # a removal looks at those, not at the whole index
        self._keys: dict[str, set[str]] = {}

    def put(self, reg: Registration) -> None:
        self.by_impu[reg.impu] = reg
        keys = self._keys.setdefault(reg.impu, set())
        for impu in (reg.impu, *reg.associated):
            key = aor_of(impu)
            self._index[key] = reg.impu
            keys.add(key)

    def remove(self, impu: str) -> Registration | None:
        reg = self.by_impu.pop(impu, None)
        if reg is not None:
            for key in self._keys.pop(impu, ()):
                if self._index.get(key) == impu:
                    del self._index[key]
        return reg

    def find(self, impu: str) -> Registration | None:
        key = self._index.get(aor_of(impu))
        return self.by_impu.get(key) if key else None

    def contacts(self, impu: str, now: float) -> list[Binding]:
        reg = self.find(impu)
        if reg is None:
            return []
        live = [b for b in reg.bindings.values() if b.expires_at > now]
        return sorted(live, key=lambda b: -b.expires_at)

    def expired(self, now: float) -> list[Registration]:
        """Drop expired bindings; return registrations left with none."""
        gone = []
        for reg in list(self.by_impu.values()):
            for contact in [c for c, b in reg.bindings.items() if b.expires_at <= now]:
                del reg.bindings[contact]
            if not reg.bindings:
                gone.append(reg)
        return gone

    def next_expiry(self) -> float | None:
        times = [b.expires_at for r in self.by_impu.values() for b in r.bindings.values()]
        return min(times) if times else None


def requested_expires(request: Request, default: int) -> dict[str, int]:
    """Contact URI → requested expiry (Contact ``expires`` param, else the
    Expires header, else ``default``); ``*`` maps to 0 for all."""
    header = request.expires
    out: dict[str, int] = {}
    for na in request.contacts:
        value = na.param("expires")
        if value is not None and value.isdigit():
            out[str(na.uri)] = int(value)
        else:
            out[str(na.uri)] = header if header is not None else default
    return out


def odi_route(host: str, port: int, token: str) -> str:
    """The Route the S-CSCF puts below the AS so the request comes back
    (TS 24.229 §5.4.3.2: the original dialog identifier)."""
    return f"<sip:odi-{token}@{host}:{port};lr>"


def parse_odi(uri: Any) -> str | None:
    if isinstance(uri, SipURI) and uri.user and uri.user.startswith("odi-"):
        return uri.user[4:]
    return None


@dataclass(slots=True)
class _Walk:
    """Where an iFC walk stands while the request is at an AS."""

    served: str
    case: SessionCase
    last_priority: int
    ifc: InitialFilterCriteria
    ctx: int
    request: Request  # the request as it left for the AS (with our ODI route)
    created: float


@dataclass
class _PendingAuth:
    impi: str
    impu: str
    ha1: str
    algorithm: str
    created: float


@dataclass
class RegSubscription:
    """A reg event subscription (RFC 3680) to one registered IMPU."""

    impu: str
    dialog: Dialog
    expires_at: float
    version: int = 0


def reginfo_xml(
    impu: str,
    bindings: list[Binding],
    now: float,
    *,
    version: int,
    active: bool,
    event: str = "registered",
) -> bytes:
    """The application/reginfo+xml document (RFC 3680 §5.3), full state."""
    from xml.sax.saxutils import escape, quoteattr

    state = "active" if active else "terminated"
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<reginfo xmlns="urn:ietf:params:xml:ns:reginfo" version="{version}" state="full">',
        f'<registration aor={quoteattr(impu)} id="r0" state="{state}">',
    ]
    for i, b in enumerate(bindings):
        left = max(0, int(b.expires_at - now))
        cstate = "active" if active else "terminated"
        parts.append(
            f'<contact id="c{i}" state="{cstate}" event="{event}" expires="{left if active else 0}">'
            f"<uri>{escape(b.contact)}</uri></contact>"
        )
    parts += ["</registration>", "</reginfo>"]
    return "".join(parts).encode()


@dataclass(frozen=True)
class ScscfConfig:
    host: str = "127.0.0.1"
    port: int = 6060
    realm: str = "ims.example.org"
    origin: cx.Origin = cx.Origin("scscf.ims.example.org", "ims.example.org")
    server_name: str = "sip:127.0.0.1:6060"
    default_expires: int = 600
    max_expires: int = 3600
    min_expires: int = 60
    nonce_lifetime: float = 300.0
    #: where requests for users not registered here go (the I-CSCF)
    icscf: Target | None = Target("UDP", "127.0.0.1", 5060)
    as_transport: str = "TCP"


class Scscf:
    """The S-CSCF transaction user."""

    def __init__(
        self,
        core: SipCore,
        config: ScscfConfig,
        cx_request: Callable[[DiameterMessage], Deferred[DiameterMessage]],
        *,
        store: Any = None,
        clock: Callable[[], float],
        secret: bytes | None = None,
    ) -> None:
        self.core = core
        self.config = config
        self.cx_request = cx_request
        self.store = store
        self.clock = clock
        self.node: Any = None
        self.registrar = Registrar()
        self.nonces = NonceBook(secret or os.urandom(32), lifetime=config.nonce_lifetime)
        self._pending_auth: dict[str, _PendingAuth] = {}
        self._walks: dict[str, _Walk] = {}
        self._walk_by_ctx: dict[int, str] = {}
        self._as_hops: dict[str, Any] = {}
        self.sessions = cx.SessionIds(config.origin.host, clock())
        self.third_party: list[UacResponse | UacFailed] = []
        self.reg_subscriptions: dict[str, list[RegSubscription]] = {}

    # -- durable state ------------------------------------------------------
    def load(self) -> int:
        """Read the registrations back from the store (at start)."""
        if self.store is None:
            return 0
        docs = self.store.transact_now(lambda txn: txn.find(REGISTRATIONS))
        for _, doc in docs:
            self.registrar.put(Registration.from_doc(doc))
        return len(docs)

    def _save(self, reg: Registration, *, delete: bool = False) -> Deferred[None]:
        if self.store is None:
            return succeed(None)
        doc = reg.to_doc()

        def write(txn: Any) -> None:
            if delete:
                txn.delete(REGISTRATIONS, reg.impu)
            else:
                txn.put(REGISTRATIONS, reg.impu, doc)

        return self.store.transact(write)

    # -- TU -----------------------------------------------------------------
    def on_event(self, event: Output, now: float) -> list[Output]:
        if isinstance(event, IncomingRequest):
            return self._request(event, now)
        if isinstance(event, IncomingAck):
            return self.core.forward_ack(event.request, event.source, now)
        if isinstance(event, BranchResponse):
            return self._as_response(event, now)
        if isinstance(event, BranchFailed):
            return self._as_failed(event, now)
        if isinstance(event, UacResponse | UacFailed):
            self.third_party.append(event)
        return []

    def _submit(self, outputs: list[Output]) -> None:
        if self.node is not None:
            self.node.submit(outputs)

    def _request(self, event: IncomingRequest, now: float) -> list[Output]:
        req = event.request
        if req.method == "REGISTER":
            self._register(event.ctx, req, now)
            return []
        if req.method == "SUBSCRIBE" and event_package(req) == "reg":
            target = req.uri.aor() if isinstance(req.uri, SipURI) else ""
            if self.registrar.find(target) is not None:
                return self._reg_subscribe(event.ctx, req, now)
        routes = req.routes
        first = routes[0].uri if routes else None
        token = parse_odi(first) if first is not None else None
        if token is not None:
            return self._continue_walk(event.ctx, req, token, now)
        if (
            first is not None
            and isinstance(first, SipURI)
            and first.user == "orig"
            and self.core.is_local(first)
        ):
            served = self._asserted(req)
            reg = self.registrar.find(served) if served else None
            if reg is None:
                return self.core.reply(event.ctx, 403, now, "Served User Not Registered")
            return self._walk(
                event.ctx, req, served or "", reg, SessionCase.ORIGINATING, None, now, True
            )
        return self._terminating(event.ctx, req, now)

    @staticmethod
    def _asserted(req: Request) -> str | None:
        for value in req.get_all("P-Asserted-Identity"):
            try:
                return parse_name_addr(value).uri.aor()
            except SipParseError:
                continue
        return None

    # -- registration -------------------------------------------------------
    def _register(self, ctx: int, req: Request, now: float) -> None:
        try:
            impu = req.to.uri.aor()
            expires = requested_expires(req, self.config.default_expires)
        except SipParseError as exc:
            self._submit(self.core.reply(ctx, 400, now, exc.reason))
            return
        value = req.get("Authorization")
        creds: Credentials | None = None
        auts: str | None = None
        if value is not None:
            try:
                auth = parse_auth(value)
                creds = Credentials.from_header(auth)
            except (SipParseError, ValueError) as exc:
                self._submit(self.core.reply(ctx, 400, now, f"Bad Authorization: {exc}"))
                return
            auts = auth.get("auts")
        impi = creds.username if creds else _impi_from(impu)
        if creds is not None and auts and creds.nonce in self._pending_auth:
            # RFC 3310 §3.4: the ISIM found the SQN out of range; resynchronise
            pending = self._pending_auth.pop(creds.nonce)
            try:
                rand, _ = aka_nonce_parts(creds.nonce)
                token = base64.b64decode(auts.encode(), validate=True)
            except (ValueError, UnicodeEncodeError):
                self._submit(self.core.reply(ctx, 400, now, "Bad auts"))
                return
            if pending.algorithm != "AKAv1-MD5" or len(token) != 14:
                self._submit(self.core.reply(ctx, 403, now, "Bad Resynchronisation"))
                return
            self._challenge(ctx, req, impi, impu, cx.SCHEME_AKA, stale=False, resync=rand + token)
            return
        if creds is None or not creds.response or creds.nonce not in self._pending_auth:
            scheme = cx.SCHEME_UNKNOWN
            if creds is not None and creds.algorithm.upper() == "AKAV1-MD5":
                scheme = cx.SCHEME_AKA
            self._challenge(ctx, req, impi, impu, scheme, stale=False)
            return
        pending = self._pending_auth[creds.nonce]
        status = self.nonces.check(creds.nonce, creds.nc, now)
        if status is NonceStatus.STALE:
            del self._pending_auth[creds.nonce]
            self._challenge(ctx, req, impi, impu, _scheme_of(pending.algorithm), stale=True)
            return
        if (
            status is not NonceStatus.OK
            or pending.impi != creds.username
            or pending.impu != impu
            or not verify_credentials(creds, method="REGISTER", ha1=pending.ha1)
        ):
            self._pending_auth.pop(creds.nonce, None)
            self.nonces.forget(creds.nonce)
            self._submit(self.core.reply(ctx, 403, now, "Authentication Failed"))
            return
        for c, secs in list(expires.items()):
            if 0 < secs < self.config.min_expires:
                self._submit(
                    self.core.reply(
                        ctx, 423, now, extra=(("Min-Expires", str(self.config.min_expires)),)
                    )
                )
                return
            expires[c] = min(secs, self.config.max_expires)
        if req.get("Contact") == "*":
            expires = {c: 0 for c in self._current_contacts(impu)}
        self._assign(ctx, req, impi, impu, expires, now)

    def _current_contacts(self, impu: str) -> list[str]:
        reg = self.registrar.find(impu)
        return list(reg.bindings) if reg else []

    def _challenge(
        self,
        ctx: int,
        req: Request,
        impi: str,
        impu: str,
        scheme: str,
        *,
        stale: bool,
        resync: bytes | None = None,
    ) -> None:
        msg = cx.mar(
            self.config.origin,
            self.sessions.next(),
            self.config.realm,
            impi,
            impu,
            self.config.server_name,
            scheme=scheme,
            authorization=resync,
        )
        d = self.cx_request(msg)

        def answered(ans: DiameterMessage) -> None:
            now = self.clock()
            result = cx.outcome(ans)
            items = cx.auth_items(ans)
            if not result.success or not items:
                status = (
                    403
                    if result.code
                    in (
                        CxResult.ERROR_USER_UNKNOWN,
                        CxResult.ERROR_IDENTITIES_DONT_MATCH,
                        CxResult.ERROR_AUTH_SCHEME_NOT_SUPPORTED,
                        5003,  # DIAMETER_AUTHORIZATION_REJECTED as Result-Code
                    )
                    else 500
                )
                self._submit(self.core.reply(ctx, status, now, f"Cx MAR failed ({result.code})"))
                return
            item = items[0]
            realm = item.digest_realm or self.config.realm
            if item.scheme == cx.SCHEME_AKA and item.authenticate and item.authorization:
                nonce = self.nonces.issue(now, extra=item.authenticate[:32])
                ha1 = compute_ha1(impi, realm, item.authorization, "AKAv1-MD5")
                algorithm = "AKAv1-MD5"
            elif item.digest_ha1:
                nonce = self.nonces.issue(now)
                ha1 = item.digest_ha1
                algorithm = "MD5"
            else:
                self._submit(self.core.reply(ctx, 500, now, "No usable authentication vector"))
                return
            self._pending_auth[nonce] = _PendingAuth(impi, impu, ha1, algorithm, now)
            self._trim_pending(now)
            chal = challenge(realm=realm, nonce=nonce, algorithm=algorithm, stale=stale)
            resp = make_response(
                req, 401, to_tag=new_tag(), extra=(("WWW-Authenticate", str(chal)),)
            )
            self._submit(self.core.respond(ctx, resp, now))

        d.addCallbacks(answered, lambda f: self._cx_failed(ctx, f))

    def _trim_pending(self, now: float) -> None:
        """Forget expired challenges: the dict is in creation order, so only
        its head is looked at (a full scan per REGISTER was quadratic)."""
        limit = now - self.config.nonce_lifetime
        pending = self._pending_auth
        while pending:
            nonce = next(iter(pending))
            if pending[nonce].created >= limit and len(pending) <= MAX_PENDING_AUTH:
                break
            del pending[nonce]

    def _cx_failed(self, ctx: int, failure: Any) -> None:
        log.warn("Cx request failed: {why}", why=failure.getErrorMessage())
        self._submit(self.core.reply(ctx, 480, self.clock(), "HSS Unavailable"))

    def _assign(
        self, ctx: int, req: Request, impi: str, impu: str, expires: dict[str, int], now: float
    ) -> None:
        existing = self.registrar.find(impu)
        remaining = {c for c in (existing.bindings if existing else {})}
        for c, secs in expires.items():
            if secs == 0:
                remaining.discard(c)
            else:
                remaining.add(c)
        if not remaining:
            kind = ServerAssignmentType.USER_DEREGISTRATION
        elif existing is not None:
            kind = ServerAssignmentType.RE_REGISTRATION
        else:
            kind = ServerAssignmentType.REGISTRATION
        msg = cx.sar(
            self.config.origin,
            self.sessions.next(),
            self.config.realm,
            [impu],
            self.config.server_name,
            kind,
            impi=impi,
            data_available=existing is not None and bool(existing.user_data),
        )

        def answered(ans: DiameterMessage) -> None:
            now = self.clock()
            result = cx.outcome(ans)
            if not result.success:
                self._submit(self.core.reply(ctx, 403, now, f"Cx SAR failed ({result.code})"))
                return
            reg = existing or Registration(impu, impi, ())
            data = cx.user_data(ans)
            if data:
                reg.user_data = data
            sp = reg.profile()
            if sp is not None:
                reg.associated = tuple(p.identity for p in sp.public_identities if not p.barred)
            path = tuple(req.get_all("Path"))
            gone_bindings = [b for c, b in reg.bindings.items() if expires.get(c) == 0]
            for c, secs in expires.items():
                if secs == 0:
                    reg.bindings.pop(c, None)
                else:
                    reg.bindings[c] = Binding(c, now + secs, path, req.call_id, req.cseq.seq)
            if reg.bindings:
                self.registrar.put(reg)
                saved = self._save(reg)
            else:
                self.registrar.remove(reg.impu)
                saved = self._save(reg, delete=True)
            rtype = _REGISTRATION_TYPES.get(kind, RegistrationType.DE_REGISTRATION)

            def stored(_: Any) -> None:
                now2 = self.clock()
                resp = make_response(
                    req,
                    200,
                    to_tag=new_tag(),
                    extra=register_response_headers(reg, req, self.config, now2),
                )
                self._submit(self.core.respond(ctx, resp, now2))
                self._third_party_register(reg, req, rtype, expires, now2)
                if reg.bindings:
                    self._notify_reg(reg.impu, now2)
                else:
                    self._notify_reg(
                        reg.impu, now2, ended="unregistered", bindings=list(gone_bindings)
                    )

            # the 200 once the write is committed; a failed write (or 200) ends
            # as a failed Cx request does (no Deferred chained to the SAR's)
            saved.addCallback(stored)
            saved.addErrback(lambda f: self._cx_failed(ctx, f))

        d = self.cx_request(msg)
        d.addCallback(answered)
        d.addErrback(lambda f: self._cx_failed(ctx, f))

    def _third_party_register(
        self,
        reg: Registration,
        req: Request,
        rtype: RegistrationType,
        expires: dict[str, int],
        now: float,
    ) -> None:
        """TS 24.229 §5.4.1.7: a REGISTER to each AS whose iFC matches."""
        facts = request_view(req, SessionCase.ORIGINATING, True, rtype)
        secs = max(expires.values()) if expires else 0
        me = f"sip:{self.config.host}:{self.config.port}"
        for ifc in reg.compiled_ifcs().all_matches(facts):
            hop = self._as_hop(ifc.application_server.server_name)
            if hop is None:
                continue
            as_uri, _, target = hop
            third = Request(
                (
                    ("From", f"<{me}>;tag={new_tag()}"),
                    ("To", f"<{reg.impu}>"),
                    ("Call-ID", new_call_id(self.config.host)),
                    ("CSeq", "1 REGISTER"),
                    ("Contact", f"<{me}>"),
                    ("Expires", str(secs)),
                    (
                        "P-Associated-URI",
                        ", ".join(f"<{u}>" for u in reg.associated) or f"<{reg.impu}>",
                    ),
                ),
                b"",
                method="REGISTER",
                uri=as_uri,
            )
            if target is None:
                target = _as_target(as_uri, self.config.as_transport)  # raises, as it did
            _, outs = self.core.send_request(third, now, target=target)
            self._submit(outs)

    # -- originating: the iFC walk ------------------------------------------
    def _walk(
        self,
        ctx: int,
        req: Request,
        served: str,
        reg: Registration | None,
        case: SessionCase,
        after: int | None,
        now: float,
        local_first: bool = False,
    ) -> list[Output]:
        """``reg``: ``self.registrar.find(served)``, which the caller has;
        ``local_first``: the caller found the first Route to be this node's."""
        ifcs = reg.compiled_ifcs() if reg is not None else _NO_IFCS
        facts = request_view(req, case, reg is not None)
        while True:
            ifc = ifcs.next_match(facts, after)
            if ifc is None:
                break
            hop = self._as_hop(ifc.application_server.server_name)
            if hop is None:
                after = ifc.priority
                continue
            as_uri, as_route, target = hop
            token = random_hex(8)
            routes = req.get_all("Route")
            # our own first Route (orig / odi) is consumed here
            if routes and (local_first or self.core.is_local(parse_name_addr(routes[0]).uri)):
                del routes[0]
            out_req = req.remove_header("Route").append_header(
                "Route", as_route, odi_route(self.config.host, self.config.port, token), *routes
            )
            self._walks[token] = _Walk(served, case, ifc.priority, ifc, ctx, out_req, now)
            self._walk_by_ctx[ctx] = token
            if target is None:
                target = _as_target(as_uri, self.config.as_transport)  # raises, as it did
            return self.core.forward(ctx, out_req, now, intercept=True, target=target)
        if case is SessionCase.ORIGINATING:
            return self._terminating(ctx, req, now)
        return self._to_contacts(ctx, req, now)

    def _as_hop(self, server_name: str) -> tuple[URI, str, Target | None] | None:
        """The AS's URI, its Route and where to send (None: a ServerName that is
        not a URI; a target of None: not a SIP URI), worked out once per name."""
        hop = self._as_hops.get(server_name, _NO_HOP)
        if hop is _NO_HOP:
            try:
                as_uri = parse_uri(server_name)
            except SipParseError:
                hop = None
            else:
                target = (
                    _as_target(as_uri, self.config.as_transport)
                    if isinstance(as_uri, SipURI)
                    else None
                )
                hop = (as_uri, f"<{as_uri};lr>", target)
            if len(self._as_hops) >= _AS_HOPS_MAX:
                self._as_hops.clear()
            self._as_hops[server_name] = hop
        return hop

    def _continue_walk(self, ctx: int, req: Request, token: str, now: float) -> list[Output]:
        walk = self._walks.pop(token, None)
        if walk is None:
            return self.core.reply(ctx, 404, now, "Unknown Service Continuation")
        self._walk_by_ctx.pop(walk.ctx, None)
        reg = self.registrar.find(walk.served)
        return self._walk(ctx, req, walk.served, reg, walk.case, walk.last_priority, now)

    def _as_response(self, event: BranchResponse, now: float) -> list[Output]:
        token = self._walk_by_ctx.pop(event.ctx, None)
        if token is not None and event.response.status >= 200:
            self._walks.pop(token, None)
        return self.core.relay_response(event.ctx, event.response, now)

    def _as_failed(self, event: BranchFailed, now: float) -> list[Output]:
        token = self._walk_by_ctx.pop(event.ctx, None)
        walk = self._walks.pop(token, None) if token else None
        if walk is None:
            return self.core.reply(event.ctx, 500, now, "Next Hop Failed")
        if on_as_failure(walk.ifc) is FailureAction.TERMINATE:
            status = 408 if event.reason == "timeout" else 500
            return self.core.reply(event.ctx, status, now, "Application Server Unreachable")
        # SESSION_CONTINUED: go on as if the AS had let it through
        original = self.core.request_of(event.ctx)
        if original is None:
            return []
        reg = self.registrar.find(walk.served)
        return self._walk(event.ctx, original, walk.served, reg, walk.case, walk.last_priority, now)

    # -- terminating ----------------------------------------------------------
    def _terminating(self, ctx: int, req: Request, now: float) -> list[Output]:
        target = req.uri.aor() if isinstance(req.uri, SipURI) else str(req.uri)
        reg = self.registrar.find(target)
        if reg is None:
            if self.config.icscf is None:
                return self.core.reply(ctx, 404, now)
            stripped = _without_local_routes(self.core, req)
            return self.core.forward(ctx, stripped, now, target=self.config.icscf)
        served = reg.impu  # which the index may give to another registration
        return self._walk(
            ctx,
            req,
            served,
            self.registrar.find(served),
            SessionCase.TERMINATING_REGISTERED,
            None,
            now,
        )

    def _to_contacts(self, ctx: int, req: Request, now: float) -> list[Output]:
        target = req.uri.aor() if isinstance(req.uri, SipURI) else str(req.uri)
        bindings = self.registrar.contacts(target, now)
        if not bindings:
            return self.core.reply(ctx, 480, now, "No Registered Contact")
        b = bindings[0]
        out = _without_local_routes(self.core, req)
        out = Request(out.headers, out.body, method=out.method, uri=parse_uri(b.contact))
        out = out.remove_header("Route")
        for p in b.path:
            out = out.append_header("Route", p)
        if reg := self.registrar.find(target):
            out = out.replace_header("P-Called-Party-ID", f"<{reg.impu}>")
        return self.core.forward(ctx, out, now, record_route=True)

    # -- expiry ---------------------------------------------------------------
    def expire(self, now: float) -> list[Registration]:
        """Drop expired bindings; SAR TIMEOUT_DEREGISTRATION for users left
        with none.  Call at :meth:`Registrar.next_expiry`."""
        before = {impu: len(r.bindings) for impu, r in self.registrar.by_impu.items()}
        gone = self.registrar.expired(now)
        for reg in gone:
            self.registrar.remove(reg.impu)
            self._save(reg, delete=True)
            self._notify_reg(reg.impu, now, ended="expired", bindings=[])
            msg = cx.sar(
                self.config.origin,
                self.sessions.next(),
                self.config.realm,
                [reg.impu],
                self.config.server_name,
                ServerAssignmentType.TIMEOUT_DEREGISTRATION,
                impi=reg.impi,
            )
            self.cx_request(msg).addErrback(
                lambda f: log.warn("SAR timeout dereg failed: {f}", f=f.getErrorMessage())
            )
        for impu, reg in self.registrar.by_impu.items():
            if len(reg.bindings) != before.get(impu):
                self._save(reg)
        return gone

    def deregister(self, impi: str, impus: list[str]) -> list[Registration]:
        """An RTR from the HSS: drop the named registrations."""
        out = []
        for reg in list(self.registrar.by_impu.values()):
            if reg.impi == impi and (not impus or reg.impu in {aor_of(i) for i in impus}):
                self.registrar.remove(reg.impu)
                self._save(reg, delete=True)
                self._notify_reg(
                    reg.impu, self.clock(), ended="rejected", bindings=list(reg.bindings.values())
                )
                out.append(reg)
        return out

    # -- reg event package (RFC 3680) ----------------------------------------
    def _reg_subscribe(self, ctx: int, req: Request, now: float) -> list[Output]:
        reg = self.registrar.find(req.uri.aor())
        assert reg is not None
        try:
            expires = req.expires
        except SipParseError:
            return self.core.reply(ctx, 400, now, "Bad Expires")
        secs = min(expires if expires is not None else 600000, self.config.max_expires)
        me = f"<sip:{self.config.host}:{self.config.port}>"
        resp = make_response(
            req, 200, to_tag=new_tag(), extra=(("Expires", str(secs)), ("Contact", me))
        )
        out = self.core.respond(ctx, resp, now)
        try:
            dialog = Dialog.as_uas(req, resp)
        except SipParseError:
            return out
        subs = self.reg_subscriptions.setdefault(reg.impu, [])
        subs[:] = [x for x in subs if x.dialog.id != dialog.id]
        sub = RegSubscription(reg.impu, dialog, now + secs)
        if secs > 0:
            subs.append(sub)
        bindings = self.registrar.contacts(reg.impu, now)
        body = reginfo_xml(reg.impu, bindings, now, version=0, active=True)
        state = SubscriptionState.ACTIVE if secs > 0 else SubscriptionState.TERMINATED
        out += self._send_notify(sub, body, state, secs, "timeout" if secs == 0 else None, now)
        return out

    def _notify_reg(
        self,
        impu: str,
        now: float,
        *,
        ended: str | None = None,
        bindings: list[Binding] | None = None,
    ) -> None:
        subs = self.reg_subscriptions.get(impu)
        if subs is None:
            return  # nobody subscribed (most registrations): nothing to note or send
        live = [x for x in subs if x.expires_at > now]
        if ended is not None:
            self.reg_subscriptions.pop(impu, None)
        else:
            self.reg_subscriptions[impu] = live
        for sub in live:
            sub.version += 1
            if ended is None:
                body = reginfo_xml(
                    impu, self.registrar.contacts(impu, now), now, version=sub.version, active=True
                )
                state = SubscriptionState.ACTIVE
            else:
                body = reginfo_xml(
                    impu, bindings or [], now, version=sub.version, active=False, event=ended
                )
                state = SubscriptionState.TERMINATED
            left = int(sub.expires_at - now)
            reason = "noresource" if ended is not None else None
            self._submit(self._send_notify(sub, body, state, left, reason, now))

    def _send_notify(
        self,
        sub: RegSubscription,
        body: bytes,
        state: SubscriptionState,
        expires: int,
        reason: str | None,
        now: float,
    ) -> list[Output]:
        me = f"<sip:{self.config.host}:{self.config.port}>"
        sub.dialog, notify = sub.dialog.next_request(
            "NOTIFY",
            body=body,
            content_type="application/reginfo+xml",
            extra=notify_headers("reg", state, expires=expires, reason=reason),
            contact=me,
        )
        _, outs = self.core.send_request(notify, now)
        return outs


def register_response_headers(
    reg: Registration, req: Request, config: ScscfConfig, now: float
) -> tuple[tuple[str, str], ...]:
    """Contact (each binding with its remaining expiry), Path (echoed),
    Service-Route and P-Associated-URI of a 200 to REGISTER."""
    out: list[tuple[str, str]] = []
    for b in reg.bindings.values():
        out.append(("Contact", f"<{b.contact}>;expires={max(0, int(b.expires_at - now))}"))
    out += [("Path", p) for p in req.get_all("Path")]
    if reg.bindings:
        out.append(("Service-Route", f"<sip:orig@{config.host}:{config.port};lr>"))
    for impu in reg.associated or (reg.impu,):
        out.append(("P-Associated-URI", f"<{impu}>"))
    return tuple(out)


def _impi_from(impu: str) -> str:
    """TS 23.003 style derivation for a UE that sent no Authorization."""
    return impu.split(":", 1)[-1]


def _scheme_of(algorithm: str) -> str:
    return cx.SCHEME_AKA if algorithm.upper() == "AKAV1-MD5" else cx.SCHEME_DIGEST


def _as_target(uri: Any, transport: str) -> Target:
    if isinstance(uri, SipURI):
        tp = (uri.transport or transport).upper()
        host = uri.host_bare
        return Target(tp, host, uri.port or 5060)
    raise SipParseError("an AS must have a SIP URI")


def _without_local_routes(core: SipCore, req: Request) -> Request:
    out = req
    while True:
        routes = out.get_all("Route")
        if not routes:
            return out
        try:
            first = parse_name_addr(routes[0]).uri
        except SipError:
            return out
        if not core.is_local(first):
            return out
        out = out.remove_first("Route")


__all__ = [
    "MIGRATIONS",
    "Binding",
    "Registrar",
    "Registration",
    "Scscf",
    "ScscfConfig",
    "Source",
    "odi_route",
    "parse_odi",
    "register_response_headers",
    "requested_expires",
]
