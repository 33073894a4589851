"""A sans-IO SIP core: the transaction layer under a stateful proxy and a
UA (RFC 3261 §16, §8, §17, §18.2).

:class:`SipCore` takes parsed messages with their :class:`Source` and
``now``, and returns outputs: :class:`Transmit` for the transport, and events
for the transaction user (the role logic: a CSCF, the AS, a client):
:class:`IncomingRequest`, :class:`IncomingAck`, :class:`BranchResponse`,
:class:`BranchFailed`, :class:`UacResponse`, :class:`UacFailed`,
:class:`Cancelled`.  The TU answers with :meth:`SipCore.respond`,
:meth:`SipCore.forward` (the proxy behaviour of §16.6: Max-Forwards,
Record-Route, Via with a loop-detecting z9hG4bK branch, loose and strict
routing) or :meth:`SipCore.send_request` (a UAC request).  Nothing here does
I/O or reads a clock: the Twisted adapter (:mod:`imsp2pd.sip.transport`)
feeds it and keeps one timer at :meth:`SipCore.next_deadline`.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from imsp2pd.sip.errors import SipParseError
from imsp2pd.sip.headers import Via, parse_name_addr
from imsp2pd.sip.message import (
    BRANCH_MAGIC,
    Request,
    Response,
    SipMessage,
    make_response,
    new_branch,
    new_tag,
)
from imsp2pd.sip.parser import parse_message, remember_via
from imsp2pd.sip.transaction import (
    Action,
    ClientTransaction,
    Deliver,
    Send,
    ServerTransaction,
    State,
    Terminated,
    Timeout,
    Timers,
    TransactionKey,
    TransactionTable,
    TransportFailed,
    server_key,
)
from imsp2pd.sip.uri import URI, SipURI

#: server transactions in progress (not yet answered) beyond which a new
#: request is refused with 503 and Retry-After, without a transaction
MAX_IN_PROGRESS = 5000
UDP_MTU_LIMIT = 1300  # §18.1.1: larger requests go over a congestion-controlled transport
DEFAULT_MAX_FORWARDS = 70

#: what a TU does to every response relayed upstream on a context
ResponseFilter = Callable[[Response], Response]
#: the header edits of a forwarded request: Message.edit's drop_first,
#: replace and prepend
_Edits = tuple[tuple[str, ...], tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class _Endpoint:
    """A transport, an address and a flow (None for UDP)."""

    transport: str
    host: str
    port: int
    flow: int | None = None

    def __init__(self, transport: str, host: str, port: int, flow: int | None = None) -> None:
        # the dataclass's own __init__ would run interpreted, a setattr a field
        d = self.__dict__
        d["transport"] = transport
        d["host"] = host
        d["port"] = port
        d["flow"] = flow

    @property
    def reliable(self) -> bool:
        return self.transport != "UDP"


@dataclass(frozen=True, init=False)
class Source(_Endpoint):
    """Where a message came from.  ``flow`` names the stream connection
    (None for UDP); responses and, for a registered UE, later requests reuse
    it."""


@dataclass(frozen=True, init=False)
class Target(_Endpoint):
    """Where to send: a transport, an address and optionally a flow to
    reuse (the adapter connects when the flow is gone)."""


@dataclass(frozen=True)
class LocalAddress:
    transport: str
    host: str
    port: int


# -- outputs -----------------------------------------------------------


@dataclass(frozen=True)
class Transmit:
    message: SipMessage
    target: Target
    #: the client transaction to tell about a transport error, if any
    tx: TransactionKey | None = None

    def __init__(
        self, message: SipMessage, target: Target, tx: TransactionKey | None = None
    ) -> None:
        d = self.__dict__
        d["message"] = message
        d["target"] = target
        d["tx"] = tx


@dataclass(frozen=True)
class IncomingRequest:
    ctx: int
    request: Request
    source: Source

    def __init__(self, ctx: int, request: Request, source: Source) -> None:
        d = self.__dict__
        d["ctx"] = ctx
        d["request"] = request
        d["source"] = source


@dataclass(frozen=True)
class IncomingAck:
    """An ACK that matched no transaction (the ACK of a 2xx): a proxy
    forwards it with :meth:`SipCore.forward_ack`, a UAS takes it."""

    request: Request
    source: Source


@dataclass(frozen=True)
class BranchResponse:
    """A response on a forwarded branch, for a TU that asked to
    ``intercept`` (e.g. the S-CSCF applying DefaultHandling)."""

    ctx: int
    response: Response

    def __init__(self, ctx: int, response: Response) -> None:
        d = self.__dict__
        d["ctx"] = ctx
        d["response"] = response


@dataclass(frozen=True)
class BranchFailed:
    """A forwarded branch timed out or hit a transport error (intercepted
    branches only; otherwise the core answers 408 / 500 itself)."""

    ctx: int
    reason: str


@dataclass(frozen=True)
class UacResponse:
    handle: int
    response: Response


@dataclass(frozen=True)
class UacFailed:
    handle: int
    reason: str


@dataclass(frozen=True)
class Cancelled:
    ctx: int


Output = (
    Transmit
    | IncomingRequest
    | IncomingAck
    | BranchResponse
    | BranchFailed
    | UacResponse
    | UacFailed
    | Cancelled
)


@dataclass
class _ServerCtx:
    ctx: int
    tx: ServerTransaction
    source: Source
    branch: TransactionKey | None = None
    branch_target: Target | None = None
    intercept: bool = False
    answered: bool = False
    cancelled: bool = False
    #: applied to every response relayed upstream on this context
    response_filter: ResponseFilter | None = None

    def __init__(
        self,
        ctx: int,
        tx: ServerTransaction,
        source: Source,
        branch: TransactionKey | None = None,
        branch_target: Target | None = None,
        intercept: bool = False,
        answered: bool = False,
        cancelled: bool = False,
        response_filter: ResponseFilter | None = None,
    ) -> None:
        self.ctx = ctx
        self.tx = tx
        self.source = source
        self.branch = branch
        self.branch_target = branch_target
        self.intercept = intercept
        self.answered = answered
        self.cancelled = cancelled
        self.response_filter = response_filter


@dataclass
class _ClientCtx:
    tx: ClientTransaction
    target: Target
    server_ctx: int | None = None
    uac_handle: int | None = None
    extra: dict[str, object] = field(default_factory=dict)
    #: the server context's response filter, for a late 2xx after it ended
    response_filter: ResponseFilter | None = None

    def __init__(
        self,
        tx: ClientTransaction,
        target: Target,
        server_ctx: int | None = None,
        uac_handle: int | None = None,
        extra: dict[str, object] | None = None,
        response_filter: ResponseFilter | None = None,
    ) -> None:
        self.tx = tx
        self.target = target
        self.server_ctx = server_ctx
        self.uac_handle = uac_handle
        self.extra = {} if extra is None else extra
        self.response_filter = response_filter


def response_target(response: Response, source: Source | None) -> Target:
    """Where a response goes (§18.2.2, RFC 3581): back over the flow the
    request came on, else to the address in the top Via."""
    via = response.top_via
    if source is not None and source.reliable:
        return Target(source.transport, source.host, source.port, source.flow)
    host, port = via.response_address(5061 if via.transport == "TLS" else 5060)
    return Target(via.transport, host, port)


def uri_target(uri: URI, *, default_transport: str = "UDP") -> Target:
    """The next hop for a SIP URI (RFC 3263 without DNS: the host is used as
    given).  The size rule of §18.1.1 is applied later, to every request
    whatever chose its target (:func:`fit_transport`)."""
    if not isinstance(uri, SipURI):
        raise SipParseError(f"Cannot route to a {uri.scheme} URI", status=416)
    transport = (uri.transport or default_transport.lower()).upper()
    if uri.secure:
        transport = "TLS"
    maddr = uri.param("maddr")
    host = maddr or uri.host
    if host.startswith("["):
        host = host[1:-1]
    port = uri.port or (5061 if transport == "TLS" else 5060)
    return Target(transport, host, port)


def fit_transport(target: Target, size: int) -> Target:
    """RFC 3261 §18.1.1: a request of more than 1300 bytes (path MTU
    unknown) bound for UDP goes over TCP to the same address instead.  A
    peer without a TCP listener makes the connect fail, and the client
    transaction reports the transport error to its user."""
    if target.transport == "UDP" and size > UDP_MTU_LIMIT:
        return Target("TCP", target.host, target.port)
    return target


def loop_hash(request: Request) -> str:
    """The part of a branch that detects loops (§16.3 step 4, §16.6 step 8):
    it hashes what does not change while a request loops and does change
    while it spirals (the Request-URI and the Route set as received).

    Only this node reads it back (from its own Vias), so Python's keyed
    in-process hash does: a restart between a request leaving and coming
    back only misses that loop, which Max-Forwards still ends."""
    key = (
        str(request.uri),
        request.from_.tag,
        request.to.tag,
        request.call_id,
        request.cseq.seq,
        *request.get_all("Route"),
        None,
        *request.get_all("Proxy-Require"),
    )
    return f"{hash(key) & 0xFFFFFFFFFFFFFFFF:016x}"


class SipCore:
    """Transactions, a stateful proxy and a UAC/UAS for one SIP node.

    A non-INVITE transaction over UDP that has its final response only
    waits out Timer J (server: resend that response to a retransmitted
    request) or Timer K (client: absorb retransmitted responses).  The core
    *retires* it then: the transaction and its messages are dropped; a
    server keeps only its key, deadline and the response's bytes and
    destination, as objects the garbage collector never scans; a client
    keeps nothing, since a response matching no transaction is dropped
    anyway (RFC 6026).  At
    thousands of requests a second this is the difference between a few
    hundred thousand live objects (and collector pauses long enough to
    overflow the socket buffer) and almost none.
    """

    def __init__(
        self,
        *,
        addresses: list[LocalAddress],
        aliases: tuple[str, ...] = (),
        timers: Timers | None = None,
        max_in_progress: int = MAX_IN_PROGRESS,
    ) -> None:
        if not addresses:
            raise ValueError("a SIP core needs at least one local address")
        self.max_in_progress = max_in_progress
        #: requests refused because too many were in progress
        self.overloaded = 0
        self.addresses = addresses
        self.aliases = tuple(a.lower() for a in aliases)
        self.timers = timers or Timers()
        self.table = TransactionTable()
        self._servers: dict[int, _ServerCtx] = {}
        self._server_by_key: dict[TransactionKey, int] = {}
        self._clients: dict[TransactionKey, _ClientCtx] = {}
        self._ids = itertools.count(1)
        # retired server transactions: key -> (deadline, response bytes,
        # transport, host, port), and their keys in deadline order
        self._retired_servers: dict[TransactionKey, tuple[float, bytes, str, str, int]] = {}
        self._retired: deque[tuple[float, TransactionKey]] = deque()

    # -- identity ---------------------------------------------------------
    def is_local(self, uri: URI) -> bool:
        """True when ``uri`` names this node (host and port, §16.4)."""
        if not isinstance(uri, SipURI):
            return False
        return self._is_local_at(uri.host_bare, uri.port)

    def _is_local_at(self, host: str, port: int | None) -> bool:
        """is_local of a URI with this host (lower-case, without IPv6
        brackets) and port."""
        for a in self.addresses:
            if host == a.host.lower() and (port == a.port or (port is None and a.port == 5060)):
                return True
        return host in self.aliases and (
            port is None or any(port == a.port for a in self.addresses)
        )

    def address_for(self, transport: str) -> LocalAddress:
        for a in self.addresses:
            if a.transport == transport:
                return a
        if transport == "TLS":
            for a in self.addresses:
                if a.transport == "TCP":
                    return a
        return self.addresses[0]

    def record_route_uri(self, transport: str) -> str:
        a = self.address_for(transport)
        host = f"[{a.host}]" if ":" in a.host else a.host
        tp = "" if transport == "UDP" else f";transport={transport.lower()}"
        return f"<sip:{host}:{a.port}{tp};lr>"

    # -- input ------------------------------------------------------------
    def receive(self, message: SipMessage, source: Source, now: float) -> list[Output]:
        if isinstance(message, Request):
            return self._receive_request(message, source, now)
        return self._receive_response(message, now)

    def _receive_request(self, request: Request, source: Source, now: float) -> list[Output]:
        request = _stamp_via(request, source)
        key = server_key(request)
        tx = self.table.servers.get(key)
        if tx is not None:
            return self._run_server(tx, tx.receive(request, now), source)
        if self._retired_servers:
            done = self._retired_servers.get(key)
            if done is not None and done[0] > now and request.method != "ACK":
                _, wire, transport, host, port = done
                # kept as bytes, parsed again for the (rare) retransmission
                return [Transmit(parse_message(wire), Target(transport, host, port))]
        if request.method == "ACK":
            return [IncomingAck(request, source)]
        if request.method == "CANCEL":
            return self._receive_cancel(request, source, now)
        if len(self._servers) >= self.max_in_progress:
            # overload (RFC 3261 §21.5.4): refuse new work cheaply and
            # statelessly, so that memory stays bounded and what is in
            # progress can finish; a retransmission is refused the same way
            self.overloaded += 1
            busy = make_response(request, 503, to_tag=new_tag(), extra=(("Retry-After", "1"),))
            return [Transmit(busy, response_target(busy, source))]
        # §16.3: Max-Forwards and loop checks before anything else
        mf = request.max_forwards
        early: Response | None = None
        if mf is not None and mf <= 0:
            early = make_response(request, 483, to_tag=new_tag())
        elif self._looped(request):
            early = make_response(request, 482, to_tag=new_tag())
        stx = ServerTransaction(request, reliable=source.reliable, timers=self.timers, key=key)
        ctx = next(self._ids)
        sc = _ServerCtx(ctx, stx, source)
        self._servers[ctx] = sc
        self._server_by_key[stx.key] = ctx
        self.table.add_server(stx)
        actions = stx.start(now)
        if early is not None:
            actions = [a for a in actions if not isinstance(a, Deliver)]
            out = self._run_server(stx, actions)
            return out + self.respond(ctx, early, now)
        return self._run_server(stx, actions)

    def _looped(self, request: Request) -> bool:
        digest: str | None = None
        for via in request.vias:
            branch = via.branch or ""
            if branch.startswith(BRANCH_MAGIC) and self._is_local_at(
                _host_bare(via.host), via.port
            ):
                digest = digest or loop_hash(request)
                if branch[7:23] == digest:
                    return True
        return False

    def _receive_cancel(self, cancel: Request, source: Source, now: float) -> list[Output]:
        target = self.table.match_cancel_target(cancel)
        out: list[Output] = []
        if target is None:
            # no transaction: answer 481 (a stateless forward would need the route)
            stx = ServerTransaction(cancel, reliable=source.reliable, timers=self.timers)
            self.table.add_server(stx)
            stx.start(now)
            resp = make_response(cancel, 481, to_tag=new_tag())
            return self._run_server(stx, stx.respond(resp, now), source)
        stx = ServerTransaction(cancel, reliable=source.reliable, timers=self.timers)
        self.table.add_server(stx)
        stx.start(now)
        resp = make_response(cancel, 200, to_tag=new_tag())
        out += self._run_server(stx, stx.respond(resp, now), source)
        ctx_id = self._server_by_key.get(target.key)
        if ctx_id is None:
            return out
        sc = self._servers[ctx_id]
        sc.cancelled = True
        if sc.branch is not None and sc.branch in self._clients:
            cc = self._clients[sc.branch]
            out += self._send_cancel(cc, now)
        if not sc.answered:
            out += self.respond(ctx_id, make_response(target.request, 487, to_tag=new_tag()), now)
        out.append(Cancelled(ctx_id))
        return out

    def _send_cancel(self, cc: _ClientCtx, now: float) -> list[Output]:
        """§9.1: a CANCEL for a pending client transaction (same Via)."""
        req = cc.tx.request
        headers = [("Via", req.get_all("Via")[0])]
        headers += [("Route", r) for r in req.get_all("Route")]
        headers += [
            ("From", req.get("From") or ""),
            ("To", req.get("To") or ""),
            ("Call-ID", req.call_id),
            ("CSeq", f"{req.cseq.seq} CANCEL"),
            ("Max-Forwards", str(DEFAULT_MAX_FORWARDS)),
        ]
        cancel = Request(tuple(headers), b"", method="CANCEL", uri=req.uri)
        tx = ClientTransaction(cancel, reliable=cc.target.reliable, timers=self.timers)
        self._clients[tx.key] = _ClientCtx(tx, cc.target)
        self.table.add_client(tx)
        return self._run_client(tx, tx.start(now), now)

    def _receive_response(self, response: Response, now: float) -> list[Output]:
        tx = self.table.match_response(response)
        if tx is None:
            # RFC 6026 §8.5 (updating §16.7): a response that matches no
            # client transaction is not forwarded (late 2xx of an INVITE are
            # matched in the Accepted state)
            return []
        return self._run_client(tx, tx.receive(response, now), now)

    def _forward_stray_response(
        self, response: Response, response_filter: ResponseFilter | None
    ) -> list[Output]:
        """A 2xx retransmission of an INVITE whose server transaction is
        over (RFC 6026): without our Via and through the filter of the
        branch's server context, sent on statelessly."""
        vias = response.vias
        if len(vias) < 2 or not self._is_local_at(_host_bare(vias[0].host), vias[0].port):
            return []
        upstream = response.remove_first("Via")
        if response_filter is not None:
            upstream = response_filter(upstream)
        return [Transmit(upstream, response_target(upstream, None))]

    # -- TU calls ---------------------------------------------------------
    def request_of(self, ctx: int) -> Request | None:
        sc = self._servers.get(ctx)
        return sc.tx.request if sc else None

    def source_of(self, ctx: int) -> Source | None:
        sc = self._servers.get(ctx)
        return sc.source if sc else None

    def respond(self, ctx: int, response: Response, now: float) -> list[Output]:
        """Send a response on the server transaction ``ctx``."""
        sc = self._servers.get(ctx)
        if sc is None:
            return []
        if response.status >= 200:
            sc.answered = True
        return self._run_server(sc.tx, sc.tx.respond(response, now))

    def reply(
        self,
        ctx: int,
        status: int,
        now: float,
        reason: str | None = None,
        *,
        extra: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
    ) -> list[Output]:
        sc = self._servers.get(ctx)
        if sc is None:
            return []
        resp = make_response(
            sc.tx.request, status, reason, to_tag=new_tag(), extra=extra, body=body
        )
        return self.respond(ctx, resp, now)

    def forward(
        self,
        ctx: int,
        request: Request,
        now: float,
        *,
        record_route: bool = False,
        intercept: bool = False,
        target: Target | None = None,
        response_filter: ResponseFilter | None = None,
    ) -> list[Output]:
        """Proxy ``request`` (the TU may have changed its Request-URI and
        headers) for the server transaction ``ctx`` (§16.6).  Every response
        relayed back upstream goes through ``response_filter`` (a P-CSCF
        removing what a UE may not assert and asserting its identity instead,
        RFC 3325 §5, TS 24.229 §5.2.6.4)."""
        sc = self._servers.get(ctx)
        if sc is None or sc.answered:
            return []
        try:
            base, edits, routes = self._forward_edits(request, sc.source, record_route)
            first = parse_name_addr(routes[0]) if routes else None
        except SipParseError as exc:
            return self.reply(ctx, exc.status, now, exc.reason)
        if first is None or not isinstance(first.uri, SipURI) or first.uri.is_loose_router:
            # the usual: loose routing, the edits and our Via in one copy
            if target is None:
                target = uri_target(base.uri if first is None else first.uri)
            prepared, target = self._edit_with_via(base, edits, target, sc.tx.request)
        else:
            try:
                prepared, hop = self._next_hop(_edit(base, edits), routes)
            except SipParseError as exc:
                return self.reply(ctx, exc.status, now, exc.reason)
            if target is None:
                target = uri_target(hop, default_transport="UDP")
            prepared, target = self._add_via(prepared, target, sc.tx.request)
        sc.intercept = intercept
        sc.response_filter = response_filter
        return self._start_client(prepared, target, now, server_ctx=ctx)

    def forward_ack(self, ack: Request, source: Source, now: float) -> list[Output]:
        """Forward an ACK of a 2xx statelessly along its route (§16.11)."""
        try:
            prepared, hop = self.prepare_forward(ack, source, record_route=False)
            prepared, target = self._add_via(prepared, uri_target(hop), ack)
        except SipParseError:
            return []
        return [Transmit(prepared, target)]

    def prepare_forward(
        self, request: Request, source: Source, *, record_route: bool
    ) -> tuple[Request, URI]:
        """§16.4 and §16.6 steps 1–7: route preprocessing, Max-Forwards,
        Record-Route, and the next hop (loose or strict routing)."""
        base, edits, routes = self._forward_edits(request, source, record_route)
        return self._next_hop(_edit(base, edits), routes)

    def _forward_edits(
        self, request: Request, source: Source, record_route: bool
    ) -> tuple[Request, _Edits, list[str]]:
        """The first part of prepare_forward: the request (its Request-URI
        restored after a strict router), the header edits (our Route entry
        dropped, Max-Forwards, Record-Route) as arguments of
        :meth:`Message.edit`, and the Route values left."""
        routes = request.get_all("Route")
        # §16.4: a strict router before us put our Record-Route in the R-URI
        ruri = request.uri
        if routes and isinstance(ruri, SipURI) and ruri.is_loose_router and self.is_local(ruri):
            last = parse_name_addr(routes[-1]).uri
            idx = [i for i, (n, _) in enumerate(request.headers) if n == "Route"][-1]
            headers = request.headers[:idx] + request.headers[idx + 1 :]
            request = Request(headers, request.body, method=request.method, uri=last)
            routes = request.get_all("Route")
        # drop our own Route entry (loose routing); all three edits in one copy
        ours = bool(routes) and self.is_local(parse_name_addr(routes[0]).uri)
        if ours:
            routes = routes[1:]
        mf = request.max_forwards
        edits: _Edits = (
            ("Route",) if ours else (),
            (("Max-Forwards", str((mf if mf is not None else DEFAULT_MAX_FORWARDS + 1) - 1)),),
            (("Record-Route", self.record_route_uri(source.transport)),) if record_route else (),
        )
        return request, edits, routes

    def _next_hop(self, request: Request, routes: list[str]) -> tuple[Request, URI]:
        """The second part of prepare_forward: the next hop of the edited
        ``request`` given the Route values left (strict routing rewrites
        the request)."""
        if routes:
            first = parse_name_addr(routes[0])
            if isinstance(first.uri, SipURI) and not first.uri.is_loose_router:
                # §16.6 step 6: strict next hop
                rest = [v for v in routes[1:]] + [f"<{request.uri}>"]
                request = request.remove_header("Route")
                for v in rest:
                    request = request.append_header("Route", v)
                request = Request(
                    request.headers, request.body, method=request.method, uri=first.uri
                )
                return request, first.uri
            return request, first.uri
        return request, request.uri

    def _add_via(
        self, request: Request, target: Target, original: Request, *, rport: bool = False
    ) -> tuple[Request, Target]:
        """Our Via on ``request``, and where it really goes: every request
        this node sends passes here, so the size rule of §18.1.1 is applied
        here, once, whoever chose ``target`` (a Route, a URI or a role
        naming a UDP address), and the Via names the transport used.
        ``rport`` (a request this node originates as a UAC) asks for the
        response at the address it came from (RFC 3581 §4)."""
        branch = f"{BRANCH_MAGIC}{loop_hash(original)}.{new_branch()[7:]}"
        out = self._with_via(request, target.transport, branch, rport)
        fitted = fit_transport(target, len(out.encode()))
        if fitted is not target:
            out = self._with_via(request, fitted.transport, branch, rport)
        return out, fitted

    def _edit_with_via(
        self,
        request: Request,
        edits: _Edits,
        target: Target,
        original: Request,
    ) -> tuple[Request, Target]:
        """``request.edit(**edits)`` then :meth:`_add_via`, in one copy: our
        Via is the last field prepended (before the first Via, as
        with_top_via puts it), and the parsed Vias are kept as it keeps
        them."""
        branch = f"{BRANCH_MAGIC}{loop_hash(original)}.{new_branch()[7:]}"
        out = self._edit_via(request, edits, target.transport, branch)
        fitted = fit_transport(target, len(out.encode()))
        if fitted is not target:
            out = self._edit_via(request, edits, fitted.transport, branch)
        return out, fitted

    def _edit_via(
        self,
        request: Request,
        edits: _Edits,
        transport: str,
        branch: str,
    ) -> Request:
        via = self._our_via(transport, branch)
        drop_first, replace, prepend = edits
        out = request.edit(
            drop_first=drop_first, replace=replace, prepend=(*prepend, ("Via", str(via)))
        )
        d = out.__dict__
        d["top_via"] = via
        old = request.__dict__.get("vias")
        if old is not None:
            d["vias"] = [via, *old]
        return out

    def _our_via(self, transport: str, branch: str, rport: bool = False) -> Via:
        """Our Via. A proxy's has no rport: it sends from the address it
        listens at, the sent-by, which is where a response comes (§18.2.2),
        so the next hop need not note the source port (RFC 3581 §4 leaves
        rport to the client); a UAC's (``rport``) over UDP has one."""
        a = self.address_for(transport)
        params: tuple[tuple[str, str | None], ...] = (("branch", branch),)
        if rport and transport == "UDP":
            params += (("rport", None),)
        via = Via(transport, f"[{a.host}]" if ":" in a.host else a.host, a.port, params)
        remember_via(via)  # read again when the response comes back
        return via

    def _with_via(
        self, request: Request, transport: str, branch: str, rport: bool = False
    ) -> Request:
        """``request`` with our Via on top; the parsed Via is kept with it,
        so the client transaction need not parse what we wrote."""
        return request.with_top_via(self._our_via(transport, branch, rport))

    def send_request(
        self, request: Request, now: float, *, target: Target | None = None
    ) -> tuple[int, list[Output]]:
        """Send a new request as a UAC; the request must have no Via (one is
        added).  Returns a handle named by :class:`UacResponse`."""
        if target is None:
            routes = request.routes
            hop = routes[0].uri if routes else request.uri
            target = uri_target(hop)
        handle = next(self._ids)
        if request.get("Max-Forwards") is None:
            request = request.append_header("Max-Forwards", str(DEFAULT_MAX_FORWARDS))
        request, target = self._add_via(request, target, request, rport=True)
        return handle, self._start_client(request, target, now, uac_handle=handle)

    def _start_client(
        self,
        request: Request,
        target: Target,
        now: float,
        *,
        server_ctx: int | None = None,
        uac_handle: int | None = None,
    ) -> list[Output]:
        tx = ClientTransaction(request, reliable=target.reliable, timers=self.timers)
        cc = _ClientCtx(tx, target, server_ctx=server_ctx, uac_handle=uac_handle)
        self._clients[tx.key] = cc
        if server_ctx is not None:
            sc = self._servers[server_ctx]
            sc.branch = tx.key
            sc.branch_target = target
            cc.response_filter = sc.response_filter
        self.table.add_client(tx)
        return self._run_client(tx, tx.start(now), now)

    def transport_error(self, key: TransactionKey, reason: str, now: float) -> list[Output]:
        tx = self.table.clients.get(key)
        if tx is None:
            return []
        return self._run_client(tx, tx.transport_error(reason), now)

    # -- timers -----------------------------------------------------------
    def next_deadline(self) -> float | None:
        deadline = self.table.next_deadline()
        if self._retired and (deadline is None or self._retired[0][0] < deadline):
            return self._retired[0][0]
        return deadline

    def on_timer(self, now: float) -> list[Output]:
        self._expire_retired(now)
        out: list[Output] = []
        for tx in self.table.due(now):
            actions = tx.on_timer(now)
            if isinstance(tx, ClientTransaction):
                out += self._run_client(tx, actions, now)
            else:
                assert isinstance(tx, ServerTransaction)
                out += self._run_server(tx, actions)
        return out

    @property
    def pending(self) -> int:
        """Transactions not yet over, retired server transactions included."""
        return len(self.table) + len(self._retired_servers)

    # -- retirement (see the class docstring) -------------------------------
    def _retire_server(self, tx: ServerTransaction, target: Target) -> None:
        deadline = tx.next_deadline()
        last = tx.last_response
        if deadline is None or last is None or target.flow is not None:
            return
        key = tx.key
        self._retired_servers[key] = (
            deadline,
            last.encode(),
            target.transport,
            target.host,
            target.port,
        )
        self._retired.append((deadline, key))
        if self.table.servers.get(key) is tx:
            del self.table.servers[key]
        ctx_id = self._server_by_key.pop(key, None)
        if ctx_id is not None:
            self._servers.pop(ctx_id, None)

    def _retire_client(self, tx: ClientTransaction) -> None:
        key = tx.key
        if self.table.clients.get(key) is tx:
            del self.table.clients[key]
        self._clients.pop(key, None)

    def _expire_retired(self, now: float) -> None:
        retired = self._retired
        while retired and retired[0][0] <= now:
            deadline, key = retired.popleft()
            done = self._retired_servers.get(key)
            if done is not None and done[0] == deadline:
                del self._retired_servers[key]

    # -- action plumbing --------------------------------------------------
    def _run_server(
        self, tx: ServerTransaction, actions: list[Action], source: Source | None = None
    ) -> list[Output]:
        out: list[Output] = []
        ctx_id = self._server_by_key.get(tx.key)
        sc = self._servers.get(ctx_id) if ctx_id is not None else None
        if sc is not None and sc.tx is not tx:
            sc, ctx_id = None, None
        src = sc.source if sc is not None else source
        for a in actions:
            if isinstance(a, Send):
                assert isinstance(a.message, Response)
                target = response_target(a.message, src)
                out.append(Transmit(a.message, target))
                if (
                    a.message.status >= 200
                    and not tx.is_invite
                    and not tx.reliable
                    and tx.state is State.COMPLETED
                ):
                    self._retire_server(tx, target)
                    return out
            elif isinstance(a, Deliver) and sc is not None:
                assert isinstance(a.message, Request)
                out.append(IncomingRequest(sc.ctx, a.message, sc.source))
            elif isinstance(a, Terminated):
                if ctx_id is not None and sc is not None:
                    del self._servers[ctx_id]
                    del self._server_by_key[tx.key]
        self.table.touch(tx)
        return out

    def _run_client(self, tx: ClientTransaction, actions: list[Action], now: float) -> list[Output]:
        out: list[Output] = []
        cc = self._clients.get(tx.key)
        for a in actions:
            if isinstance(a, Send):
                target = cc.target if cc else Target("UDP", "127.0.0.1", 5060)
                out.append(Transmit(a.message, target, tx.key))
            elif isinstance(a, Deliver) and cc is not None:
                assert isinstance(a.message, Response)
                out += self._branch_response(cc, a.message, now)
            elif isinstance(a, Timeout | TransportFailed) and cc is not None:
                reason = "timeout" if isinstance(a, Timeout) else f"transport: {a.reason}"
                out += self._branch_failed(cc, reason, now)
            elif isinstance(a, Terminated):
                if self._clients.get(tx.key) is cc:
                    self._clients.pop(tx.key, None)
        if not tx.is_invite and not tx.reliable and tx.state is State.COMPLETED:
            self._retire_client(tx)
            return out
        self.table.touch(tx)
        return out

    def _branch_response(self, cc: _ClientCtx, response: Response, now: float) -> list[Output]:
        if cc.uac_handle is not None:
            return [UacResponse(cc.uac_handle, response)]
        if cc.server_ctx is None:
            return []
        sc = self._servers.get(cc.server_ctx)
        if sc is None:
            # the server transaction is gone: a late 2xx of an INVITE goes
            # upstream statelessly (RFC 6026); anything else has been answered
            if cc.tx.is_invite and 200 <= response.status < 300:
                return self._forward_stray_response(response, cc.response_filter)
            return []
        if sc.intercept and response.status >= 200:
            return [BranchResponse(sc.ctx, response)]
        return self.relay_response(sc.ctx, response, now)

    def relay_response(self, ctx: int, response: Response, now: float) -> list[Output]:
        """Send a branch response upstream (§16.7): our Via removed, 100 not
        relayed, a 503 turned into 500."""
        sc = self._servers.get(ctx)
        if sc is None or response.status == 100:
            return []
        upstream = response.remove_first("Via")
        if sc.response_filter is not None:
            upstream = sc.response_filter(upstream)
        if upstream.status == 503:
            upstream = Response(
                upstream.headers, upstream.body, status=500, reason="Server Internal Error"
            )
        if not upstream.vias:
            return []
        return self.respond(ctx, upstream, now)

    def _branch_failed(self, cc: _ClientCtx, reason: str, now: float) -> list[Output]:
        if cc.uac_handle is not None:
            return [UacFailed(cc.uac_handle, reason)]
        if cc.server_ctx is None:
            return []
        sc = self._servers.get(cc.server_ctx)
        if sc is None or sc.answered:
            return []
        if sc.intercept:
            return [BranchFailed(sc.ctx, reason)]
        status = 408 if reason == "timeout" else 500
        text = "Request Timeout" if status == 408 else "Next Hop Unreachable"
        return self.reply(sc.ctx, status, now, text)


def _edit(request: Request, edits: _Edits) -> Request:
    drop_first, replace, prepend = edits
    return request.edit(drop_first=drop_first, replace=replace, prepend=prepend)


def _host_bare(host: str) -> str:
    """A host as SipURI.host_bare gives it: without IPv6 brackets, lower-case."""
    return (host[1:-1] if host.startswith("[") else host).lower()


def _stamp_via(request: Request, source: Source) -> Request:
    """§18.2.1 and RFC 3581: note the source address in the top Via."""
    if not request.has("Via"):
        return request
    via = request.top_via
    changed = via
    if via.host.strip("[]").lower() != source.host.lower():
        changed = changed.with_param("received", source.host)
    if via.has_param("rport") and not via.param("rport"):
        changed = changed.with_param("rport", str(source.port))
        if not changed.has_param("received"):
            changed = changed.with_param("received", source.host)
    if changed is via:
        return request
    remember_via(changed)  # read again when the response comes back
    return request.with_top_via(changed, replace=True)


__all__ = [
    "BranchFailed",
    "BranchResponse",
    "Cancelled",
    "IncomingAck",
    "IncomingRequest",
    "LocalAddress",
    "Output",
    "SipCore",
    "Source",
    "Target",
    "Transmit",
    "UacFailed",
    "UacResponse",
    "fit_transport",
    "loop_hash",
    "response_target",
    "uri_target",
]
