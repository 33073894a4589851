"""A Diameter node on Twisted: listening, connecting to peers, routing, failover.

:class:`DiameterNode` owns the connections (one :class:`DiameterProtocol`
each), routes requests by Destination-Host and Destination-Realm to open
peers that negotiated the application, fails requests over (with the T bit)
when the watchdog suspects a peer or its connection drops, reconnects to
configured peers with exponential backoff, detects duplicate requests, and
hands incoming application requests to a handler. The reactor is injected.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ClientFactory, Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from imsp2pd.diameter.avp import Avp
from imsp2pd.diameter.codes import AvpCode, DisconnectCause, Flag, ResultCode
from imsp2pd.diameter.dictionary import Dictionary, default_dictionary
from imsp2pd.diameter.errors import EncodeError, PeerUnavailable, RequestTimeout
from imsp2pd.diameter.message import Message, answer, decode_message
from imsp2pd.diameter.peer import (
    AnswerReceived,
    DuplicateCache,
    EndToEndIds,
    Event,
    IncomingRequest,
    IPAddress,
    LocalConfig,
    PeerConnection,
    PeerDown,
    PeerInfo,
    PeerUp,
    ProtocolViolation,
    RequestsOrphaned,
    RequestTimedOut,
    Role,
    WatchdogChanged,
    WatchdogState,
)
from imsp2pd.diameter.protocol import DiameterProtocol
from imsp2pd.local_hops import LocalHops, for_process
from imsp2pd.metrics import Registry

_DESTINATION_HOST = int(AvpCode.DESTINATION_HOST)
_DESTINATION_REALM = int(AvpCode.DESTINATION_REALM)

#: A request handler: the request and who sent it -> the answer (or a Deferred of it).
Handler = Callable[[Message, PeerInfo], "Message | defer.Deferred[Message]"]


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """A peer we know: its identity, where to reach it, and whether we dial it."""

    host: str
    realm: str
    address: str = "127.0.0.1"
    port: int = 3868
    connect: bool = True


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt))
        return base * rng.uniform(0.8, 1.0)


@dataclass(slots=True)
class _Outgoing:
    deferred: defer.Deferred[Message]
    message: Message
    timeout: float | None
    tried: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Dialer:
    config: PeerConfig
    attempt: int = 0
    call: Any = None  # IDelayedCall
    connecting: bool = False
    ever_up: bool = False


class NodeMetrics:
    """The Prometheus metrics of one node, on the process's registry.

    Every series carries the node's Origin-Host (``node``), so several nodes
    in one process (``--role=all``) share the metric names.
    """

    def __init__(self, registry: Registry, node: str) -> None:
        self.node = node
        self.peers_open = registry.gauge(
            "imsp2pd_diameter_peer_open",
            "1 while the Diameter connection to the peer is open, 0 after it closed",
            ("node", "peer"),
        )
        self.requests_sent = registry.counter(
            "imsp2pd_diameter_requests_sent_total",
            "Diameter application requests sent (failovers included)",
            ("node", "command"),
        )
        self.requests_received = registry.counter(
            "imsp2pd_diameter_requests_received_total",
            "Diameter application requests received (duplicates included)",
            ("node", "command"),
        )
        self.answers = registry.counter(
            "imsp2pd_diameter_answers_total",
            "Diameter answers to application requests, by direction (in: received, out: sent),"
            " command and Result-Code (or Experimental-Result-Code; 0 for none)",
            ("node", "direction", "command", "result"),
        )
        self.timeouts = registry.counter(
            "imsp2pd_diameter_request_timeouts_total",
            "Diameter requests that got no answer in time",
            ("node", "peer"),
        )
        self.failovers = registry.counter(
            "imsp2pd_diameter_failovers_total",
            "Diameter requests failed over to another peer (or failed for want of one)",
            ("node",),
        )
        self.watchdog = registry.counter(
            "imsp2pd_diameter_watchdog_changes_total",
            "Watchdog state changes (RFC 3539) of a peer, by the state entered",
            ("node", "peer", "state"),
        )
        # The series of each command (and direction and result): made once, not per
        # message. As many as the series themselves.
        self._sent: dict[int, tuple[str, ...]] = {}
        self._received: dict[int, tuple[str, ...]] = {}
        self._answers: dict[tuple[str, int, int], tuple[str, ...]] = {}

    def peer(self, peer: str, is_open: bool) -> None:
        self.peers_open.set(1.0 if is_open else 0.0, node=self.node, peer=peer)

    def sent(self, msg: Message) -> None:
        series = self._sent.get(msg.code)
        if series is None:
            series = self._sent[msg.code] = self.requests_sent.series(
                node=self.node, command=str(msg.code)
            )
        self.requests_sent.inc_series(series)

    def received(self, msg: Message) -> None:
        series = self._received.get(msg.code)
        if series is None:
            series = self._received[msg.code] = self.requests_received.series(
                node=self.node, command=str(msg.code)
            )
        self.requests_received.inc_series(series)

    def answer(self, direction: str, msg: Message) -> None:
        result = msg.result_code or 0
        key = (direction, msg.code, result)
        series = self._answers.get(key)
        if series is None:
            series = self._answers[key] = self.answers.series(
                node=self.node, direction=direction, command=str(msg.code), result=str(result)
            )
        self.answers.inc_series(series)

    def timeout(self, peer: str) -> None:
        self.timeouts.inc(node=self.node, peer=peer)

    def failover(self) -> None:
        self.failovers.inc(node=self.node)

    def watchdog_changed(self, peer: str, state: WatchdogState) -> None:
        self.watchdog.inc(node=self.node, peer=peer, state=state.value)


def _decode(data: bytes) -> Message:
    return decode_message(data, default_dictionary())


def diameter_local_hops(hub: Any) -> LocalHops[Message]:
    """The process's Diameter :class:`~imsp2pd.local_hops.LocalHops` (for
    nodes on the default dictionary), for :class:`DiameterNode`'s ``local_hops``."""
    return for_process(hub, "diameter", _decode)


class _ClientFactory(ClientFactory):
    def __init__(self, node: DiameterNode, dialer: _Dialer) -> None:
        self.node = node
        self.dialer = dialer

    def buildProtocol(self, addr: Any) -> DiameterProtocol:
        proto = DiameterProtocol(self.node, Role.INITIATOR, tap=self.node.tap)
        proto.dialer = self.dialer  # type: ignore[attr-defined]
        return proto

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.node._dial_failed(self.dialer, reason.getErrorMessage())

    def clientConnectionLost(self, connector: Any, reason: Failure) -> None:
        pass  # the protocol's PeerDown already scheduled what follows


class _ServerFactory(Factory):
    def __init__(self, node: DiameterNode) -> None:
        self.node = node

    def buildProtocol(self, addr: Any) -> DiameterProtocol:
        return DiameterProtocol(self.node, Role.RESPONDER, tap=self.node.tap)


class DiameterNode:
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        local: LocalConfig,
        *,
        peers: Sequence[PeerConfig] = (),
        handler: Handler | None = None,
        dictionary: Dictionary | None = None,
        accept_unknown_peers: bool = True,
        backoff: Backoff = Backoff(),
        rng: random.Random | None = None,
        duplicate_lifetime: float = 60.0,
        tap: Callable[[str, bytes, DiameterProtocol], None] | None = None,
        metrics: Registry | None = None,
        local_hops: LocalHops[Message] | None = None,
    ) -> None:
        """``local_hops``: the process's Diameter :class:`LocalHops`
        (:func:`diameter_local_hops`), shared by its nodes (which must use one
        dictionary, the check's): messages between them are still sent and
        received, but not decoded again. None: every frame is decoded."""
        self.reactor = reactor
        self.local = local
        self.handler = handler
        self.dictionary = dictionary or default_dictionary()
        self.backoff = backoff
        self.tap = tap
        self.local_hops = local_hops
        #: Prometheus metrics when a registry was given (``hub.metrics`` in a role).
        self.metrics = NodeMetrics(metrics, local.origin_host) if metrics is not None else None
        self._rng = rng or random.Random()
        self._peers = list(peers)
        self._known = {p.host.lower() for p in self._peers}
        #: Configured peers come first, in their order (then the least loaded).
        self._order = {p.host.lower(): i for i, p in enumerate(self._peers)}
        self._accept_unknown = accept_unknown_peers
        self._e2e = EndToEndIds(reactor.seconds(), self._rng)
        self._open: dict[str, DiameterProtocol] = {}
        self._protocols: set[DiameterProtocol] = set()
        self._outgoing: dict[tuple[int, int], _Outgoing] = {}
        self._dialers: dict[str, _Dialer] = {}
        self._duplicates = DuplicateCache(lifetime=duplicate_lifetime)
        self._ports: list[Any] = []  # IListeningPort
        #: the addresses we listen on, endpoints of the process for local_hops
        self._hop_addresses: list[tuple[str, int]] = []
        self._running = False
        self._closed_waiters: list[defer.Deferred[None]] = []
        self.on_peer_up: list[Callable[[PeerInfo], None]] = []
        self.on_peer_down: list[Callable[[str, str], None]] = []

    # Lifecycle ------------------------------------------------------------------

    def listen(self, port: int, interface: str = "127.0.0.1") -> IListeningPort:
        listening: IListeningPort = self.reactor.listenTCP(
            port, _ServerFactory(self), interface=interface
        )
        self._ports.append(listening)
        if self.local_hops is not None:
            try:
                where: Any = listening.getHost()  # type: ignore[misc]
                address = (str(where.host), int(where.port))
            except (AttributeError, TypeError, ValueError):
                return listening
            self.local_hops.add_address(*address)
            self._hop_addresses.append(address)
        return listening

    def start(self) -> None:
        """Dial every configured peer with ``connect`` (and keep doing so)."""
        self._running = True
        for cfg in self._peers:
            if cfg.connect and cfg.host.lower() not in self._dialers:
                dialer = _Dialer(cfg)
                self._dialers[cfg.host.lower()] = dialer
                self._dial(dialer)

    def stop(self, timeout: float = 2.0) -> defer.Deferred[None]:
        """DPR every open connection, stop listening and dialing; fires when all are closed."""
        self._running = False
        for dialer in self._dialers.values():
            if dialer.call is not None and dialer.call.active():
                dialer.call.cancel()
        waits: list[defer.Deferred[Any]] = []
        for port in self._ports:
            waits.append(defer.maybeDeferred(port.stopListening))
        self._ports = []
        if self.local_hops is not None:
            for address in self._hop_addresses:
                self.local_hops.remove_address(*address)
        self._hop_addresses = []
        for proto in list(self._protocols):
            if proto.conn is not None and proto.conn.is_open:
                proto.disconnect(DisconnectCause.REBOOTING)
            elif not proto.closed and proto.transport is not None:
                transport: Any = proto.transport
                transport.loseConnection()
        if self._protocols:
            closed: defer.Deferred[None] = defer.Deferred()
            self._closed_waiters.append(closed)
            closed.addTimeout(timeout, self.reactor, onTimeoutCancel=lambda *a: self._abort_all())
            waits.append(closed)
        return defer.gatherResults(waits).addCallback(lambda _: None)

    def _abort_all(self) -> None:
        for proto in list(self._protocols):
            transport: Any = proto.transport
            if transport is not None:
                transport.abortConnection()

    # Requests ---------------------------------------------------------------------

    def open_peers(self) -> list[PeerInfo]:
        return [p.peer for p in self._open.values() if p.peer is not None]

    def is_available(self, host: str | None = None, realm: str | None = None) -> bool:
        return any(
            p.conn is not None
            and p.conn.available
            and p.peer is not None
            and (host is None or p.peer.origin_host.lower() == host.lower())
            and (realm is None or p.peer.origin_realm.lower() == realm.lower())
            for p in self._open.values()
        )

    def request(self, message: Message, timeout: float | None = None) -> defer.Deferred[Message]:
        """Route and send a request; fires with the answer.

        Fails with :class:`PeerUnavailable` when no open peer can take it (now,
        or after failover ran out of peers) and :class:`RequestTimeout` when
        the answer does not come in time.
        """
        out = _Outgoing(defer.Deferred(), message, timeout)
        self._dispatch(out)
        return out.deferred

    def answer(
        self,
        req: Message,
        result_code: int | None = ResultCode.SUCCESS,
        avps: Iterable[Avp] = (),
        **kw: Any,
    ) -> Message:
        """An answer to ``req`` from this node (see :func:`message.answer`)."""
        return answer(
            req,
            self.local.origin_host,
            self.local.origin_realm,
            result_code,
            avps,
            dictionary=self.dictionary,
            **kw,
        )

    def _dispatch(self, out: _Outgoing) -> None:
        proto = self._route(out.message, out.tried)
        if proto is None:
            where = out.message.get_str(AvpCode.DESTINATION_REALM) or "any realm"
            out.deferred.errback(
                PeerUnavailable(
                    f"no open Diameter peer for application {out.message.application} in {where}"
                )
            )
            return
        message = out.message
        if out.tried:
            message = Message(
                message.code,
                message.application,
                message.flags | Flag.RETRANSMITTED,
                0,
                message.end_to_end,
                message.avps,
            )
        assert proto.peer is not None
        out.tried.add(proto.peer.origin_host.lower())
        try:
            sent = proto.send_request(message, out.timeout)
        except PeerUnavailable as exc:
            out.deferred.errback(exc)
            return
        out.message = sent
        self._outgoing[(id(proto), sent.hop_by_hop)] = out
        if self.metrics is not None:
            self.metrics.sent(sent)

    def _route(self, message: Message, exclude: set[str]) -> DiameterProtocol | None:
        dest_host = dest_realm = ""
        for avp in message.avps:  # one pass instead of a search per AVP; the first counts
            if not avp.vendor and isinstance(avp.value, str):
                if avp.code == _DESTINATION_HOST and not dest_host:
                    dest_host = avp.value.lower()
                elif avp.code == _DESTINATION_REALM and not dest_realm:
                    dest_realm = avp.value.lower()
        application = message.application
        best: DiameterProtocol | None = None
        best_rank = (0, 0)
        order, unknown = self._order, len(self._order)
        for host, proto in self._open.items():
            conn, peer = proto.conn, proto.peer
            if conn is None or peer is None or not conn.available or host in exclude:
                continue
            apps = peer.applications
            if application not in apps and 0xFFFFFFFF not in apps:
                continue
            if dest_realm and peer.origin_realm.lower() != dest_realm:
                continue
            if dest_host and host == dest_host:
                return proto
            rank = (order.get(host, unknown), conn.pending_count)
            if best is None or rank < best_rank:
                best, best_rank = proto, rank
        return best

    # Events from connections --------------------------------------------------------

    def make_connection(
        self, proto: DiameterProtocol, local_addresses: tuple[IPAddress, ...]
    ) -> PeerConnection:
        self._protocols.add(proto)
        dialer: _Dialer | None = getattr(proto, "dialer", None)
        reopen = bool(dialer and dialer.ever_up)
        return PeerConnection(
            self.local,
            proto.role,
            self.reactor.seconds(),
            dictionary=self.dictionary,
            end_to_end=self._e2e,
            rng=self._rng,
            accept_peer=self._accept_peer,
            reopen=reopen,
            local_addresses=local_addresses or None,
            local_hops=self.local_hops,
            peer_address=proto.peer_address,
        )

    def _accept_peer(self, host: str, realm: str) -> bool:
        return self._accept_unknown or host.lower() in self._known

    def handle_events(self, proto: DiameterProtocol, events: list[Event]) -> None:
        for event in events:
            try:
                self._event(proto, event)
            except Exception:  # a bug must not take the reactor down
                self.log.failure("error handling Diameter event {event!r}", event=event)

    def _event(self, proto: DiameterProtocol, event: Event) -> None:
        if isinstance(event, AnswerReceived):
            out = self._outgoing.pop((id(proto), event.request.hop_by_hop), None)
            if self.metrics is not None:
                self.metrics.answer("in", event.answer)
            if out is not None:
                out.deferred.callback(event.answer)
        elif isinstance(event, IncomingRequest):
            self._incoming(proto, event.message)
        elif isinstance(event, RequestTimedOut):
            out = self._outgoing.pop((id(proto), event.request.hop_by_hop), None)
            if self.metrics is not None:
                self.metrics.timeout(proto.peer.origin_host.lower() if proto.peer else "?")
            if out is not None:
                out.deferred.errback(
                    RequestTimeout(
                        f"no answer from {proto.peer.origin_host if proto.peer else 'peer'}"
                    )
                )
        elif isinstance(event, RequestsOrphaned):
            for req in event.requests:
                out = self._outgoing.pop((id(proto), req.hop_by_hop), None)
                if out is not None:
                    out.message = Message(
                        req.code, req.application, req.flags, 0, req.end_to_end, req.avps
                    )
                    self.log.info("failing over request ({reason})", reason=event.reason)
                    if self.metrics is not None:
                        self.metrics.failover()
                    self._dispatch(out)
        elif isinstance(event, PeerUp):
            self._peer_up(proto, event.peer)
        elif isinstance(event, PeerDown):
            self._peer_down(proto, event)
        elif isinstance(event, WatchdogChanged):
            host = proto.peer.origin_host if proto.peer else "?"
            self.log.info("watchdog of {host}: {state}", host=host, state=event.state.value)
            if self.metrics is not None:
                self.metrics.watchdog_changed(host.lower(), event.state)
            if event.state is WatchdogState.OKAY:
                dialer = getattr(proto, "dialer", None)
                if dialer is not None:
                    dialer.attempt = 0
        elif isinstance(event, ProtocolViolation):
            self.log.info("Diameter protocol violation: {reason}", reason=event.reason)

    def _peer_up(self, proto: DiameterProtocol, info: PeerInfo) -> None:
        host = info.origin_host.lower()
        existing = self._open.get(host)
        if existing is not None and existing is not proto and not existing.closed:
            # Election (RFC 6733 5.6.4) for two connections to one peer: a peer that
            # reconnected made the old one stale; otherwise the initiator with the
            # higher Origin-Host keeps its connection.
            if existing.role is proto.role:
                loser = existing
            else:
                ours_wins = self.local.origin_host.lower() > host
                initiator = proto if proto.role is Role.INITIATOR else existing
                loser = existing if (initiator is proto) == ours_wins else proto
            self.log.info("two connections to {host}: closing one", host=host)
            if loser is proto:
                proto.disconnect(DisconnectCause.BUSY)
                return
            existing.disconnect(DisconnectCause.BUSY)
        self._open[host] = proto
        if self.metrics is not None:
            self.metrics.peer(host, True)
        dialer = getattr(proto, "dialer", None)
        if dialer is not None:
            dialer.ever_up = True
            dialer.attempt = 0
        self.log.info(
            "Diameter peer {host} is up ({product})",
            host=info.origin_host,
            product=info.product_name,
        )
        for callback in self.on_peer_up:
            callback(info)

    def _peer_down(self, proto: DiameterProtocol, event: PeerDown) -> None:
        self._protocols.discard(proto)
        host = proto.peer.origin_host.lower() if proto.peer else None
        if host is not None and self._open.get(host) is proto:
            del self._open[host]
            if self.metrics is not None:
                self.metrics.peer(host, False)
            self.log.info("Diameter peer {host} is down: {reason}", host=host, reason=event.reason)
            for callback in self.on_peer_down:
                callback(host, event.reason)
        for key in [k for k in self._outgoing if k[0] == id(proto)]:
            out = self._outgoing.pop(key)
            if self.metrics is not None:
                self.metrics.failover()
            self._dispatch(out)
        own: _Dialer | None = getattr(proto, "dialer", None)
        if own is not None:
            own.connecting = False
        dialer = own or (self._dialers.get(host) if host is not None else None)
        if dialer is not None and dialer.config.host.lower() not in self._open:
            self._schedule_dial(
                dialer, slow=event.cause is DisconnectCause.DO_NOT_WANT_TO_TALK_TO_YOU
            )
        if not self._protocols:
            waiters, self._closed_waiters = self._closed_waiters, []
            for w in waiters:
                if not w.called:
                    w.callback(None)

    def _incoming(self, proto: DiameterProtocol, req: Message) -> None:
        if self.metrics is not None:
            self.metrics.received(req)
        now = self.reactor.seconds()
        duplicate, cached = self._duplicates.check(req, now)
        if duplicate:
            if cached is not None:
                proto.send_answer(cached)
            return
        peer = proto.peer
        if self.handler is None or peer is None:
            self._send_answer(
                proto,
                self.answer(
                    req, ResultCode.COMMAND_UNSUPPORTED, error_message="no application here"
                ),
            )
            return
        try:
            result = self.handler(req, peer)
        except Exception:
            self._handler_failed(Failure(), proto, req)
            return
        if isinstance(result, Message):
            self._answered(result, proto, req)
        elif isinstance(result, defer.Deferred):
            # A Deferred that already fired runs these at once (no closures per message).
            result.addCallbacks(
                self._answered,
                self._handler_failed,
                callbackArgs=(proto, req),
                errbackArgs=(proto, req),
            )
        else:
            self._handler_failed(
                Failure(TypeError(f"handler returned {type(result).__name__}")), proto, req
            )

    def _answered(self, ans: Message, proto: DiameterProtocol, req: Message) -> None:
        try:
            data = ans.encode()  # once: for the wire and for resending to duplicates
        except EncodeError as exc:
            self._handler_failed(Failure(exc), proto, req)
            return
        self._duplicates.answered(req, data)
        if self.metrics is not None:
            self.metrics.answer("out", ans)
        proto.send_answer(ans, data)

    def _handler_failed(self, f: Failure, proto: DiameterProtocol, req: Message) -> None:
        self.log.failure("Diameter handler failed", failure=f)
        self._duplicates.forget(req)
        self._send_answer(
            proto, self.answer(req, ResultCode.UNABLE_TO_COMPLY, error_message="internal error")
        )

    def _send_answer(self, proto: DiameterProtocol, ans: Message) -> None:
        if self.metrics is not None:
            self.metrics.answer("out", ans)
        proto.send_answer(ans)

    # Dialing ------------------------------------------------------------------------

    def _dial(self, dialer: _Dialer) -> None:
        dialer.call = None
        if not self._running or dialer.connecting or dialer.config.host.lower() in self._open:
            return
        dialer.connecting = True
        cfg = dialer.config
        self.reactor.connectTCP(cfg.address, cfg.port, _ClientFactory(self, dialer), timeout=10)

    def _dial_failed(self, dialer: _Dialer, reason: str) -> None:
        dialer.connecting = False
        self.log.info(
            "cannot reach Diameter peer {host} at {address}:{port}: {reason}",
            host=dialer.config.host,
            address=dialer.config.address,
            port=dialer.config.port,
            reason=reason,
        )
        self._schedule_dial(dialer)

    def _schedule_dial(self, dialer: _Dialer, slow: bool = False) -> None:
        if not self._running or (dialer.call is not None and dialer.call.active()):
            return
        delay = self.backoff.maximum if slow else self.backoff.delay(dialer.attempt, self._rng)
        dialer.attempt += 1
        dialer.call = self.reactor.callLater(delay, self._dial, dialer)
