"""The SIP transaction layer (RFC 3261 §17, updated by RFC 6026) as pure
state machines.

Every transaction is driven by calls that take ``now`` (seconds, any epoch)
and return a list of actions; :meth:`Transaction.next_deadline` says when
:meth:`Transaction.on_timer` must next be called.  Nothing here does I/O or
reads a clock.

Actions:

* :class:`Send` — give this message to the transport (first sends and
  retransmissions alike);
* :class:`Deliver` — give this message to the transaction user (a response
  for a client transaction; an ACK for a 2xx never reaches a server
  transaction, but the ACK of a non-2xx does not either: it is absorbed);
* :class:`Timeout` — the transaction timed out (Timer B, F or H);
* :class:`TransportFailed` — the transport reported an error (§17.1.4);
* :class:`Terminated` — the transaction is over; forget it.

:class:`TransactionTable` matches messages to transactions (§17.1.3,
§17.2.3) and keeps one deadline for all of them.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from enum import Enum

from imsp2pd.sip.message import BRANCH_MAGIC, Request, Response, SipMessage, make_response

T1 = 0.5
T2 = 4.0
T4 = 5.0


@dataclass(frozen=True)
class Timers:
    """The base timer values (§17.1.1.1); tests may shrink them."""

    t1: float = T1
    t2: float = T2
    t4: float = T4

    @property
    def b(self) -> float:
        return 64 * self.t1

    d_unreliable: float = 32.0


class State(Enum):
    INIT = "Init"
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


# each action has its own __init__: the dataclass's would run interpreted,
# a setattr a field, and a transaction makes a few actions per message


@dataclass(frozen=True)
class Send:
    message: SipMessage

    def __init__(self, message: SipMessage) -> None:
        self.__dict__["message"] = message


@dataclass(frozen=True)
class Deliver:
    message: SipMessage

    def __init__(self, message: SipMessage) -> None:
        self.__dict__["message"] = message


@dataclass(frozen=True)
class Timeout:
    timer: str

    def __init__(self, timer: str) -> None:
        self.__dict__["timer"] = timer


@dataclass(frozen=True)
class TransportFailed:
    reason: str

    def __init__(self, reason: str) -> None:
        self.__dict__["reason"] = reason


@dataclass(frozen=True)
class Terminated:
    def __init__(self) -> None:
        pass


Action = Send | Deliver | Timeout | TransportFailed | Terminated

TransactionKey = tuple[str, str, str]


def client_key(msg: SipMessage) -> TransactionKey:
    """§17.1.3: the branch of the top Via and the CSeq method."""
    return (msg.top_via.branch or "", "", msg.cseq.method)


def server_key(request: Request) -> TransactionKey:
    """§17.2.3: branch, sent-by and method, an ACK matching its INVITE.
    Requests without the magic cookie fall back to a key of the dialog
    identifiers and the whole top Via (the RFC 2543 rules, simplified)."""
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith(BRANCH_MAGIC):
        host, port = via.sent_by
        return (branch, f"{host.lower()}:{port or ''}", method)
    return (
        f"2543:{request.call_id}:{request.from_.tag}:{request.cseq.seq}",
        str(via),
        method,
    )


class Transaction:
    """State shared by the four machines."""

    key: TransactionKey

    def __init__(self, reliable: bool, timers: Timers) -> None:
        self.reliable = reliable
        self.timers = timers
        self.state = State.INIT
        self._deadlines: dict[str, float] = {}

    # -- timers ---------------------------------------------------------
    def next_deadline(self) -> float | None:
        return min(self._deadlines.values()) if self._deadlines else None

    def _start(self, name: str, now: float, after: float) -> None:
        self._deadlines[name] = now + after

    def _stop(self, *names: str) -> None:
        for name in names:
            self._deadlines.pop(name, None)

    def on_timer(self, now: float) -> list[Action]:
        """Fire every timer that is due at ``now``, in deadline order."""
        actions: list[Action] = []
        while self._deadlines and self.state is not State.TERMINATED:
            name, when = min(self._deadlines.items(), key=lambda kv: kv[1])
            if when > now:
                break
            del self._deadlines[name]
            actions += self._fire(name, when)
        return actions

    def _fire(self, name: str, when: float) -> list[Action]:  # pragma: no cover
        raise NotImplementedError

    def _terminate(self) -> list[Action]:
        self.state = State.TERMINATED
        self._deadlines.clear()
        return [Terminated()]

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def transport_error(self, reason: str) -> list[Action]:
        """The transport could not send (§17.1.4, §17.2.4)."""
        if self.terminated:
            return []
        return [TransportFailed(reason), *self._terminate()]


class ClientTransaction(Transaction):
    """INVITE (§17.1.1 + RFC 6026) and non-INVITE (§17.1.2) client
    transactions; ``start`` sends the request."""

    def __init__(self, request: Request, *, reliable: bool, timers: Timers | None = None) -> None:
        # Transaction.__init__ inline (one made per request sent)
        method = request.method
        if method == "ACK":
            raise ValueError("ACK is not sent in a client transaction")
        self.reliable = reliable
        self.timers = timers = timers or Timers()
        self.state = State.INIT
        self._deadlines: dict[str, float] = {}
        self.request = request
        self.is_invite = method == "INVITE"
        self.key = client_key(request)
        self._interval = timers.t1
        self.ack: Request | None = None

    def start(self, now: float) -> list[Action]:
        t = self.timers
        self.state = State.CALLING if self.is_invite else State.TRYING
        if not self.reliable:
            self._start("A" if self.is_invite else "E", now, t.t1)
        self._start("B" if self.is_invite else "F", now, t.b)
        return [Send(self.request)]

    def _fire(self, name: str, when: float) -> list[Action]:
        t = self.timers
        if name == "A":  # retransmit INVITE, double the interval
            self._interval *= 2
            self._start("A", when, self._interval)
            return [Send(self.request)]
        if name == "E":
            if self.state is State.TRYING:
                self._interval = min(2 * self._interval, t.t2)
            else:
                self._interval = t.t2
            self._start("E", when, self._interval)
            return [Send(self.request)]
        if name in ("B", "F"):
            return [Timeout(name), *self._terminate()]
        # D, K, M: the wait for retransmissions is over
        return self._terminate()

    def receive(self, response: Response, now: float) -> list[Action]:
        """A response matching this transaction arrived."""
        if self.is_invite:
            return self._receive_invite(response, now)
        return self._receive_non_invite(response, now)

    def _receive_invite(self, response: Response, now: float) -> list[Action]:
        status = response.status
        t = self.timers
        if self.state in (State.CALLING, State.PROCEEDING):
            if status < 200:
                self.state = State.PROCEEDING
                self._stop("A", "B")
                return [Deliver(response)]
            if status < 300:
                self.state = State.ACCEPTED
                self._stop("A", "B")
                self._start("M", now, t.b)
                return [Deliver(response)]
            self.state = State.COMPLETED
            self._stop("A", "B")
            self.ack = make_ack(self.request, response)
            self._start("D", now, 0.0 if self.reliable else t.d_unreliable)
            return [Send(self.ack), Deliver(response)]
        if self.state is State.ACCEPTED and 200 <= status < 300:
            return [Deliver(response)]  # RFC 6026 §7.2: 2xx retransmissions go up
        if self.state is State.COMPLETED and status >= 300 and self.ack is not None:
            return [Send(self.ack)]
        return []

    def _receive_non_invite(self, response: Response, now: float) -> list[Action]:
        t = self.timers
        if self.state not in (State.TRYING, State.PROCEEDING):
            return []  # retransmitted final response: absorbed
        if response.status < 200:
            self.state = State.PROCEEDING
            return [Deliver(response)]
        self.state = State.COMPLETED
        self._stop("E", "F")
        self._start("K", now, 0.0 if self.reliable else t.t4)
        return [Deliver(response)]


def make_ack(invite: Request, response: Response) -> Request:
    """The ACK of a non-2xx final response (§17.1.1.3): the INVITE's
    Request-URI, Call-ID, From, CSeq number, top Via and Route, the
    response's To."""
    headers: list[tuple[str, str]] = [("Via", invite.get_all("Via")[0])]
    for name in ("Route",):
        headers += [(name, v) for v in invite.get_all(name)]
    headers += [
        ("From", invite.get("From") or ""),
        ("To", response.get("To") or ""),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.seq} ACK"),
        ("Max-Forwards", "70"),
    ]
    return Request(tuple(headers), b"", method="ACK", uri=invite.uri)


class ServerTransaction(Transaction):
    """INVITE (§17.2.1 + RFC 6026) and non-INVITE (§17.2.2) server
    transactions, created on the first request; ``respond`` is the TU's
    way to answer; ``receive`` takes retransmissions and ACKs."""

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        timers: Timers | None = None,
        send_trying: bool = True,
        key: TransactionKey | None = None,
    ) -> None:
        """``key``, when given, is ``server_key(request)`` (the core has it
        already)."""
        # Transaction.__init__ inline (one made per request received)
        self.reliable = reliable
        self.timers = timers = timers or Timers()
        self.state = State.INIT
        self._deadlines: dict[str, float] = {}
        self.request = request
        self.is_invite = request.method == "INVITE"
        self.key = server_key(request) if key is None else key
        self.last_response: Response | None = None
        self._interval = timers.t1
        self._send_trying = send_trying and self.is_invite

    def start(self, now: float) -> list[Action]:
        """Deliver the request to the TU (and send 100 Trying for INVITE)."""
        if self.is_invite:
            self.state = State.PROCEEDING
            if self._send_trying:
                self.last_response = make_response(self.request, 100)
                return [Send(self.last_response), Deliver(self.request)]
        else:
            self.state = State.TRYING
        return [Deliver(self.request)]

    def receive(self, request: Request, now: float) -> list[Action]:
        """A retransmission of the request, or an ACK, arrived."""
        t = self.timers
        if request.method == "ACK":
            if self.is_invite and self.state is State.COMPLETED:
                self.state = State.CONFIRMED
                self._stop("G", "H")
                self._start("I", now, 0.0 if self.reliable else t.t4)
            return []  # ACKs are absorbed (an ACK of a 2xx matches no transaction)
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_response is not None:
            return [Send(self.last_response)]
        return []

    def respond(self, response: Response, now: float) -> list[Action]:
        """The TU answers."""
        t = self.timers
        status = response.status
        if self.is_invite:
            if self.state is not State.PROCEEDING:
                return []
            self.last_response = response
            if status < 200:
                return [Send(response)]
            if status < 300:
                self.state = State.ACCEPTED
                self._start("L", now, t.b)
                return [Send(response)]
            self.state = State.COMPLETED
            if not self.reliable:
                self._start("G", now, t.t1)
            self._start("H", now, t.b)
            return [Send(response)]
        if self.state not in (State.TRYING, State.PROCEEDING):
            return []
        self.last_response = response
        if status < 200:
            self.state = State.PROCEEDING
            return [Send(response)]
        self.state = State.COMPLETED
        self._start("J", now, 0.0 if self.reliable else t.b)
        return [Send(response)]

    def _fire(self, name: str, when: float) -> list[Action]:
        if name == "G":
            self._interval = min(2 * self._interval, self.timers.t2)
            self._start("G", when, self._interval)
            assert self.last_response is not None
            return [Send(self.last_response)]
        if name == "H":
            return [Timeout("H"), *self._terminate()]
        # I, J, L
        return self._terminate()


class TransactionTable:
    """All the transactions of one endpoint: matching and one deadline.

    The table keeps a heap of (deadline, key) entries; stale entries are
    skipped lazily, so a busy endpoint pays O(log n) per timer.
    """

    def __init__(self) -> None:
        self.clients: dict[TransactionKey, ClientTransaction] = {}
        self.servers: dict[TransactionKey, ServerTransaction] = {}
        self._heap: list[tuple[float, int, str, TransactionKey]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self.clients) + len(self.servers)

    def add_client(self, tx: ClientTransaction) -> None:
        self.clients[tx.key] = tx
        self.touch(tx)

    def add_server(self, tx: ServerTransaction) -> None:
        self.servers[tx.key] = tx
        self.touch(tx)

    def match_response(self, response: Response) -> ClientTransaction | None:
        return self.clients.get(client_key(response))

    def match_request(self, request: Request) -> ServerTransaction | None:
        return self.servers.get(server_key(request))

    def match_cancel_target(self, cancel: Request) -> ServerTransaction | None:
        """The server transaction a CANCEL cancels (§9.2): same key but
        the method of the original request (INVITE, or any other)."""
        key = server_key(cancel)
        for method in ("INVITE",):
            tx = self.servers.get((key[0], key[1], method))
            if tx is not None:
                return tx
        return None

    def touch(self, tx: Transaction) -> None:
        """Call after every action on ``tx``: reschedules or forgets it."""
        kind = "c" if isinstance(tx, ClientTransaction) else "s"
        key = tx.key
        if tx.terminated:
            if kind == "c" and self.clients.get(key) is tx:
                del self.clients[key]
            elif kind == "s" and self.servers.get(key) is tx:
                del self.servers[key]
            return
        deadline = tx.next_deadline()
        if deadline is not None:
            heapq.heappush(self._heap, (deadline, next(self._seq), kind, key))

    def next_deadline(self) -> float | None:
        while self._heap:
            deadline, _, kind, key = self._heap[0]
            tx = (self.clients if kind == "c" else self.servers).get(key)
            if tx is None or tx.next_deadline() != deadline:
                heapq.heappop(self._heap)
                continue
            return deadline
        return None

    def due(self, now: float) -> list[Transaction]:
        """Pop the transactions with a timer due at ``now``; the caller runs
        their ``on_timer(now)`` and then :meth:`touch` on each."""
        out: list[Transaction] = []
        seen: set[tuple[str, TransactionKey]] = set()
        while self._heap and self._heap[0][0] <= now:
            deadline, _, kind, key = heapq.heappop(self._heap)
            tx = (self.clients if kind == "c" else self.servers).get(key)
            if tx is None or tx.next_deadline() != deadline or (kind, key) in seen:
                continue
            seen.add((kind, key))
            out.append(tx)
        return out
