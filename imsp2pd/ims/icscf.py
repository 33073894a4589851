"""The I-CSCF (TS 24.229 §5.3): finds the S-CSCF of a user with UAR (for
REGISTER) or LIR (for every other request, PSIs included) and forwards the
request there; it keeps no state beyond its transactions.

:func:`choose_scscf` (S-CSCF selection by Server-Capabilities against the
configured S-CSCFs), :func:`uar_status` / :func:`lir_status` are pure;
:class:`Icscf` is the transaction user on a
:class:`~imsp2pd.sip.proxy.SipCore` with an injected Cx client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from imsp2pd.diameter import cx
from imsp2pd.diameter.avp import Avp, AvpType
from imsp2pd.diameter.codes import CxResult, TgppAvp, UserAuthorizationType
from imsp2pd.diameter.message import Message as DiameterMessage
from imsp2pd.sip.errors import SipParseError
from imsp2pd.sip.headers import parse_auth
from imsp2pd.sip.message import Request
from imsp2pd.sip.proxy import IncomingAck, IncomingRequest, Output, SipCore, Target
from imsp2pd.sip.uri import SipURI, parse_uri

log = Logger()


@dataclass(frozen=True)
class ServerCapabilities:
    """What a UAA or LIA asks of the S-CSCF the I-CSCF selects (the
    Server-Capabilities AVP, TS 29.228 §6.7, §6.1.1.1): capabilities it must
    have, capabilities it should have, and S-CSCF names to fall back on."""

    mandatory: frozenset[int] = frozenset()
    optional: frozenset[int] = frozenset()
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScscfEntry:
    """An S-CSCF the I-CSCF knows, with the capabilities it offers (the
    operator's numbering, TS 29.228 §6.7)."""

    name: str
    capabilities: frozenset[int] = frozenset()


#: The lab's single S-CSCF (etc/imsp2pd.toml, DESIGN.md §1).
LAB_SCSCFS = (ScscfEntry("sip:127.0.0.1:6060"),)


#: ServerCapabilities by the id of the AVP read (the decoder shares a recurring
#: AVP between answers); each entry holds its AVP, so the id is not reused.
_READ: dict[int, tuple[Avp, ServerCapabilities]] = {}


def server_capabilities(msg: DiameterMessage) -> ServerCapabilities | None:
    """The Server-Capabilities of a Cx answer, None when it has none."""
    caps = msg.find(TgppAvp.SERVER_CAPABILITIES)
    if caps is None or caps.type is not AvpType.GROUPED:
        return None
    known = _READ.get(id(caps))
    if known is not None and known[0] is caps:
        return known[1]

    def ints(code: int) -> frozenset[int]:
        return frozenset(a.value for a in caps.find_all(code) if isinstance(a.value, int))

    found = ServerCapabilities(
        ints(TgppAvp.MANDATORY_CAPABILITY),
        ints(TgppAvp.OPTIONAL_CAPABILITY),
        tuple(a.value for a in caps.find_all(TgppAvp.SERVER_NAME) if isinstance(a.value, str)),
    )
    if len(_READ) >= 256:
        _READ.clear()
    _READ[id(caps)] = (caps, found)
    return found


def choose_scscf(
    name: str | None,
    capabilities: ServerCapabilities | None,
    configured: Sequence[ScscfEntry] = LAB_SCSCFS,
) -> str | None:
    """The S-CSCF to use (TS 29.228 §6.7, TS 24.229 §5.3.1.2).

    The one the HSS named (Server-Name) if any.  Otherwise, when the
    Server-Capabilities list capabilities (or are empty), the configured
    S-CSCF that has every mandatory capability and the most optional ones;
    a tie goes to one the HSS also named, then to configuration order.  When
    none qualifies, or the HSS gave only names, the first name it gave.
    None when nothing can be selected."""
    if name:
        return name
    if capabilities is None:
        return None
    caps = capabilities
    if caps.mandatory or caps.optional or not caps.names:
        named = {_name_key(n) for n in caps.names}
        best: ScscfEntry | None = None
        best_score = (-1, False)
        for entry in configured:
            if not caps.mandatory <= entry.capabilities:
                continue
            score = (len(caps.optional & entry.capabilities), _name_key(entry.name) in named)
            if score > best_score:
                best, best_score = entry, score
        if best is not None:
            return best.name
    return caps.names[0] if caps.names else None


@lru_cache(maxsize=1024)
def _name_key(name: str) -> str:
    try:
        return str(parse_uri(name)).lower()
    except SipParseError:
        return name.lower()


def scscf_entries(items: Sequence[Mapping[str, Any]]) -> tuple[ScscfEntry, ...]:
    """The ``[[icscf.scscfs]]`` tables (``name``, a SIP URI, and
    ``capabilities``, a list of non-negative integers); ValueError names
    what is wrong."""
    out: list[ScscfEntry] = []
    for i, item in enumerate(items):
        unknown = set(item) - {"name", "capabilities"}
        if unknown:
            raise ValueError(f"[{i}] has unknown keys: {', '.join(sorted(unknown))}")
        name = item.get("name")
        if not isinstance(name, str):
            raise ValueError(f"[{i}] needs a name (the S-CSCF's SIP URI)")
        try:
            target_of(name)
        except SipParseError as exc:
            raise ValueError(f"[{i}] name {name!r}: {exc.reason}") from None
        caps = item.get("capabilities", [])
        if not isinstance(caps, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 2**32 for c in caps
        ):
            raise ValueError(f"[{i}] capabilities must be a list of unsigned 32-bit integers")
        out.append(ScscfEntry(name, frozenset(caps)))
    return tuple(out)


def uar_status(outcome: cx.Outcome) -> tuple[int, str] | None:
    """The SIP error for a failed UAA (TS 24.229 §5.3.1.2), None on success:
    403 for an unknown, mismatched, barred or roaming-refused user, 480 for
    anything else the HSS refused."""
    if outcome.success:
        return None
    if outcome.experimental and outcome.code in (
        CxResult.ERROR_USER_UNKNOWN,
        CxResult.ERROR_IDENTITIES_DONT_MATCH,
        CxResult.ERROR_ROAMING_NOT_ALLOWED,
        CxResult.ERROR_IDENTITY_NOT_REGISTERED,
    ):
        return 403, "Forbidden"
    if not outcome.experimental and outcome.code == 5003:  # DIAMETER_AUTHORIZATION_REJECTED
        return 403, "Forbidden"
    return 480, "HSS Refused"


def lir_status(outcome: cx.Outcome) -> tuple[int, str] | None:
    """The SIP error for a failed LIA (TS 24.229 §5.3.2.1), None on success."""
    if outcome.success:
        return None
    if outcome.experimental and outcome.code == CxResult.ERROR_USER_UNKNOWN:
        return 404, "Not Found"
    if outcome.experimental and outcome.code == CxResult.ERROR_IDENTITY_NOT_REGISTERED:
        return 480, "Temporarily Unavailable"
    return 480, "HSS Refused"


@lru_cache(maxsize=1024)
def target_of(name: str, default_transport: str = "UDP") -> Target:
    uri = parse_uri(name)
    if not isinstance(uri, SipURI):
        raise SipParseError(f"S-CSCF name is not a SIP URI: {name}")
    transport = (uri.transport or default_transport).upper()
    return Target(transport, uri.host_bare, uri.port or 5060)


@dataclass(frozen=True)
class IcscfConfig:
    realm: str = "ims.example.org"
    origin: cx.Origin = cx.Origin("icscf.ims.example.org", "ims.example.org")
    transport: str = "UDP"
    #: the S-CSCFs to select from by capabilities (``[[icscf.scscfs]]``)
    scscfs: tuple[ScscfEntry, ...] = LAB_SCSCFS


class Icscf:
    def __init__(
        self,
        core: SipCore,
        config: IcscfConfig,
        cx_request: Callable[[DiameterMessage], Deferred[DiameterMessage]],
        *,
        clock: Callable[[], float],
    ) -> None:
        self.core = core
        self.config = config
        self.cx_request = cx_request
        self.clock = clock
        self.node: Any = None
        self.sessions = cx.SessionIds(config.origin.host, clock())

    def _submit(self, outputs: list[Output]) -> None:
        if self.node is not None:
            self.node.submit(outputs)

    def on_event(self, event: Output, now: float) -> list[Output]:
        if isinstance(event, IncomingAck):
            return self.core.forward_ack(event.request, event.source, now)
        if not isinstance(event, IncomingRequest):
            return []
        req = event.request
        try:
            if req.method == "REGISTER":
                msg = self._uar(req)
            else:
                msg = cx.lir(self.config.origin, self.sessions.next(), self.config.realm, _aor(req))
        except (SipParseError, ValueError) as exc:
            return self.core.reply(event.ctx, 400, now, str(exc))
        d = self.cx_request(msg)
        d.addCallback(self._answered, event.ctx, req)
        d.addErrback(self._failed, event.ctx)
        return []

    def _uar(self, req: Request) -> DiameterMessage:
        impu = req.to.uri.aor()
        impi = impu.split(":", 1)[-1]
        value = req.get("Authorization")
        if value is not None:
            username = parse_auth(value).get("username")
            if username:
                impi = username
        visited = req.get("P-Visited-Network-ID") or self.config.realm
        expires = req.expires
        contacts = req.contacts
        dereg = (expires == 0 and all(c.param("expires") in (None, "0") for c in contacts)) or any(
            c.param("expires") == "0" for c in contacts
        )
        kind = (
            UserAuthorizationType.DE_REGISTRATION if dereg else UserAuthorizationType.REGISTRATION
        )
        return cx.uar(
            self.config.origin,
            self.sessions.next(),
            self.config.realm,
            impi,
            impu,
            visited.strip('"'),
            auth_type=kind,
        )

    def _answered(self, ans: DiameterMessage, ctx: int, req: Request) -> None:
        now = self.clock()
        outcome = cx.outcome(ans)
        error = uar_status(outcome) if req.method == "REGISTER" else lir_status(outcome)
        caps = server_capabilities(ans)
        if caps is None and error is None:
            caps = ServerCapabilities()  # the HSS omits empty capabilities: no requirement
        name = choose_scscf(cx.server_name(ans), caps, self.config.scscfs)
        if error is not None or name is None:
            # TS 24.229 §5.3.1.3: no S-CSCF fulfils the capabilities: 600
            none = (600, "Busy Everywhere") if req.method == "REGISTER" else None
            status, reason = error or none or (480, "No S-CSCF Available")
            self._submit(self.core.reply(ctx, status, now, reason))
            return
        try:
            target = target_of(name, self.config.transport)
        except SipParseError as exc:
            self._submit(self.core.reply(ctx, 500, now, exc.reason))
            return
        self._submit(self.core.forward(ctx, req, now, target=target))

    def _failed(self, failure: Any, ctx: int) -> None:
        log.warn("Cx request failed: {why}", why=failure.getErrorMessage())
        self._submit(self.core.reply(ctx, 480, self.clock(), "HSS Unavailable"))


def _aor(req: Request) -> str:
    uri = req.uri
    if isinstance(uri, SipURI):
        return uri.aor()
    return str(uri)


__all__ = [
    "LAB_SCSCFS",
    "Icscf",
    "IcscfConfig",
    "ScscfEntry",
    "ServerCapabilities",
    "choose_scscf",
    "lir_status",
    "scscf_entries",
    "server_capabilities",
    "target_of",
    "uar_status",
]
