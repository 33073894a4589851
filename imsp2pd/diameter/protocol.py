"""The thin Twisted adapter around :class:`~imsp2pd.diameter.peer.PeerConnection`.

It feeds bytes and ``reactor.seconds()`` in, writes what the state machine
says, keeps one re-armed timer for its next deadline, and hands every other
event to its owner (the :class:`~imsp2pd.diameter.node.DiameterNode`). Any
stream transport works (TCP today; a one-to-one SCTP socket would too).
"""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any, Protocol

from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from imsp2pd.diameter.codes import DisconnectCause
from imsp2pd.diameter.message import Message
from imsp2pd.diameter.peer import (
    Close,
    Event,
    IPAddress,
    PeerConnection,
    PeerInfo,
    Role,
    Send,
)
from imsp2pd.local_hops import LocalHops


class ConnectionOwner(Protocol):
    """What a :class:`DiameterProtocol` reports to (the node)."""

    reactor: Any
    #: the process's Diameter local hops, or None
    local_hops: LocalHops[Message] | None

    def make_connection(
        self, proto: DiameterProtocol, local_addresses: tuple[IPAddress, ...]
    ) -> PeerConnection: ...

    def handle_events(self, proto: DiameterProtocol, events: list[Event]) -> None: ...


class DiameterProtocol(TwistedProtocol):
    log = Logger()

    def __init__(self, owner: ConnectionOwner, role: Role, tap: Any = None) -> None:
        self.owner = owner
        self.role = role
        self.conn: PeerConnection | None = None
        self._timer: Any = None  # IDelayedCall
        self._timer_at: float | None = None
        #: Optional callable(direction, bytes, protocol): sees every byte in ("in") and
        #: out ("out"), for captures and conformance tests.
        self.tap = tap
        self.closed = False
        #: (host, port) of the other end, once connected (when the transport says)
        self.peer_address: tuple[str, int] | None = None
        #: our end's (host, port), while it is one of the process's local hops
        self._hop_address: tuple[str, int] | None = None

    @property
    def peer(self) -> PeerInfo | None:
        return self.conn.peer if self.conn is not None else None

    def now(self) -> float:
        return float(self.owner.reactor.seconds())

    # Twisted side -------------------------------------------------------------

    def connectionMade(self) -> None:
        transport: Any = self.transport
        if hasattr(transport, "setTcpNoDelay"):
            # Request/answer traffic: Nagle's algorithm only adds delay.
            transport.setTcpNoDelay(True)
        addresses: tuple[IPAddress, ...] = ()
        try:
            addresses = (ip_address(transport.getHost().host),)
        except (AttributeError, ValueError):
            addresses = ()
        hops = self.owner.local_hops
        if hops is not None:
            self._local_hop(transport, hops)
        self.conn = self.owner.make_connection(self, addresses)
        self._apply(self.conn.start(self.now()))

    def dataReceived(self, data: bytes) -> None:
        if self.conn is None:
            return
        if self.tap is not None:
            self.tap("in", data, self)
        self._apply(self.conn.data_received(data, self.now()))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._hop_address is not None and self.owner.local_hops is not None:
            self.owner.local_hops.remove_address(*self._hop_address)
            self._hop_address = None
        if self.conn is not None:
            self._apply(
                self.conn.connection_lost(
                    self.now(), reason.getErrorMessage() if reason else "connection lost"
                )
            )

    # Inputs from the node -----------------------------------------------------

    def send_request(self, message: Message, timeout: float | None = None) -> Message:
        assert self.conn is not None
        sent, events = self.conn.send_request(message, self.now(), timeout)
        self._apply(events)
        return sent

    def send_answer(self, message: Message | bytes, data: bytes | None = None) -> None:
        """Send an answer (``data``: its encoding, when the caller has it)."""
        if self.conn is not None and not self.closed:
            self._apply(self.conn.send_answer(message, data))

    def disconnect(self, cause: DisconnectCause = DisconnectCause.REBOOTING) -> None:
        if self.conn is not None and not self.closed:
            self._apply(self.conn.disconnect(self.now(), cause))

    # Plumbing -----------------------------------------------------------------

    def _local_hop(self, transport: Any, hops: LocalHops[Message]) -> None:
        """Note the peer's address; a connection we dialed makes its own end
        an endpoint of this process while it lasts (the node registers the
        ports it listens on: the accepted connections share them)."""
        try:
            peer, host = transport.getPeer(), transport.getHost()
            self.peer_address = (str(peer.host), int(peer.port))
            ours = (str(host.host), int(host.port))
        except (AttributeError, TypeError, ValueError):
            return
        if self.role is Role.INITIATOR:
            hops.add_address(*ours)
            self._hop_address = ours

    def _apply(self, events: list[Event]) -> None:
        rest: list[Event] = []
        transport: Any = self.transport
        for event in events:
            if isinstance(event, Send):
                if not self.closed:
                    if self.tap is not None:
                        self.tap("out", event.data, self)
                    transport.write(event.data)
            elif isinstance(event, Close):
                self.log.info("closing Diameter connection: {reason}", reason=event.reason)
                if not self.closed:
                    transport.loseConnection()
                rest.append(event)
            else:
                rest.append(event)
        if rest:
            self.owner.handle_events(self, rest)
        self._rearm()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.conn is not None:
            self._apply(self.conn.on_timer(self.now()))

    def _rearm(self) -> None:
        if self.conn is None or self.closed:
            return
        deadline = self.conn.next_deadline()
        if deadline is None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            self._timer_at = None
            return
        if self._timer is not None and self._timer.active() and self._timer_at is not None:
            if self._timer_at <= deadline:
                return  # fires early and re-checks; cheaper than re-arming per message
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.owner.reactor.callLater(max(0.0, deadline - self.now()), self._on_timer)
