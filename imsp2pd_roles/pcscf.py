"""The ``pcscf`` role: the UE's first SIP hop (imsp2pd.ims.pcscf)."""

from __future__ import annotations

from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from imsp2pd.config import Config, Field, host_port_check, split_host_port
from imsp2pd.roles import Hub, IRole, Role
from imsp2pd.store import Store


def _optional_host_port(value: str) -> str | None:
    return None if value == "" else host_port_check(value)


@implementer(IPlugin, IRole)
class PcscfRole(Role):
    name = "pcscf"
    description = "P-CSCF: the UE's first SIP hop; asserts identities, enforces Service-Route"
    section = "pcscf"
    order = 30
    schema = {
        "listen": Field(str, "127.0.0.1:4060", "SIP UDP and TCP HOST:PORT", check=host_port_check),
        "tls_listen": Field(
            str, "127.0.0.1:4061", "SIP TLS HOST:PORT ('' for none)", check=_optional_host_port
        ),
        "icscf": Field(str, "127.0.0.1:5060", "the I-CSCF, HOST:PORT (UDP)", check=host_port_check),
        "visited_network": Field(str, "", "P-Visited-Network-ID; empty: the [ims] domain"),
    }

    def migrations(self) -> Any:
        from imsp2pd.ims.pcscf import MIGRATIONS

        return MIGRATIONS

    def build(self, config: Config, store: Store, reactor: Any, hub: Hub) -> Any:
        from twisted.application.internet import TimerService
        from twisted.application.service import MultiService

        from imsp2pd.ims.pcscf import Pcscf, PcscfConfig
        from imsp2pd.sip.proxy import Target
        from imsp2pd.sip.service import SipService, make_node, sip_local_hops, sip_metrics

        section = config["pcscf"]
        domain = config["ims"]["domain"]
        host, port = split_host_port(section["listen"])
        ihost, iport = split_host_port(section["icscf"])
        pconf = PcscfConfig(
            host=host,
            port=port,
            realm=domain,
            visited_network=section["visited_network"] or domain,
            icscf=Target("UDP", ihost, iport),
        )
        tls = None
        tls_port = None
        if section["tls_listen"]:
            from imsp2pd import tlslab

            _, tls_port = split_host_port(section["tls_listen"])
            lab = tlslab.ensure_server_cert(config.state_path("tls"), "pcscf")
            tls = (tls_port, tlslab.server_options(lab))
        node, pcscf = make_node(
            reactor,
            host,
            port,
            lambda core: Pcscf(core, pconf, clock=reactor.seconds, store=store),
            tls_port=tls_port,
            hops=sip_local_hops(hub),
        )
        node.flow_listeners.append(pcscf.flow_closed)
        sip_metrics(hub).add("pcscf", node)
        hub.add_check(
            "pcscf", lambda: {"ok": True, "ues": len(pcscf.ues.by_flow), "stats": dict(node.stats)}
        )
        top = MultiService()
        SipService(node, host, port, tls=tls, on_start=pcscf.load).setServiceParent(top)
        TimerService(30.0, lambda: pcscf.expire(reactor.seconds())).setServiceParent(top)
        return top


pcscf = PcscfRole()
