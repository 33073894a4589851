"""The ``scscf`` role: registrar, authentication, iFC routing (imsp2pd.ims.scscf)."""

from __future__ import annotations

from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from imsp2pd.config import Config, ConfigError, Field, host_port_check, split_host_port
from imsp2pd.roles import Hub, IRole, Role
from imsp2pd.store import Store


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


@implementer(IPlugin, IRole)
class ScscfRole(Role):
    name = "scscf"
    description = "S-CSCF: registrar (digest, AKA), iFC routing to application servers"
    section = "scscf"
    order = 30
    schema = {
        "listen": Field(str, "127.0.0.1:6060", "SIP UDP and TCP HOST:PORT", check=host_port_check),
        "origin_host": Field(str, "scscf.ims.example.org", "Diameter identity"),
        "hss": Field(
            str, "127.0.0.1:3868", "the HSS, Diameter TCP HOST:PORT", check=host_port_check
        ),
        "hss_host": Field(str, "hss.ims.example.org", "the HSS's Diameter identity"),
        "icscf": Field(str, "127.0.0.1:5060", "the I-CSCF, HOST:PORT (UDP)", check=host_port_check),
        "as_transport": Field(str, "tcp", "transport towards application servers (udp, tcp)"),
        "default_expires": Field(int, 600, "registration expiry when the UE asks none"),
        "min_expires": Field(int, 60, "shortest registration accepted (else 423)"),
        "max_expires": Field(int, 3600, "longest registration granted"),
        "nonce_lifetime": Field(
            float, 300.0, "seconds a digest nonce stays valid", check=_positive
        ),
        "cx_timeout": Field(float, 5.0, "seconds to wait for a Cx answer", check=_positive),
    }

    def check(self, config: Config) -> None:
        section = config["scscf"]
        if section["as_transport"].lower() not in ("udp", "tcp"):
            raise ConfigError("config: [scscf] as_transport must be udp or tcp")
        if not 0 < section["min_expires"] <= section["default_expires"] <= section["max_expires"]:
            raise ConfigError(
                "config: [scscf] needs 0 < min_expires <= default_expires <= max_expires"
            )

    def migrations(self) -> Any:
        from imsp2pd.ims.scscf import MIGRATIONS

        return MIGRATIONS

    def build(self, config: Config, store: Store, reactor: Any, hub: Hub) -> Any:
        from twisted.application.internet import TimerService
        from twisted.application.service import MultiService, Service

        from imsp2pd.diameter import cx
        from imsp2pd.diameter.codes import AvpCode, Command, ResultCode
        from imsp2pd.diameter.node import diameter_local_hops
        from imsp2pd.ims.scscf import Scscf, ScscfConfig
        from imsp2pd.sip.proxy import Target
        from imsp2pd.sip.service import SipService, make_node, sip_local_hops, sip_metrics
        from imsp2pd_roles.icscf import cx_client

        section = config["scscf"]
        realm = config["ims"]["domain"]
        host, port = split_host_port(section["listen"])
        ihost, iport = split_host_port(section["icscf"])
        sconf = ScscfConfig(
            host=host,
            port=port,
            realm=realm,
            origin=cx.Origin(section["origin_host"], realm),
            server_name=f"sip:{host}:{port}",
            default_expires=section["default_expires"],
            min_expires=section["min_expires"],
            max_expires=section["max_expires"],
            nonce_lifetime=section["nonce_lifetime"],
            icscf=Target("UDP", ihost, iport),
            as_transport=section["as_transport"].upper(),
        )
        holder: dict[str, Any] = {}

        def handle(req: Any, peer: Any) -> Any:
            """RTR from the HSS: drop the user's registrations (PPR: accept)."""
            if req.code == Command.REGISTRATION_TERMINATION:
                impi = req.get_str(AvpCode.USER_NAME) or ""
                holder["scscf"].deregister(impi, cx.public_identities(req))
            return diameter.answer(req, ResultCode.SUCCESS, [cx.cx_application()])

        diameter = cx_client(
            reactor,
            section["origin_host"],
            realm,
            section["hss"],
            section["hss_host"],
            handle,
            metrics=hub.metrics,
            local_hops=diameter_local_hops(hub),
        )
        timeout = section["cx_timeout"]
        node, scscf = make_node(
            reactor,
            host,
            port,
            lambda core: Scscf(
                core,
                sconf,
                lambda m: diameter.request(m, timeout),
                store=store,
                clock=reactor.seconds,
            ),
            hops=sip_local_hops(hub),
        )
        sip_metrics(hub).add("scscf", node)
        holder["scscf"] = scscf

        class CxService(Service):
            def startService(self) -> None:
                super().startService()
                scscf.load()
                diameter.start()

            def stopService(self) -> Any:
                super().stopService()
                return diameter.stop()

        hub.add_check(
            "scscf",
            lambda: {
                "ok": diameter.is_available(),
                "registrations": len(scscf.registrar.by_impu),
                "stats": dict(node.stats),
            },
        )
        top = MultiService()
        CxService().setServiceParent(top)
        SipService(node, host, port).setServiceParent(top)
        TimerService(5.0, lambda: scscf.expire(reactor.seconds())).setServiceParent(top)
        return top


scscf = ScscfRole()
