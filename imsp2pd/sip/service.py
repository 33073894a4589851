"""A Twisted service that runs one SIP node (UDP and TCP on one port, TLS
optionally) for a role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service

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
        on_start: Callable[[], None] | None = None,
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
) -> tuple[SipNode, Any]:
    """A core with the role's addresses, its TU, and the node around them;
    returns (node, tu)."""
    addresses = [LocalAddress("UDP", host, port), LocalAddress("TCP", host, port)]
    if tls_port is not None:
        addresses.append(LocalAddress("TLS", host, tls_port))
    core = SipCore(addresses=addresses)
    tu = tu_factory(core)
    node = SipNode(reactor, core, tu, client_tls=client_tls)
    tu.node = node  # type: ignore[attr-defined]
    return node, tu
