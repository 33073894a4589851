"""The Diameter peer connection as a sans-IO state machine.

One :class:`PeerConnection` runs one transport connection (RFC 6733 section
5.6) from either side: capability exchange (CER/CEA, 5010 with no common
application, 3010 for a peer the policy refuses), the watchdog of RFC 3539
(OKAY, SUSPECT, REOPEN; DOWN is a closed connection), disconnection
(DPR/DPA), hop-by-hop identifiers, answer matching and request timeouts.

It never does I/O and never reads a clock: every input carries ``now`` and
returns a list of events (:class:`Send`, :class:`Close`, :class:`PeerUp`, ...);
:meth:`PeerConnection.next_deadline` says when :meth:`PeerConnection.on_timer`
is due. Election between two connections to one peer, failover, reconnection
and routing belong to the node that owns the connections.
"""

from __future__ import annotations

import heapq
import random
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv6Address

from imsp2pd.diameter.avp import Avp, AvpType, quick_init
from imsp2pd.diameter.codes import (
    BASE_COMMANDS,
    Application,
    AvpCode,
    Command,
    DisconnectCause,
    Flag,
    ResultCode,
    Vendor,
)
from imsp2pd.diameter.dictionary import Dictionary, default_dictionary
from imsp2pd.diameter.errors import DecodeError, FramingError, PeerUnavailable
from imsp2pd.diameter.message import (
    Framer,
    Header,
    Message,
    answer,
    decode_header,
    decode_message,
    error_answer,
    request,
    session_id_of,
)
from imsp2pd.local_hops import LocalHops

IPAddress = IPv4Address | IPv6Address
_REQUEST = int(Flag.REQUEST)
_HBH = struct.Struct(">I")


class Role(Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class PeerState(Enum):
    WAIT_CER = "wait-cer"
    WAIT_CEA = "wait-cea"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class WatchdogState(Enum):
    OKAY = "okay"
    SUSPECT = "suspect"
    REOPEN = "reopen"


@dataclass(frozen=True, slots=True)
class LocalConfig:
    """Who we are and how we time things (the defaults follow RFC 6733/3539)."""

    origin_host: str
    origin_realm: str
    host_ip_addresses: tuple[IPAddress, ...] = (IPv4Address("127.0.0.1"),)
    vendor_id: int = 0
    product_name: str = "imsp2pd"
    firmware_revision: int | None = 1
    origin_state_id: int = 0
    #: Auth-Application-Ids advertised without a vendor (e.g. 4 for DCCA).
    auth_applications: tuple[int, ...] = ()
    #: (Vendor-Id, Auth-Application-Id) advertised in Vendor-Specific-Application-Id.
    vendor_applications: tuple[tuple[int, int], ...] = ()
    supported_vendors: tuple[int, ...] = (Vendor.TGPP,)
    watchdog_interval: float = 30.0
    watchdog_jitter: float = 2.0
    cer_timeout: float = 10.0
    dpa_timeout: float = 5.0
    request_timeout: float = 10.0
    #: DWAs needed in REOPEN before a re-opened connection carries traffic. RFC 3539
    #: suggests 3, one per Tw (a minute and more with Tw = 30 s); the default of 1 is
    #: the DWR sent at once on reconnection, so a restarted peer is usable after one
    #: round trip. 0 skips REOPEN.
    reopen_dwas: int = 1

    @property
    def applications(self) -> frozenset[int]:
        return frozenset(self.auth_applications) | {a for _, a in self.vendor_applications}


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What the capability exchange told us about the peer."""

    origin_host: str
    origin_realm: str
    host_ip_addresses: tuple[IPAddress, ...]
    vendor_id: int
    product_name: str
    applications: frozenset[int]
    origin_state_id: int | None


# Events ---------------------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    reason: str


@dataclass(frozen=True, slots=True)
class PeerUp:
    peer: PeerInfo


@dataclass(frozen=True, slots=True)
class PeerDown:
    """The connection is finished; ``cause`` is the peer's Disconnect-Cause if it sent DPR."""

    reason: str
    cause: DisconnectCause | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class IncomingRequest:
    message: Message


@quick_init
@dataclass(frozen=True, slots=True)
class AnswerReceived:
    request: Message
    answer: Message


@dataclass(frozen=True, slots=True)
class RequestTimedOut:
    request: Message


@dataclass(frozen=True, slots=True)
class RequestsOrphaned:
    """Requests that lost their connection (or its trust): fail them over or fail them."""

    requests: tuple[Message, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class WatchdogChanged:
    state: WatchdogState


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """Something the peer sent was dropped (already answered where RFC 6733 says so)."""

    reason: str


Event = (
    Send
    | Close
    | PeerUp
    | PeerDown
    | IncomingRequest
    | AnswerReceived
    | RequestTimedOut
    | RequestsOrphaned
    | WatchdogChanged
    | ProtocolViolation
)


# Identifiers ----------------------------------------------------------------------


class EndToEndIds:
    """End-to-end identifiers: high 12 bits from the clock, low 20 random, then counting."""

    def __init__(self, now: float, rng: random.Random | None = None) -> None:
        rng = rng or random.Random()
        self._next = ((int(now) & 0xFFF) << 20) | rng.getrandbits(20)

    def next(self) -> int:
        value = self._next
        self._next = (self._next + 1) & 0xFFFFFFFF
        return value


def capability_avps(
    local: LocalConfig, dictionary: Dictionary, addresses: Iterable[IPAddress] | None = None
) -> list[Avp]:
    """The AVPs of a CER or CEA after Origin-Host/Origin-Realm (and Result-Code)."""
    d = dictionary
    out = [d.make(AvpCode.HOST_IP_ADDRESS, a) for a in (addresses or local.host_ip_addresses)]
    out.append(d.make(AvpCode.VENDOR_ID, local.vendor_id))
    out.append(d.make(AvpCode.PRODUCT_NAME, local.product_name))
    out.append(d.make(AvpCode.ORIGIN_STATE_ID, local.origin_state_id))
    for vendor in local.supported_vendors:
        out.append(d.make(AvpCode.SUPPORTED_VENDOR_ID, int(vendor)))
    for app in local.auth_applications:
        out.append(d.make(AvpCode.AUTH_APPLICATION_ID, int(app)))
    for vendor, app in local.vendor_applications:
        out.append(
            d.group(
                AvpCode.VENDOR_SPECIFIC_APPLICATION_ID,
                d.make(AvpCode.VENDOR_ID, int(vendor)),
                d.make(AvpCode.AUTH_APPLICATION_ID, int(app)),
            )
        )
    if local.firmware_revision is not None:
        out.append(d.make(AvpCode.FIRMWARE_REVISION, local.firmware_revision))
    return out


def advertised_applications(msg: Message) -> frozenset[int]:
    """Auth- and Acct-Application-Ids of a CER/CEA, plain or vendor-specific."""
    apps: set[int] = set()
    for code in (AvpCode.AUTH_APPLICATION_ID, AvpCode.ACCT_APPLICATION_ID):
        apps.update(a.value for a in msg.find_all(code) if isinstance(a.value, int))
    for vsa in msg.find_all(AvpCode.VENDOR_SPECIFIC_APPLICATION_ID):
        if vsa.type is AvpType.GROUPED:
            for code in (AvpCode.AUTH_APPLICATION_ID, AvpCode.ACCT_APPLICATION_ID):
                apps.update(a.value for a in vsa.find_all(code) if isinstance(a.value, int))
    return frozenset(apps)


def common_applications(ours: frozenset[int], theirs: frozenset[int]) -> frozenset[int]:
    if Application.RELAY in theirs:
        return ours or frozenset({Application.RELAY})
    if Application.RELAY in ours:
        return theirs
    return ours & theirs


def peer_info(msg: Message, applications: frozenset[int]) -> PeerInfo:
    addresses: list[IPAddress] = []
    for a in msg.find_all(AvpCode.HOST_IP_ADDRESS):
        if isinstance(a.value, IPv4Address | IPv6Address):
            addresses.append(a.value)
    return PeerInfo(
        origin_host=msg.origin_host or "",
        origin_realm=msg.origin_realm or "",
        host_ip_addresses=tuple(addresses),
        vendor_id=msg.get_int(AvpCode.VENDOR_ID) or 0,
        product_name=msg.get_str(AvpCode.PRODUCT_NAME) or "",
        applications=applications,
        origin_state_id=msg.get_int(AvpCode.ORIGIN_STATE_ID),
    )


@dataclass(slots=True)
class _Pending:
    message: Message
    deadline: float


PeerPolicy = Callable[[str, str], bool]


class PeerConnection:
    """One transport connection to one Diameter peer (see the module docstring)."""

    def __init__(
        self,
        local: LocalConfig,
        role: Role,
        now: float,
        *,
        dictionary: Dictionary | None = None,
        end_to_end: EndToEndIds | None = None,
        rng: random.Random | None = None,
        accept_peer: PeerPolicy | None = None,
        reopen: bool = False,
        local_addresses: tuple[IPAddress, ...] | None = None,
        local_hops: LocalHops[Message] | None = None,
        peer_address: tuple[str, int] | None = None,
    ) -> None:
        """``local_hops``: the process's Diameter :class:`LocalHops` (its nodes
        share it, and the dictionary): a frame that is a message sent from this
        process is taken from it instead of decoded; what is sent to
        ``peer_address`` (host, port), when that is an endpoint of this process,
        is left in it."""
        self.local = local
        self.role = role
        self.dictionary = dictionary or default_dictionary()
        self._rng = rng or random.Random()
        self._e2e = end_to_end or EndToEndIds(now, self._rng)
        self._hbh = self._rng.getrandbits(32)
        self._accept_peer = accept_peer
        self._reopen = reopen
        self._addresses = local_addresses or local.host_ip_addresses
        self._framer = Framer()
        self._hops = local_hops
        self._to_host, self._to_port = peer_address or ("", 0)
        self._keep = local_hops is not None and peer_address is not None
        self.state = PeerState.WAIT_CER if role is Role.RESPONDER else PeerState.WAIT_CEA
        self.watchdog = WatchdogState.OKAY
        self.peer: PeerInfo | None = None
        self._state_deadline: float | None = now + local.cer_timeout
        self._tw_deadline: float | None = None
        self._dwr_pending: int | None = None  # hop-by-hop of the outstanding DWR
        self._num_dwa = 0
        self._cer_hbh: int | None = None
        self._dpr_hbh: int | None = None
        self._pending: dict[int, _Pending] = {}
        self._timeouts: list[tuple[float, int]] = []
        self._started = False

    # Properties -------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.state is PeerState.OPEN

    @property
    def available(self) -> bool:
        """True when requests may be routed here: open and the watchdog says OKAY."""
        return self.state is PeerState.OPEN and self.watchdog is WatchdogState.OKAY

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def next_deadline(self) -> float | None:
        timeouts, pending = self._timeouts, self._pending
        while timeouts and timeouts[0][1] not in pending:
            heapq.heappop(timeouts)
        best = self._state_deadline
        tw = self._tw_deadline
        if tw is not None and (best is None or tw < best):
            best = tw
        if timeouts and (best is None or timeouts[0][0] < best):
            best = timeouts[0][0]
        return best

    # Inputs -------------------------------------------------------------------

    def start(self, now: float) -> list[Event]:
        """Begin: the initiator sends CER; the responder waits for one."""
        if self._started:
            return []
        self._started = True
        if self.role is Role.RESPONDER:
            return []
        hbh = self._next_hbh()
        self._cer_hbh = hbh
        cer = request(
            Command.CAPABILITIES_EXCHANGE,
            Application.COMMON,
            self._identity() + capability_avps(self.local, self.dictionary, self._addresses),
            proxiable=False,
            hop_by_hop=hbh,
            end_to_end=self._e2e.next(),
        )
        return [Send(cer.encode())]

    def data_received(self, data: bytes, now: float) -> list[Event]:
        if self.state is PeerState.CLOSED:
            return []
        try:
            frames = self._framer.feed(data)
        except FramingError as exc:
            return self._shutdown(f"framing error: {exc.reason}", now)
        events: list[Event] = []
        for frame in frames:
            events += self._frame(frame, now)
            if self.state is PeerState.CLOSED:
                break
        return events

    def send_request(
        self, message: Message, now: float, timeout: float | None = None
    ) -> tuple[Message, list[Event]]:
        """Send an application request; returns it with its identifiers set.

        Raises :class:`PeerUnavailable` unless the connection is open.
        """
        if self.state is not PeerState.OPEN:
            raise PeerUnavailable(f"connection is {self.state.value}, not open")
        hbh = self._next_hbh()
        e2e = message.end_to_end or self._e2e.next()
        flags = message.flags | _REQUEST
        sent = Message(message.code, message.application, flags, hbh, e2e, message.avps)
        deadline = now + (self.local.request_timeout if timeout is None else timeout)
        self._pending[hbh] = _Pending(sent, deadline)
        heapq.heappush(self._timeouts, (deadline, hbh))
        data = sent.encode()
        if self._keep:
            assert self._hops is not None
            self._hops.put(data, sent, self._to_host, self._to_port)
        return sent, [Send(data)]

    def send_answer(self, message: Message | bytes, data: bytes | None = None) -> list[Event]:
        """Send an answer: a message (``data``, when given, is its encoding), or
        bytes alone (a resent answer: never left in the local hops)."""
        if self.state is PeerState.CLOSED:
            return []
        if isinstance(message, bytes):
            return [Send(message)]
        if data is None:
            data = message.encode()
        if self._keep:
            assert self._hops is not None
            self._hops.put(data, message, self._to_host, self._to_port)
        return [Send(data)]

    def disconnect(
        self, now: float, cause: DisconnectCause = DisconnectCause.REBOOTING
    ) -> list[Event]:
        """Start a clean shutdown with DPR (or just close when not open yet)."""
        if self.state is PeerState.CLOSED:
            return []
        if self.state is not PeerState.OPEN:
            return self._shutdown("closed before the capability exchange finished", now)
        hbh = self._next_hbh()
        self._dpr_hbh = hbh
        dpr = request(
            Command.DISCONNECT_PEER,
            Application.COMMON,
            self._identity() + [self.dictionary.make(AvpCode.DISCONNECT_CAUSE, int(cause))],
            proxiable=False,
            hop_by_hop=hbh,
            end_to_end=self._e2e.next(),
        )
        self.state = PeerState.CLOSING
        self._state_deadline = now + self.local.dpa_timeout
        self._tw_deadline = None
        return [Send(dpr.encode())]

    def connection_lost(self, now: float, reason: str = "connection lost") -> list[Event]:
        if self.state is PeerState.CLOSED:
            return []
        return self._finish(reason, None)

    def on_timer(self, now: float) -> list[Event]:
        events: list[Event] = []
        if self.state is PeerState.CLOSED:
            return events
        if self._state_deadline is not None and now >= self._state_deadline:
            what = {
                PeerState.WAIT_CER: "no CER",
                PeerState.WAIT_CEA: "no CEA",
                PeerState.CLOSING: "no DPA",
            }.get(self.state, "timeout")
            return self._shutdown(f"{what} within the timeout", now)
        while self._timeouts and self._timeouts[0][0] <= now:
            _, hbh = heapq.heappop(self._timeouts)
            pending = self._pending.pop(hbh, None)
            if pending is not None:
                events.append(RequestTimedOut(pending.message))
        if self._tw_deadline is not None and now >= self._tw_deadline:
            events += self._watchdog_expired(now)
        return events

    # Frames -------------------------------------------------------------------

    def _frame(self, frame: bytes, now: float) -> list[Event]:
        hops = self._hops
        msg = hops.take(frame) if hops is not None else None
        if msg is None:
            header = decode_header(frame)
            if header.is_request and self._not_negotiated(header.code, header.application):
                return self._refuse(header, frame)
            try:
                msg = decode_message(frame, self.dictionary, header)
            except DecodeError as exc:
                return self._undecodable(exc, frame, now)
            except FramingError as exc:
                return self._shutdown(f"framing error: {exc.reason}", now)
        elif msg.flags & _REQUEST and self._not_negotiated(msg.code, msg.application):
            # a message taken has the header its bytes have: refused alike
            return self._refuse(msg.header, frame)
        if self.state is PeerState.WAIT_CER:
            return self._in_wait_cer(msg, now)
        if self.state is PeerState.WAIT_CEA:
            return self._in_wait_cea(msg, now)
        return self._in_open(msg, now)

    def _not_negotiated(self, code: int, application: int) -> bool:
        """A request of an application the capability exchange did not agree on?"""
        peer = self.peer
        return (
            peer is not None
            and code not in BASE_COMMANDS
            and application not in peer.applications
            and Application.RELAY not in peer.applications
        )

    def _refuse(self, header: Header, frame: bytes) -> list[Event]:
        # Checked on the header alone: the body of another application's
        # command may not even decode with our dictionary.
        reply = answer(
            header,
            self.local.origin_host,
            self.local.origin_realm,
            ResultCode.APPLICATION_UNSUPPORTED,
            session_id=session_id_of(frame),
            error_message=f"application {header.application} was not negotiated",
            dictionary=self.dictionary,
        )
        return [Send(reply.encode())]

    def _undecodable(self, exc: DecodeError, frame: bytes, now: float) -> list[Event]:
        assert exc.header is not None
        if not exc.header.is_request:
            return [ProtocolViolation(f"undecodable answer dropped: {exc.reason}")]
        reply = error_answer(
            exc,
            self.local.origin_host,
            self.local.origin_realm,
            self.dictionary,
            session_id=session_id_of(frame),
        )
        events: list[Event] = [Send(reply.encode()), ProtocolViolation(exc.reason)]
        if self.state in (PeerState.WAIT_CER, PeerState.WAIT_CEA):
            events += self._shutdown(f"invalid capability exchange: {exc.reason}", now)
        return events

    def _in_wait_cer(self, msg: Message, now: float) -> list[Event]:
        if not (msg.is_request and msg.code == Command.CAPABILITIES_EXCHANGE):
            return self._shutdown(f"command {msg.code} before CER", now)
        host, realm = msg.origin_host or "", msg.origin_realm or ""
        if self._accept_peer is not None and not self._accept_peer(host, realm):
            return self._reject_cer(
                msg, ResultCode.UNKNOWN_PEER, f"peer {host} is not allowed", now
            )
        apps = common_applications(self.local.applications, advertised_applications(msg))
        if not apps:
            return self._reject_cer(
                msg, ResultCode.NO_COMMON_APPLICATION, f"no common application with {host}", now
            )
        cea = answer(
            msg,
            self.local.origin_host,
            self.local.origin_realm,
            ResultCode.SUCCESS,
            capability_avps(self.local, self.dictionary, self._addresses),
            dictionary=self.dictionary,
        )
        return [Send(cea.encode()), *self._opened(peer_info(msg, apps), now)]

    def _reject_cer(self, msg: Message, code: ResultCode, reason: str, now: float) -> list[Event]:
        cea = answer(
            msg,
            self.local.origin_host,
            self.local.origin_realm,
            code,
            capability_avps(self.local, self.dictionary, self._addresses),
            error_message=reason,
            dictionary=self.dictionary,
        )
        return [Send(cea.encode()), *self._shutdown(reason, now)]

    def _in_wait_cea(self, msg: Message, now: float) -> list[Event]:
        if (
            msg.is_request
            or msg.code != Command.CAPABILITIES_EXCHANGE
            or msg.hop_by_hop != self._cer_hbh
        ):
            return self._shutdown(f"expected CEA, got command {msg.code}", now)
        result = msg.get_int(AvpCode.RESULT_CODE)
        if result != ResultCode.SUCCESS:
            text = msg.get_str(AvpCode.ERROR_MESSAGE) or ""
            return self._shutdown(f"CEA result {result} {text}".strip(), now)
        apps = common_applications(self.local.applications, advertised_applications(msg))
        if not apps:
            return self._shutdown(f"no common application with {msg.origin_host}", now)
        return self._opened(peer_info(msg, apps), now)

    def _opened(self, info: PeerInfo, now: float) -> list[Event]:
        self.state = PeerState.OPEN
        self.peer = info
        self._state_deadline = None
        events: list[Event] = [PeerUp(info)]
        if self._reopen and self.local.reopen_dwas > 0:
            self.watchdog = WatchdogState.REOPEN
            self._num_dwa = 0
            events.append(self._send_dwr())
        self._set_watchdog(now)
        return events

    def _in_open(self, msg: Message, now: float) -> list[Event]:
        events: list[Event] = []
        is_dwa = msg.code == Command.DEVICE_WATCHDOG and not msg.is_request
        # Any traffic shows the peer is alive (RFC 3539 3.4.1).
        if not is_dwa:
            if self.watchdog is WatchdogState.SUSPECT:
                self.watchdog = WatchdogState.OKAY
                self._dwr_pending = None
                events.append(WatchdogChanged(WatchdogState.OKAY))
            if self.watchdog is WatchdogState.OKAY and self.state is PeerState.OPEN:
                self._set_watchdog(now)
        if msg.is_request:
            return events + self._request(msg, now)
        if is_dwa:
            return events + self._dwa(msg, now)
        if msg.code == Command.DISCONNECT_PEER and msg.hop_by_hop == self._dpr_hbh:
            return events + self._finish("disconnected by DPR/DPA", None, close=True)
        pending = self._pending.pop(msg.hop_by_hop, None)
        if pending is None:
            return events + [ProtocolViolation(f"unmatched answer hop-by-hop {msg.hop_by_hop:#x}")]
        return events + [AnswerReceived(pending.message, msg)]

    def _request(self, msg: Message, now: float) -> list[Event]:
        d = self.dictionary
        if msg.code == Command.DEVICE_WATCHDOG:
            dwa = answer(
                msg,
                self.local.origin_host,
                self.local.origin_realm,
                ResultCode.SUCCESS,
                [d.make(AvpCode.ORIGIN_STATE_ID, self.local.origin_state_id)],
                dictionary=d,
            )
            return [Send(dwa.encode())]
        if msg.code == Command.DISCONNECT_PEER:
            dpa = answer(
                msg,
                self.local.origin_host,
                self.local.origin_realm,
                ResultCode.SUCCESS,
                dictionary=d,
            )
            cause_value = msg.get_int(AvpCode.DISCONNECT_CAUSE)
            try:
                cause = DisconnectCause(cause_value) if cause_value is not None else None
            except ValueError:
                cause = None
            return [Send(dpa.encode()), *self._finish("peer sent DPR", cause, close=True)]
        if msg.code == Command.CAPABILITIES_EXCHANGE:
            cea = answer(
                msg,
                self.local.origin_host,
                self.local.origin_realm,
                ResultCode.UNABLE_TO_COMPLY,
                error_message="capabilities already exchanged on this connection",
                dictionary=d,
            )
            return [Send(cea.encode()), ProtocolViolation("CER on an open connection")]
        return [IncomingRequest(msg)]

    # Watchdog (RFC 3539 3.4.1) ----------------------------------------------

    def _set_watchdog(self, now: float) -> None:
        jitter = self.local.watchdog_jitter
        offset = self._rng.uniform(-jitter, jitter) if jitter else 0.0
        self._tw_deadline = now + self.local.watchdog_interval + offset

    def _send_dwr(self) -> Send:
        hbh = self._next_hbh()
        self._dwr_pending = hbh
        dwr = request(
            Command.DEVICE_WATCHDOG,
            Application.COMMON,
            self._identity()
            + [self.dictionary.make(AvpCode.ORIGIN_STATE_ID, self.local.origin_state_id)],
            proxiable=False,
            hop_by_hop=hbh,
            end_to_end=self._e2e.next(),
        )
        return Send(dwr.encode())

    def _dwa(self, msg: Message, now: float) -> list[Event]:
        if msg.hop_by_hop != self._dwr_pending:
            return [ProtocolViolation("DWA for no outstanding DWR")]
        self._dwr_pending = None
        if self.watchdog is WatchdogState.REOPEN:
            self._num_dwa += 1
            if self._num_dwa >= self.local.reopen_dwas:
                self.watchdog = WatchdogState.OKAY
                self._set_watchdog(now)
                return [WatchdogChanged(WatchdogState.OKAY)]
            return []
        events: list[Event] = []
        if self.watchdog is WatchdogState.SUSPECT:
            self.watchdog = WatchdogState.OKAY
            events.append(WatchdogChanged(WatchdogState.OKAY))
        self._set_watchdog(now)
        return events

    def _watchdog_expired(self, now: float) -> list[Event]:
        if self.state is not PeerState.OPEN:
            self._tw_deadline = None
            return []
        state = self.watchdog
        if state is WatchdogState.OKAY:
            if self._dwr_pending is None:
                self._set_watchdog(now)
                return [self._send_dwr()]
            self.watchdog = WatchdogState.SUSPECT
            self._set_watchdog(now)
            return [WatchdogChanged(WatchdogState.SUSPECT), *self._orphan_all("peer is suspect")]
        if state is WatchdogState.SUSPECT:
            return self._shutdown("watchdog: no answer from the peer", now)
        # REOPEN
        if self._dwr_pending is None:
            self._set_watchdog(now)
            return [self._send_dwr()]
        if self._num_dwa < 0:
            return self._shutdown("watchdog: re-opened peer does not answer", now)
        self._num_dwa = -1
        self._set_watchdog(now)
        return []

    # Endings ------------------------------------------------------------------

    def _orphan_all(self, reason: str) -> list[Event]:
        if not self._pending:
            return []
        orphans = tuple(p.message for p in self._pending.values())
        self._pending.clear()
        self._timeouts.clear()
        return [RequestsOrphaned(orphans, reason)]

    def _shutdown(self, reason: str, now: float) -> list[Event]:
        return self._finish(reason, None, close=True)

    def _finish(
        self, reason: str, cause: DisconnectCause | None, close: bool = False
    ) -> list[Event]:
        self.state = PeerState.CLOSED
        self._state_deadline = None
        self._tw_deadline = None
        events: list[Event] = [Close(reason)] if close else []
        events += self._orphan_all(reason)
        events.append(PeerDown(reason, cause))
        return events

    # Helpers ------------------------------------------------------------------

    def _identity(self) -> list[Avp]:
        d = self.dictionary
        return [
            d.make(AvpCode.ORIGIN_HOST, self.local.origin_host),
            d.make(AvpCode.ORIGIN_REALM, self.local.origin_realm),
        ]

    def _next_hbh(self) -> int:
        self._hbh = (self._hbh + 1) & 0xFFFFFFFF
        return self._hbh


# Duplicate detection --------------------------------------------------------------


@dataclass
class DuplicateCache:
    """Requests seen recently, by (Origin-Host, End-to-End id) (RFC 6733 section 6.5).

    :meth:`check` tells a new request from a duplicate; for a duplicate whose
    answer was already sent it returns that answer's bytes with the new
    hop-by-hop identifier, so it can be sent again without running the request
    twice. Answers are kept encoded: an entry is a tuple of a float and bytes,
    which the garbage collector does not track, so a full cache (a minute of
    traffic) costs no collector time.
    """

    lifetime: float = 60.0
    max_entries: int = 100_000
    #: key -> (expiry, the encoded answer or None while the request is being handled)
    _seen: OrderedDict[tuple[str, int], tuple[float, bytes | None]] = field(
        default_factory=OrderedDict
    )

    def check(self, req: Message, now: float) -> tuple[bool, bytes | None]:
        """(is_duplicate, the encoded answer to resend or None)."""
        self._expire(now)
        key = (req.origin_host or "", req.end_to_end)
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = (now + self.lifetime, None)
            if len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
            return False, None
        data = seen[1]
        if data is None:
            return True, None
        return True, data[:12] + _HBH.pack(req.hop_by_hop) + data[16:]

    def answered(self, req: Message, data: bytes) -> None:
        """Remember the encoded answer to ``req``."""
        key = (req.origin_host or "", req.end_to_end)
        seen = self._seen.get(key)
        if seen is not None:
            self._seen[key] = (seen[0], data)

    def forget(self, req: Message) -> None:
        self._seen.pop((req.origin_host or "", req.end_to_end), None)

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        seen = self._seen
        while seen:
            key = next(iter(seen))
            if seen[key][0] > now:
                break
            del seen[key]
