"""Thin Twisted transports (UDP, TCP, TLS) for a :class:`SipCore`.

:class:`SipNode` owns the sockets of one SIP node: it parses what arrives
(answering a malformed request with the 400 or 513 the parser names, and
dropping what cannot be answered), feeds the core with ``reactor.seconds()``,
hands the core's events to the transaction user, sends what the core says to
send (reusing the flow a peer connected over, connecting when needed), and
keeps one timer armed at the core's next deadline.  It holds no protocol
logic of its own.

A transaction user is any object with ``on_event(event, now) -> outputs``;
it acts through the core (``node.core.forward(...)`` etc.) and returns the
outputs, or later hands outputs to :meth:`SipNode.submit` when it had to wait
(a Diameter answer, say).
"""

from __future__ import annotations

import errno
import itertools
import socket
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.internet import protocol
from twisted.logger import Logger

from imsp2pd.local_hops import LocalHops
from imsp2pd.sip.errors import SipParseError
from imsp2pd.sip.message import Message, Response
from imsp2pd.sip.parser import (
    MAX_MESSAGE,
    FramedMessage,
    FrameError,
    KeepAlive,
    StreamFramer,
    error_response,
    head_error_response,
    parse_message,
)
from imsp2pd.sip.proxy import Output, SipCore, Source, Target, Transmit, response_target

log = Logger()

MAX_DATAGRAM = 65535
#: the UDP socket buffers asked for (the kernel caps them at net.core.rmem_max
#: / wmem_max): the default ~200 kB holds only ~250 SIP datagrams, which a
#: burst of a few thousand requests a second overflows in a garbage
#: collection or a slow callback, and every datagram lost is a retransmission
UDP_BUFFER = 4 << 20


class TransactionUser(Protocol):
    def on_event(self, event: Output, now: float) -> list[Output]: ...


class _Datagram(protocol.DatagramProtocol):
    def __init__(self, node: SipNode) -> None:
        self.node = node

    @property
    def tr(self) -> Any:
        return self.transport

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.node._datagram(self, datagram, addr[0], addr[1])


class _Stream(protocol.Protocol):
    """One TCP or TLS connection; ``flow`` is its number in the node."""

    def __init__(self, node: SipNode, transport_name: str) -> None:
        self.node = node
        self.transport_name = transport_name
        self.framer = StreamFramer(node.max_message)
        self.flow = 0
        self.peer: tuple[str, int] = ("", 0)
        self.pending: list[Transmit] = []
        self.connected = False

    @property
    def tr(self) -> Any:
        return self.transport

    def connectionMade(self) -> None:
        peer = self.tr.getPeer()
        self.peer = (getattr(peer, "host", ""), getattr(peer, "port", 0))
        self.connected = True
        self.node._flow_up(self)
        pending, self.pending = self.pending, []
        for item in pending:
            self.node._write_stream(self, item)

    def dataReceived(self, data: bytes) -> None:
        for event in self.framer.feed(data):
            if isinstance(event, FramedMessage):
                self.node._stream_message(self, event.data)
            elif isinstance(event, KeepAlive):
                self.tr.write(b"\r\n")
            elif isinstance(event, FrameError):
                self.node.counts["bad"] += 1
                resp = (
                    head_error_response(event.head, event.status, event.reason)
                    if event.head
                    else None
                )
                if resp is not None:
                    self.tr.write(resp.encode())
                if event.fatal:
                    self.tr.loseConnection()
                    return

    def connectionLost(self, reason: Any = None) -> None:
        self.connected = False
        self.node._flow_down(self, reason)


class _StreamFactory(protocol.Factory):
    def __init__(self, node: SipNode, transport_name: str) -> None:
        self.node = node
        self.transport_name = transport_name

    def buildProtocol(self, addr: Any) -> _Stream:
        return _Stream(self.node, self.transport_name)


class _ClientFactory(protocol.ClientFactory):
    def __init__(self, node: SipNode, stream: _Stream, key: tuple[str, str, int]) -> None:
        self.node = node
        self.stream = stream
        self.key = key

    def buildProtocol(self, addr: Any) -> _Stream:
        return self.stream

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.node._connect_failed(self.stream, self.key, reason.getErrorMessage())


class SipNode:
    """The sockets of one SIP node around a :class:`SipCore`."""

    def __init__(
        self,
        reactor: Any,
        core: SipCore,
        tu: TransactionUser,
        *,
        max_message: int = MAX_MESSAGE,
        client_tls: Callable[[str], Any] | None = None,
        local_hops: LocalHops[Message] | None = None,
    ) -> None:
        self.reactor = reactor
        self.core = core
        self.tu = tu
        self.max_message = max_message
        self.client_tls = client_tls
        #: what this process's nodes send each other over UDP, kept parsed
        #: (see imsp2pd.local_hops): the address this node listens at is
        #: added while it listens
        self.local_hops = local_hops
        self._udp_address: tuple[str, int] | None = None
        self._udp: _Datagram | None = None
        # the listening UDP port's socket, written to directly (Twisted's
        # Port.write checks the address with five string parses a datagram)
        self._udp_port: Any = None
        self._udp_socket: socket.socket | None = None
        self._udp_family = socket.AF_INET
        #: destination hosts known to be addresses of the socket's family
        self._udp_hosts: set[str] = set()
        #: datagrams to send when the reactor is done with what was ready
        self._udp_out: list[tuple[bytes, tuple[str, int], Transmit | None]] = []
        self._flush_call: Any = None
        self._ports: list[Any] = []
        self._flows: dict[int, _Stream] = {}
        self._by_addr: dict[tuple[str, str, int], int] = {}
        self._connecting: dict[tuple[str, str, int], _Stream] = {}
        self._flow_ids = itertools.count(1)
        self._timer: Any = None
        self._timer_at: float | None = None
        self.counts = {"in": 0, "out": 0, "bad": 0, "dropped": 0}
        self.flow_listeners: list[Callable[[int], None]] = []
        self._stopped = False

    @property
    def stats(self) -> dict[str, int]:
        """Messages in, out, malformed and dropped, requests refused for
        overload and transactions pending (what /health shows per node)."""
        return {
            **self.counts,
            "overloaded": self.core.overloaded,
            "pending": self.core.pending,
        }

    # -- listening --------------------------------------------------------
    def listen_udp(self, port: int, interface: str = "127.0.0.1") -> Any:
        self._udp = _Datagram(self)
        p = self.reactor.listenUDP(port, self._udp, interface=interface, maxPacketSize=MAX_DATAGRAM)
        self._ports.append(p)
        sock = getattr(p, "socket", None)
        if isinstance(sock, socket.socket):
            self._udp_port, self._udp_socket, self._udp_family = p, sock, sock.family
            if self.local_hops is not None:
                host, bound = sock.getsockname()[:2]
                self._udp_address = (host, bound)
                self.local_hops.add_address(host, bound)
        handle = getattr(p, "getHandle", None)
        if handle is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    handle().setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER)
                except (OSError, AttributeError):  # best effort: a memory reactor has none
                    pass
        return p

    def listen_tcp(self, port: int, interface: str = "127.0.0.1") -> Any:
        p = self.reactor.listenTCP(port, _StreamFactory(self, "TCP"), interface=interface)
        self._ports.append(p)
        return p

    def listen_tls(self, port: int, options: Any, interface: str = "127.0.0.1") -> Any:
        p = self.reactor.listenSSL(port, _StreamFactory(self, "TLS"), options, interface=interface)
        self._ports.append(p)
        return p

    def stop(self) -> Any:
        """Close listeners and connections; returns a Deferred (listeners)."""
        from twisted.internet.defer import gatherResults, maybeDeferred

        self._stopped = True
        if self.local_hops is not None and self._udp_address is not None:
            self.local_hops.remove_address(*self._udp_address)
            self._udp_address = None
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
            self._flush_udp()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for stream in list(self._flows.values()) + list(self._connecting.values()):
            if stream.transport is not None:
                stream.tr.loseConnection()
        ports, self._ports = self._ports, []
        return gatherResults([maybeDeferred(p.stopListening) for p in ports])

    def flow_alive(self, flow: int) -> bool:
        return flow in self._flows

    # -- input ------------------------------------------------------------
    def _datagram(self, proto: _Datagram, data: bytes, host: str, port: int) -> None:
        self.counts["in"] += 1
        local = self.local_hops
        message = local.take(data) if local is not None else None
        if message is not None:
            self._deliver(message, Source("UDP", host, port))
            return
        try:
            message = parse_message(data)
        except SipParseError as err:
            self.counts["bad"] += 1
            resp = error_response(err)
            if resp is not None:
                self._send_udp(resp.encode(), host, port)
            return
        self._deliver(message, Source("UDP", host, port))

    def _stream_message(self, stream: _Stream, data: bytes) -> None:
        self.counts["in"] += 1
        try:
            message = parse_message(data, stream=True)
        except SipParseError as err:
            self.counts["bad"] += 1
            resp = error_response(err)
            if resp is not None and stream.transport is not None:
                stream.tr.write(resp.encode())
            return
        self._deliver(
            message, Source(stream.transport_name, stream.peer[0], stream.peer[1], stream.flow)
        )

    def _deliver(self, message: Any, source: Source) -> None:
        now = self.reactor.seconds()
        try:
            outputs = self.core.receive(message, source, now)
        except SipParseError:
            # a header the core needed was malformed beyond what the parser checks
            self.counts["bad"] += 1
            return
        except Exception:  # a bug must not take the node down: log and drop
            self.counts["bad"] += 1
            log.failure("SIP core failed on a message from {source}", source=source)
            return
        self.submit(outputs)

    # -- output -----------------------------------------------------------
    def submit(self, outputs: Iterable[Output]) -> None:
        """Carry out the core's outputs (and the TU's answers to its events)."""
        queue = list(outputs)
        while queue:
            item = queue.pop(0)
            if isinstance(item, Transmit):
                self._transmit(item)
            else:
                now = self.reactor.seconds()
                try:
                    queue.extend(self.tu.on_event(item, now))
                except Exception:  # a TU bug must not take the node down
                    log.failure("transaction user failed on {event!r}", event=type(item).__name__)
                    queue.extend(self._fail_safe(item, now))
        self._rearm()

    def _fail_safe(self, event: Output, now: float) -> list[Output]:
        ctx = getattr(event, "ctx", None)
        if ctx is None:
            return []
        return self.core.reply(ctx, 500, now, "Server Internal Error")

    def _transmit(self, item: Transmit) -> None:
        target = item.target
        self.counts["out"] += 1
        if target.transport == "UDP":
            data = item.message.encode()
            local = self.local_hops
            if local is not None:
                local.put(data, item.message, target.host, target.port)
            self._send_udp(data, target.host, target.port, item)
            return
        stream = self._stream_for(target)
        if stream is None:
            self._connect(target, item)
        elif stream.connected:
            self._write_stream(stream, item)
        else:
            stream.pending.append(item)

    def _send_udp(self, data: bytes, host: str, port: int, item: Transmit | None = None) -> None:
        if self._udp is None or self._udp.transport is None:
            self._report(item, "no UDP socket")
            return
        sock = self._udp_socket
        if sock is None or self._udp.transport is not self._udp_port:
            try:
                self._udp.tr.write(data, (host, port))
            except Exception as exc:  # socket errors: unreachable, too big...
                self._report(item, str(exc) or type(exc).__name__)
            return
        if host not in self._udp_hosts:
            try:  # never a name: sendto would resolve it, blocking the reactor
                socket.inet_pton(self._udp_family, host)
            except (OSError, ValueError):
                self._report(item, f"not an IP address: {host!r}")
                return
            if len(self._udp_hosts) >= 65536:
                self._udp_hosts.clear()
            self._udp_hosts.add(host)
        self._udp_out.append((data, (host, port), item))
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush_udp)

    def _flush_udp(self) -> None:
        """Send the datagrams queued while the reactor handled what was
        ready, back to back: waking a peer that sleeps on another core costs
        the sender ~25 us (an inter-processor interrupt, dearer still in a
        VM), and a peer woken by the first of several datagrams is awake for
        the others."""
        self._flush_call = None
        out, self._udp_out = self._udp_out, []
        sock = self._udp_socket
        if sock is None:
            return
        for data, addr, item in out:
            for _ in range(3):
                try:
                    sock.sendto(data, addr)
                    break
                except InterruptedError:
                    continue
                except OSError as exc:  # unreachable, too big, buffer full...
                    if exc.errno != errno.ECONNREFUSED:  # ECONNREFUSED: an earlier ICMP
                        self._report(item, str(exc) or type(exc).__name__)
                    break

    def _write_stream(self, stream: _Stream, item: Transmit) -> None:
        if stream.transport is None:
            self._report(item, "connection gone")
            return
        stream.tr.write(item.message.encode())

    def _stream_for(self, target: Target) -> _Stream | None:
        if target.flow is not None and target.flow in self._flows:
            return self._flows[target.flow]
        key = (target.transport, target.host, target.port)
        flow = self._by_addr.get(key)
        if flow is not None and flow in self._flows:
            return self._flows[flow]
        return self._connecting.get(key)

    def _connect(self, target: Target, item: Transmit) -> None:
        if isinstance(item.message, Response) and target.flow is not None:
            # §18.2.2: the flow is gone, so use the Via's address
            via_target = response_target(item.message, None)
            target = Target(target.transport, via_target.host, via_target.port)
            existing = self._stream_for(target)
            if existing is not None:
                if existing.connected:
                    self._write_stream(existing, item)
                else:
                    existing.pending.append(item)
                return
        key = (target.transport, target.host, target.port)
        stream = _Stream(self, target.transport)
        stream.pending.append(item)
        self._connecting[key] = stream
        factory = _ClientFactory(self, stream, key)
        if target.transport == "TLS":
            if self.client_tls is None:
                self._connect_failed(stream, key, "no TLS client configuration")
                return
            self.reactor.connectSSL(
                target.host, target.port, factory, self.client_tls(target.host), timeout=10
            )
        else:
            self.reactor.connectTCP(target.host, target.port, factory, timeout=10)

    def _connect_failed(self, stream: _Stream, key: tuple[str, str, int], reason: str) -> None:
        if self._connecting.get(key) is stream:
            del self._connecting[key]
        pending, stream.pending = stream.pending, []
        for item in pending:
            self._report(item, reason)

    def _report(self, item: Transmit | None, reason: str) -> None:
        self.counts["dropped"] += 1
        if item is not None and item.tx is not None:
            self.submit(self.core.transport_error(item.tx, reason, self.reactor.seconds()))

    def _flow_up(self, stream: _Stream) -> None:
        stream.flow = next(self._flow_ids)
        self._flows[stream.flow] = stream
        for key2, s in list(self._connecting.items()):
            if s is stream:
                del self._connecting[key2]
                self._by_addr[key2] = stream.flow
        self._by_addr[(stream.transport_name, stream.peer[0], stream.peer[1])] = stream.flow

    def _flow_down(self, stream: _Stream, reason: Any) -> None:
        if self._flows.get(stream.flow) is stream:
            del self._flows[stream.flow]
        key = (stream.transport_name, stream.peer[0], stream.peer[1])
        if self._by_addr.get(key) == stream.flow:
            del self._by_addr[key]
        for key2, s in list(self._connecting.items()):
            if s is stream:
                del self._connecting[key2]
        pending, stream.pending = stream.pending, []
        for item in pending:
            self._report(item, "connection lost")
        for listener in self.flow_listeners:
            listener(stream.flow)

    # -- the one timer ----------------------------------------------------
    def _rearm(self) -> None:
        if self._stopped:
            return
        deadline = self.core.next_deadline()
        at = self._timer_at
        if self._timer is not None and self._timer.active():
            if at is not None and (deadline is None or at <= deadline):
                # a timer armed no later than needed stays: firing early
                # finds nothing due and arms the next one, which costs less
                # than moving it at every message (the earliest deadline
                # changes whenever the oldest transaction completes)
                return
            self._timer.cancel()
        self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self.reactor.seconds())
            self._timer = self.reactor.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self.submit(self.core.on_timer(self.reactor.seconds()))
