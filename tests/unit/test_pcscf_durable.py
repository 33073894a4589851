"""The P-CSCF's UE bindings are durable: a UDP binding is committed before
the 200 reaches the UE and read back by a restarted P-CSCF; bindings over a
connection are not stored; de-registration and expiry delete; a failed
write answers 500 and binds nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail

from imsp2pd.ims.pcscf import MIGRATIONS, UE_BINDINGS, Pcscf, PcscfConfig
from imsp2pd.sip.message import Request, make_response
from imsp2pd.sip.parser import parse_message
from imsp2pd.sip.proxy import LocalAddress, Output, SipCore, Source, Transmit
from imsp2pd.store.sqlite import SQLiteStore

UE = Source("UDP", "127.0.0.5", 5060)
ICSCF = Source("UDP", "127.0.0.1", 5060)


class _Node:
    def __init__(self) -> None:
        self.sent: list[Output] = []

    def submit(self, outputs: list[Output]) -> None:
        self.sent.extend(outputs)


def _store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "state.sqlite")
    store.open()
    store.migrate(MIGRATIONS)
    return store


def _pcscf(store: Any, now: float = 0.0) -> tuple[Pcscf, SipCore, _Node]:
    core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 4060)])
    pcscf = Pcscf(core, PcscfConfig(), clock=lambda: now, store=store)
    node = _Node()
    pcscf.node = node
    return pcscf, core, node


def _register(
    pcscf: Pcscf, core: SipCore, n: int, expires: int, source: Source = UE
) -> list[Output]:
    """A REGISTER from ``source`` and its 200 from the I-CSCF; what the
    P-CSCF did with the 200, now (returned) or once the store committed
    (submitted to the node)."""
    contact = f"<sip:alice@{source.host}:{source.port}>"
    text = (
        "REGISTER sip:ims.example.org SIP/2.0\r\n"
        f"Via: SIP/2.0/{source.transport} {source.host}:{source.port};branch=z9hG4bKreg{n}\r\n"
        "From: <sip:alice@ims.example.org>;tag=r\r\nTo: <sip:alice@ims.example.org>\r\n"
        f"Call-ID: r1\r\nCSeq: {n} REGISTER\r\nMax-Forwards: 70\r\nExpires: {expires}\r\n"
        f"Contact: {contact}\r\nContent-Length: 0\r\n\r\n"
    )
    reg = parse_message(text.encode())
    (event,) = core.receive(reg, source, 0.0)
    (down,) = pcscf.on_event(event, 0.0)
    assert isinstance(down, Transmit)
    extra = (
        ("Service-Route", "<sip:orig@127.0.0.1:6060;lr>"),
        ("P-Associated-URI", "<sip:alice@ims.example.org>"),
        ("Contact", f"{contact};expires={expires}"),
    )
    resp = make_response(down.message, 200, to_tag="s", extra=extra)
    (branch,) = core.receive(resp, ICSCF, 0.1)
    node = pcscf.node
    before = len(node.sent)
    out = pcscf.on_event(branch, 0.1)
    return out + node.sent[before:]


def _message() -> Request:
    text = (
        "MESSAGE sip:content@ims.example.org SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.5:5060;branch=z9hG4bKm1\r\n"
        "From: <sip:alice@ims.example.org>;tag=a\r\nTo: <sip:content@ims.example.org>\r\n"
        "Call-ID: m1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def _forwarded(pcscf: Pcscf, core: SipCore) -> Transmit:
    (event,) = core.receive(_message(), UE, 1.0)
    (out,) = pcscf.on_event(event, 1.0)
    assert isinstance(out, Transmit)
    return out


def _stored(store: SQLiteStore) -> dict[str, Any]:
    return dict(store.transact_now(lambda txn: txn.scan(UE_BINDINGS)))


def test_a_udp_binding_survives_a_restart(tmp_path: Path) -> None:
    store = _store(tmp_path)
    pcscf, core, node = _pcscf(store)
    (up,) = _register(pcscf, core, 1, 600)  # an inline store has committed already
    assert isinstance(up, Transmit) and up.message.status == 200
    assert list(_stored(store)) == ["sip:alice@127.0.0.5:5060"]
    store.close()

    store = _store(tmp_path)  # a new process after kill -9
    again, core2, _ = _pcscf(store, now=10.0)
    assert again.load() == 1
    out = _forwarded(again, core2)
    assert out.message.method == "MESSAGE" and out.target.port == 6060
    assert out.message.get("P-Asserted-Identity") == "<sip:alice@ims.example.org>"


def test_the_200_waits_for_the_commit() -> None:
    pending: list[Deferred[None]] = []

    class SlowStore:
        def transact(self, fn: Any) -> Deferred[None]:
            d: Deferred[None] = Deferred()
            pending.append(d)
            return d

    pcscf, core, node = _pcscf(SlowStore())
    assert _register(pcscf, core, 1, 600) == []
    pending[0].callback(None)
    (up,) = node.sent
    assert isinstance(up, Transmit) and up.message.status == 200 and up.target == _target(UE)


def _target(s: Source) -> Any:
    from imsp2pd.sip.proxy import Target

    return Target(s.transport, s.host, s.port, s.flow)


def test_a_failed_write_answers_500_and_binds_nothing() -> None:
    class BrokenStore:
        def transact(self, fn: Any) -> Deferred[None]:
            return fail(OSError("disk full"))

    pcscf, core, node = _pcscf(BrokenStore())
    (up,) = _register(pcscf, core, 1, 600)
    assert isinstance(up, Transmit) and up.message.status == 500
    assert pcscf.ues.by_contact == {} and pcscf.ues.by_flow == {}
    (event,) = core.receive(_message(), UE, 1.0)
    (refused,) = pcscf.on_event(event, 1.0)
    assert isinstance(refused, Transmit) and refused.message.status == 403


def test_tcp_bindings_stay_in_memory_and_deregistration_deletes(tmp_path: Path) -> None:
    store = _store(tmp_path)
    pcscf, core, _ = _pcscf(store)
    tcp = Source("TCP", "127.0.0.5", 5060, flow=7)
    _register(pcscf, core, 1, 600, source=tcp)
    assert _stored(store) == {} and len(pcscf.ues.by_contact) == 1
    # the same contact over UDP: stored; back over TCP: the stored one goes
    _register(pcscf, core, 2, 600)
    assert list(_stored(store)) == ["sip:alice@127.0.0.5:5060"]
    _register(pcscf, core, 3, 600, source=tcp)
    assert _stored(store) == {}
    _register(pcscf, core, 4, 600)
    (up,) = _register(pcscf, core, 5, 0)  # de-registration
    assert isinstance(up, Transmit) and up.message.status == 200
    assert _stored(store) == {} and pcscf.ues.by_contact == {}


def test_expiry_forgets_in_memory_and_in_the_store(tmp_path: Path) -> None:
    store = _store(tmp_path)
    pcscf, core, _ = _pcscf(store)
    _register(pcscf, core, 1, 600)
    assert pcscf.expire(599.0) == 0 and len(_stored(store)) == 1
    assert pcscf.expire(600.1) == 1
    assert _stored(store) == {} and pcscf.ues.by_contact == {} and pcscf.ues.by_flow == {}
    # an expired binding is not read back either
    _register(pcscf, core, 2, 60)
    later, _, _ = _pcscf(store, now=1000.0)
    assert later.load() == 0
