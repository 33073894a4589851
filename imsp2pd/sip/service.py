"""A Twisted service that runs one SIP node (UDP and TCP on one port, TLS
optionally) for a role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service

from imsp2pd import local_hops
from imsp2pd.metrics import Registry
from imsp2pd.sip.message import Message
from imsp2pd.sip.parser import parse_message
from imsp2pd.sip.proxy import LocalAddress, SipCore
from imsp2pd.sip.transport import SipNode, TransactionUser


class SipService(Service):
    """Listens at start, closes everything at stop.  ``tls`` is
    ``(port, server_options)`` or None."""

    def __init__(
        self,
        node: SipNode,
        host: str,
        port: int,
        *,
        tls: tuple[int, Any] | None = None,
        on_start: Callable[[], object] | None = None,
    ) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.tls = tls
        self.on_start = on_start

    def startService(self) -> None:
        super().startService()
        self.node.listen_udp(self.port, self.host)
        self.node.listen_tcp(self.port, self.host)
        if self.tls is not None:
            self.node.listen_tls(self.tls[0], self.tls[1], self.host)
        if self.on_start is not None:
            self.on_start()

    def stopService(self) -> Any:
        super().stopService()
        return self.node.stop()


def make_node(
    reactor: Any,
    host: str,
    port: int,
    tu_factory: Callable[[SipCore], TransactionUser],
    *,
    tls_port: int | None = None,
    client_tls: Callable[[str], Any] | None = None,
    hops: local_hops.LocalHops[Message] | None = None,
) -> tuple[SipNode, Any]:
    """A core with the role's addresses, its TU, and the node around them;
    returns (node, tu). ``hops``: the process's SIP :class:`LocalHops`
    (:func:`sip_local_hops`), shared by its nodes."""
    addresses = [LocalAddress("UDP", host, port), LocalAddress("TCP", host, port)]
    if tls_port is not None:
        addresses.append(LocalAddress("TLS", host, tls_port))
    core = SipCore(addresses=addresses)
    tu = tu_factory(core)
    node = SipNode(reactor, core, tu, client_tls=client_tls, local_hops=hops)
    tu.node = node  # type: ignore[attr-defined]
    return node, tu


class SipMetrics:
    """The SIP nodes of a process on its ``/metrics``, by role: messages in
    and out, malformed, dropped (transport errors), requests refused for
    overload (503), and transactions pending.  One per process
    (:func:`sip_metrics`), read at scrape time from the nodes' own counts."""

    def __init__(self, registry: Registry) -> None:
        self.nodes: dict[str, SipNode] = {}
        registry.counter(
            "imsp2p_sip_messages_total",
            "SIP messages by role and kind: in, out, bad (malformed), dropped (not sent)",
            ("role", "kind"),
            fn=self._messages,
        )
        registry.counter(
            "imsp2p_sip_overloaded_total",
            "requests refused with 503 because too many were in progress",
            ("role",),
            fn=lambda: {(r,): float(n.core.overloaded) for r, n in self.nodes.items()},
        )
        registry.gauge(
            "imsp2p_sip_transactions_pending",
            "SIP transactions not yet over (retired ones waiting out their timer included)",
            ("role",),
            fn=lambda: {(r,): float(n.core.pending) for r, n in self.nodes.items()},
        )

    def add(self, role: str, node: SipNode) -> None:
        self.nodes[role] = node

    def _messages(self) -> dict[tuple[str, ...], float]:
        return {
            (role, kind): float(count)
            for role, node in self.nodes.items()
            for kind, count in node.counts.items()
        }


def sip_metrics(hub: Any) -> SipMetrics:
    """The process's :class:`SipMetrics`, made by the first SIP role built."""
    found = hub.lookup("sip_metrics")
    if found is None:
        found = SipMetrics(hub.metrics)
        hub.provide("sip_metrics", found)
    assert isinstance(found, SipMetrics)
    return found


def sip_local_hops(hub: Any) -> local_hops.LocalHops[Message]:
    """The process's SIP :class:`~imsp2pd.local_hops.LocalHops`, for :func:`make_node`."""
    return local_hops.for_process(hub, "sip", parse_message)
