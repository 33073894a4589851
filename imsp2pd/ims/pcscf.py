"""The P-CSCF (TS 24.229 §5.2): the UE's first hop.

At registration it adds Path, P-Visited-Network-ID and P-Charging-Vector,
and from the 200 it learns the UE's Service-Route, its associated
identities and its expiry, bound to the flow the UE registered over.
On every later request from the UE it removes what a UE may not send
(P-Asserted-Identity and the other trusted headers), inserts the asserted
identity (the P-Preferred-Identity when it is one of the UE's, else the
default one), generates a P-Charging-Vector and enforces the Service-Route;
an unregistered UE gets 403.  Requests from the core towards the UE (they
arrive on our Path entry) go back over the UE's own flow, and the UE's
responses to them lose the trusted headers too (RFC 3325 §5).

Bindings over UDP are durable (``pcscf_ues``): the 200 goes to the UE once
its binding is committed, and a restarted P-CSCF reads them back, so a
registered UE is not refused after a ``kill -9``.  A binding over TCP or
TLS names its connection, which dies with the process: it is kept in
memory only.

:func:`sanitize_from_ue`, :func:`charging_vector`, :func:`asserted_identity`
and :class:`UeTable` are pure; :class:`Pcscf` is the transaction user.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from imsp2pd.sip.errors import SipParseError
from imsp2pd.sip.headers import parse_name_addr
from imsp2pd.sip.message import Request, Response, random_hex
from imsp2pd.sip.proxy import (
    BranchFailed,
    BranchResponse,
    IncomingAck,
    IncomingRequest,
    Output,
    SipCore,
    Source,
    Target,
)
from imsp2pd.sip.uri import SipURI, parse_uri
from imsp2pd.store import Collection, Migration

log = Logger()

UE_BINDINGS = "pcscf_ues"
MIGRATIONS = (Migration("pcscf-0001-ues", (Collection(UE_BINDINGS, ()),)),)

#: Headers only the network may set (RFC 3325, RFC 7315, TS 24.229 §5.2.6.3).
UNTRUSTED_FROM_UE = (
    "P-Asserted-Identity",
    "P-Charging-Vector",
    "P-Charging-Function-Addresses",
    "P-Visited-Network-ID",
    "P-Served-User",
    "P-Called-Party-ID",
    "P-Associated-URI",
    "Service-Route",
    "Path",
)


#: what a UE's initial request loses before the P-CSCF routes it
_UNTRUSTED_AND_ROUTE = (*UNTRUSTED_FROM_UE, "P-Preferred-Identity", "Route")


def sanitize_from_ue(request: Request) -> Request:
    """The request without the headers a UE may not assert."""
    return request.remove_header(*UNTRUSTED_FROM_UE)


def ue_response_filter(
    associated: tuple[str, ...], called: str | None
) -> Callable[[Response], Response]:
    """What a UE's responses to a request from the network go through: the
    trusted headers and P-Preferred-Identity removed and, on a 1xx (but 100)
    or 2xx, a P-Asserted-Identity inserted (TS 24.229 §5.2.6.4): the
    preferred identity when it is one of the UE's, else the identity it was
    called on (P-Called-Party-ID) when it is one of them, else its default."""
    ordered = associated
    if called is not None:
        try:
            called_aor = parse_name_addr(called).uri.aor()
        except SipParseError:
            called_aor = None
        first = [i for i in associated if _aor(i) == called_aor]
        ordered = (*first, *(i for i in associated if i not in first))

    def apply(response: Response) -> Response:
        preferred = response.get_all("P-Preferred-Identity")
        out = response.remove_header(*UNTRUSTED_FROM_UE, "P-Preferred-Identity")
        if 100 < response.status < 300:
            identity = asserted_identity(preferred, ordered)
            if identity is not None:
                out = out.append_header("P-Asserted-Identity", f"<{identity}>")
        return out

    return apply


def charging_vector(host: str, icid: str | None = None) -> str:
    """A P-Charging-Vector with a fresh icid (RFC 7315 §4.6)."""
    return f"icid-value={icid or random_hex(16)};icid-generated-at={host}"


def asserted_identity(preferred: list[str], associated: tuple[str, ...]) -> str | None:
    """The identity to assert: the first P-Preferred-Identity that belongs
    to the UE, else its default (first) associated identity."""
    if not preferred:
        return associated[0] if associated else None
    wanted = set()
    for value in preferred:
        try:
            wanted.add(parse_name_addr(value).uri.aor())
        except SipParseError:
            continue
    for impu in associated:
        if _aor(impu) in wanted:
            return impu
    return associated[0] if associated else None


def _aor(text: str) -> str:
    try:
        return parse_uri(text).aor()
    except SipParseError:
        return text.lower()


@dataclass(frozen=True)
class UeBinding:
    contact: str
    source: Source
    associated: tuple[str, ...]
    service_route: tuple[str, ...]
    expires_at: float

    @property
    def durable(self) -> bool:
        """Whether the binding outlives the process (not bound to a connection)."""
        return self.source.flow is None

    def to_doc(self) -> dict[str, Any]:
        s = self.source
        return {
            "contact": self.contact,
            "source": [s.transport, s.host, s.port],
            "associated": list(self.associated),
            "service_route": list(self.service_route),
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> UeBinding:
        transport, host, port = doc["source"]
        return cls(
            doc["contact"],
            Source(transport, host, int(port)),
            tuple(doc["associated"]),
            tuple(doc["service_route"]),
            float(doc["expires_at"]),
        )


def flow_key(source: Source) -> tuple[str, str, int, int | None]:
    if source.flow is not None:
        return (source.transport, "", 0, source.flow)
    return (source.transport, source.host, source.port, None)


class UeTable:
    """Registered UEs by flow (or UDP address) and by contact."""

    def __init__(self) -> None:
        self.by_flow: dict[tuple[str, str, int, int | None], UeBinding] = {}
        self.by_contact: dict[str, UeBinding] = {}

    def put(self, b: UeBinding) -> UeBinding | None:
        """Bind ``b``; returns the binding it replaced for the same contact."""
        key = _aor_contact(b.contact)
        old = self.by_contact.get(key)
        if old is not None and self.by_flow.get(flow_key(old.source)) is old:
            del self.by_flow[flow_key(old.source)]
        self.by_flow[flow_key(b.source)] = b
        self.by_contact[key] = b
        return old

    def remove_contact(self, contact: str) -> UeBinding | None:
        b = self.by_contact.pop(_aor_contact(contact), None)
        if b is not None and self.by_flow.get(flow_key(b.source)) is b:
            del self.by_flow[flow_key(b.source)]
        return b

    def expire(self, now: float) -> list[UeBinding]:
        """Drop the bindings expired at ``now``; returns them."""
        gone = [b for b in self.by_contact.values() if b.expires_at <= now]
        for b in gone:
            self.remove_contact(b.contact)
        return gone

    def for_source(self, source: Source, now: float) -> UeBinding | None:
        b = self.by_flow.get(flow_key(source))
        return b if b is not None and b.expires_at > now else None

    def for_contact(self, contact: str, now: float) -> UeBinding | None:
        b = self.by_contact.get(_aor_contact(contact))
        return b if b is not None and b.expires_at > now else None

    def drop_flow(self, flow: int) -> None:
        for key, b in list(self.by_flow.items()):
            if key[3] == flow:
                del self.by_flow[key]
                if self.by_contact.get(_aor_contact(b.contact)) is b:
                    del self.by_contact[_aor_contact(b.contact)]


def _aor_contact(contact: str) -> str:
    """A contact URI compared without its parameters."""
    try:
        uri = parse_uri(contact)
    except SipParseError:
        return contact.lower()
    if isinstance(uri, SipURI):
        return f"{uri.scheme.lower()}:{uri.user or ''}@{uri.host_bare}:{uri.port or 5060}"
    return str(uri).lower()


@dataclass(frozen=True)
class _Write:
    """The store writes of a change to the bindings: (key, doc) to put,
    keys to delete; called with a transaction, it does them."""

    puts: list[tuple[str, dict[str, Any]]]
    deletes: list[str]

    def __call__(self, txn: Any) -> None:
        for key in self.deletes:
            txn.delete(UE_BINDINGS, key)
        for key, doc in self.puts:
            txn.put(UE_BINDINGS, key, doc)


@dataclass(frozen=True)
class PcscfConfig:
    host: str = "127.0.0.1"
    port: int = 4060
    realm: str = "ims.example.org"
    visited_network: str = "ims.example.org"
    icscf: Target = Target("UDP", "127.0.0.1", 5060)


class Pcscf:
    def __init__(
        self,
        core: SipCore,
        config: PcscfConfig,
        *,
        clock: Callable[[], float],
        store: Any = None,
    ) -> None:
        self.core = core
        self.config = config
        self.clock = clock
        self.store = store
        self.node: Any = None
        self.ues = UeTable()
        self._registering: dict[int, Source] = {}

    # -- durable state ------------------------------------------------------
    def load(self) -> int:
        """Read back the bindings not yet expired (at start)."""
        if self.store is None:
            return 0
        docs = self.store.transact_now(lambda txn: txn.scan(UE_BINDINGS))
        now = self.clock()
        for _, doc in docs:
            b = UeBinding.from_doc(doc)
            if b.expires_at > now:
                self.ues.put(b)
        return len(self.ues.by_contact)

    def expire(self, now: float) -> int:
        """Forget the bindings expired at ``now`` (in the store too)."""
        gone = [b for b in self.ues.expire(now) if b.durable]
        if gone and self.store is not None:
            keys = [_aor_contact(b.contact) for b in gone]
            self.store.transact(_Write([], keys)).addErrback(
                lambda f: log.failure("P-CSCF could not forget expired bindings", f)
            )
        return len(gone)

    def _submit(self, outputs: list[Output]) -> None:
        if self.node is not None:
            self.node.submit(outputs)

    @property
    def path_uri(self) -> str:
        return f"<sip:term@{self.config.host}:{self.config.port};lr>"

    def on_event(self, event: Output, now: float) -> list[Output]:
        if isinstance(event, IncomingRequest):
            return self._request(event, now)
        if isinstance(event, IncomingAck):
            return self.core.forward_ack(sanitize_from_ue(event.request), event.source, now)
        if isinstance(event, BranchResponse):
            return self._register_response(event, now)
        if isinstance(event, BranchFailed):
            self._registering.pop(event.ctx, None)
            status = 408 if event.reason == "timeout" else 500
            return self.core.reply(event.ctx, status, now, "Next Hop Failed")
        return []

    def _request(self, event: IncomingRequest, now: float) -> list[Output]:
        req = event.request
        routes = req.get_all("Route")
        if routes and self._is_our_path(routes[0]):
            return self._terminating(event, now)
        if req.method == "REGISTER":
            return self._register(event, now)
        ue = self.ues.for_source(event.source, now)
        in_dialog = req.to.tag is not None
        if ue is None and in_dialog and routes and self._is_ours(routes[0]):
            # an in-dialog request from the core (e.g. a NOTIFY) towards a UE
            return self._terminating(event, now)
        if ue is None:
            return self.core.reply(event.ctx, 403, now, "Not Registered")
        if in_dialog:
            # the dialog's route set stands (it was made from our Record-Route)
            out = req.remove_header(*UNTRUSTED_FROM_UE, "P-Preferred-Identity")
            return self.core.forward(event.ctx, out, now)
        if not ue.service_route:
            return self.core.reply(event.ctx, 403, now, "No Service-Route")
        identity = asserted_identity(req.get_all("P-Preferred-Identity"), ue.associated)
        # enforce the Service-Route learned at registration (TS 24.229 §5.2.6.3.3)
        asserted = (("P-Asserted-Identity", f"<{identity}>"),) if identity is not None else ()
        out = req.edit(
            remove=_UNTRUSTED_AND_ROUTE,
            append=(
                *asserted,
                ("P-Charging-Vector", charging_vector(self.config.host)),
                *(("Route", r) for r in ue.service_route),
            ),
        )
        return self.core.forward(event.ctx, out, now, record_route=True)

    def _is_ours(self, value: str) -> bool:
        try:
            return self.core.is_local(parse_name_addr(value).uri)
        except SipParseError:
            return False

    def _is_our_path(self, value: str) -> bool:
        try:
            uri = parse_name_addr(value).uri
        except SipParseError:
            return False
        return isinstance(uri, SipURI) and uri.user == "term" and self.core.is_local(uri)

    def _register(self, event: IncomingRequest, now: float) -> list[Output]:
        req = event.request
        path_supported = any(s.lower() == "path" for s in req.get_all("Supported"))
        out = req.edit(
            remove=(*UNTRUSTED_FROM_UE, "Route"),
            prepend=(("Path", self.path_uri),),
            append=(
                ("P-Visited-Network-ID", self.config.visited_network),
                ("P-Charging-Vector", charging_vector(self.config.host)),
                *(() if path_supported else (("Supported", "path"),)),
            ),
        )
        self._registering[event.ctx] = event.source
        return self.core.forward(event.ctx, out, now, intercept=True, target=self.config.icscf)

    def _register_response(self, event: BranchResponse, now: float) -> list[Output]:
        source = self._registering.pop(event.ctx, None)
        resp = event.response
        if source is None or resp.status != 200:
            return self.core.relay_response(event.ctx, resp, now)
        write = self._learn(resp, source, now)
        if self.store is None or not (write.puts or write.deletes):
            return self.core.relay_response(event.ctx, resp, now)
        # durable before acknowledged: the 200 reaches the UE once committed
        ctx = event.ctx
        done = self.store.transact(write)
        done.addCallback(lambda _: self._submit(self.core.relay_response(ctx, resp, self.clock())))
        done.addErrback(self._write_failed, ctx, write)
        return []

    def _write_failed(self, failure: Any, ctx: int, write: _Write) -> None:
        log.failure("P-CSCF could not store a UE binding", failure)
        for key, _ in write.puts:
            b = self.ues.by_contact.get(key)
            if b is not None:
                self.ues.remove_contact(b.contact)
        self._submit(self.core.reply(ctx, 500, self.clock(), "Binding Not Stored"))

    def _learn(self, resp: Response, source: Source, now: float) -> _Write:
        """Bind (or unbind) the contacts of a 200 to a REGISTER; returns the
        store writes that make it durable."""
        write = _Write([], [])
        service_route = tuple(resp.get_all("Service-Route"))
        associated: list[str] = []
        for value in resp.get_all("P-Associated-URI"):
            try:
                associated.append(str(parse_name_addr(value).uri))
            except SipParseError:
                continue
        try:
            contacts = resp.contacts
        except SipParseError:
            return write
        for na in contacts:
            param = na.param("expires")
            secs = int(param) if param and param.isdigit() else 0
            contact = str(na.uri)
            if secs == 0:
                old = self.ues.remove_contact(contact)
            elif self._contact_is_from(contact, source):
                b = UeBinding(contact, source, tuple(associated), service_route, now + secs)
                old = self.ues.put(b)
                if b.durable:
                    write.puts.append((_aor_contact(contact), b.to_doc()))
                    continue
            else:
                continue
            if old is not None and old.durable:
                write.deletes.append(_aor_contact(old.contact))
        return write

    @staticmethod
    def _contact_is_from(contact: str, source: Source) -> bool:
        """Bind only the contacts of this UE (TCP: any, its flow names it;
        UDP: the contact's host must be the source address)."""
        if source.reliable:
            return True
        try:
            uri = parse_uri(contact)
        except SipParseError:
            return False
        return isinstance(uri, SipURI) and uri.host_bare == source.host.lower()

    def _terminating(self, event: IncomingRequest, now: float) -> list[Output]:
        req = event.request
        ue = self.ues.for_contact(str(req.uri), now)
        if ue is None:
            return self.core.reply(event.ctx, 480, now, "UE Not Reachable")
        s = ue.source
        target = Target(s.transport, s.host, s.port, s.flow)
        out = req.remove_header("P-Charging-Function-Addresses")
        # what the UE answers flows into the network: it may assert nothing
        # itself; we assert the identity it was called on (TS 24.229 §5.2.6.4)
        return self.core.forward(
            event.ctx,
            out,
            now,
            record_route=True,
            target=target,
            response_filter=ue_response_filter(ue.associated, req.get("P-Called-Party-ID")),
        )

    def flow_closed(self, flow: int) -> None:
        """A UE's TCP/TLS connection went away: its binding is unusable."""
        self.ues.drop_flow(flow)
