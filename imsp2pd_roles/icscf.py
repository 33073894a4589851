"""The ``icscf`` role: finds a user's S-CSCF over Cx (imsp2pd.ims.icscf)."""

from __future__ import annotations

from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from imsp2pd.config import Config, Field, host_port_check, split_host_port
from imsp2pd.roles import Hub, IRole, Role
from imsp2pd.store import Store


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


def _scscfs_check(value: list[Any]) -> str | None:
    from imsp2pd.ims.icscf import scscf_entries

    try:
        scscf_entries(value)
    except ValueError as exc:
        return str(exc)
    return None


def cx_client(
    reactor: Any,
    origin_host: str,
    realm: str,
    hss: str,
    hss_host: str,
    handler: Any = None,
    metrics: Any = None,
    local_hops: Any = None,
) -> Any:
    """A Diameter node that dials the HSS and speaks Cx (its metrics on ``metrics``)."""
    from imsp2pd.diameter.codes import Application, Vendor
    from imsp2pd.diameter.node import DiameterNode, PeerConfig
    from imsp2pd.diameter.peer import LocalConfig

    address, port = split_host_port(hss)
    local = LocalConfig(
        origin_host=origin_host,
        origin_realm=realm,
        vendor_applications=((Vendor.TGPP, Application.CX),),
    )
    return DiameterNode(
        reactor,
        local,
        peers=[PeerConfig(hss_host, realm, address, port)],
        handler=handler,
        metrics=metrics,
        local_hops=local_hops,
    )


@implementer(IPlugin, IRole)
class IcscfRole(Role):
    name = "icscf"
    description = "I-CSCF: routes to the S-CSCF of a user or PSI (Cx UAR/LIR)"
    section = "icscf"
    order = 30
    schema = {
        "listen": Field(str, "127.0.0.1:5060", "SIP UDP and TCP HOST:PORT", check=host_port_check),
        "origin_host": Field(str, "icscf.ims.example.org", "Diameter identity"),
        "hss": Field(
            str, "127.0.0.1:3868", "the HSS, Diameter TCP HOST:PORT", check=host_port_check
        ),
        "hss_host": Field(str, "hss.ims.example.org", "the HSS's Diameter identity"),
        "cx_timeout": Field(float, 5.0, "seconds to wait for a Cx answer", check=_positive),
        "scscfs": Field(
            list,
            [{"name": "sip:127.0.0.1:6060", "capabilities": []}],
            "S-CSCFs to select from by Server-Capabilities: [[icscf.scscfs]] tables"
            " with name (SIP URI) and capabilities (list of integers)",
            item=dict,
            check=_scscfs_check,
        ),
    }

    def build(self, config: Config, store: Store, reactor: Any, hub: Hub) -> Any:
        from twisted.application.service import MultiService, Service

        from imsp2pd.diameter import cx
        from imsp2pd.diameter.node import diameter_local_hops
        from imsp2pd.ims.icscf import Icscf, IcscfConfig, scscf_entries
        from imsp2pd.sip.service import SipService, make_node, sip_local_hops, sip_metrics

        section = config["icscf"]
        realm = config["ims"]["domain"]
        host, port = split_host_port(section["listen"])
        diameter = cx_client(
            reactor,
            section["origin_host"],
            realm,
            section["hss"],
            section["hss_host"],
            metrics=hub.metrics,
            local_hops=diameter_local_hops(hub),
        )
        timeout = section["cx_timeout"]
        iconf = IcscfConfig(
            realm=realm,
            origin=cx.Origin(section["origin_host"], realm),
            scscfs=scscf_entries(section["scscfs"]),
        )
        node, _ = make_node(
            reactor,
            host,
            port,
            lambda core: Icscf(
                core, iconf, lambda m: diameter.request(m, timeout), clock=reactor.seconds
            ),
            hops=sip_local_hops(hub),
        )
        sip_metrics(hub).add("icscf", node)

        class CxService(Service):
            def startService(self) -> None:
                super().startService()
                diameter.start()

            def stopService(self) -> Any:
                super().stopService()
                return diameter.stop()

        hub.add_check(
            "icscf",
            lambda: {"ok": diameter.is_available(), "stats": dict(node.stats)},
        )
        top = MultiService()
        CxService().setServiceParent(top)
        SipService(node, host, port).setServiceParent(top)
        return top


icscf = IcscfRole()
