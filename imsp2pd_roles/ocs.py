"""The ``ocs`` role: online charging over Diameter Ro (imsp2pd.ims.ocs)."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.plugin import IPlugin
from zope.interface import implementer

from imsp2pd.config import Config, ConfigError, Field, host_port_check, split_host_port
from imsp2pd.roles import Hub, IRole, Role
from imsp2pd.store import Store


class OcsService(Service):
    def __init__(
        self, ocs: Any, node: Any, host: str, port: int, accounts: dict[str, str], currency: str
    ) -> None:
        self.ocs, self.node = ocs, node
        self.host, self.port = host, port
        self.accounts, self.currency = accounts, currency

    def startService(self) -> None:
        super().startService()
        self.node.listen(self.port, self.host)
        self.node.start()
        self.ocs.seed(self.accounts, self.currency)

    def stopService(self) -> Any:
        super().stopService()
        return self.node.stop()


@implementer(IPlugin, IRole)
class OcsRole(Role):
    name = "ocs"
    description = "online charging system: balances and charging records over Diameter Ro"
    section = "ocs"
    order = 20
    schema = {
        "listen": Field(str, "127.0.0.1:3869", "Diameter TCP HOST:PORT", check=host_port_check),
        "origin_host": Field(str, "ocs.ims.example.org", "Diameter identity"),
        "currency": Field(str, "EUR", "currency of new accounts (ISO 4217)"),
        "provisioning": Field(
            str,
            "subscribers.toml",
            "file whose [[subscriber]] balance keys seed accounts ('' for none)",
        ),
        "accounts": Field(dict, {}, "IMPU = initial balance (over the provisioning file's)"),
    }

    def check(self, config: Config) -> None:
        self.initial_accounts(config)

    @staticmethod
    def initial_accounts(config: Config) -> dict[str, str]:
        """The balances to seed: the provisioning file's, then ``[ocs] accounts``."""
        from imsp2pd.ims.ocs import (
            AccountError,
            balances_from_provisioning,
            currency_code,
            parse_amount,
        )

        section = config["ocs"]
        try:
            currency_code(section["currency"])
            accounts = {}
            if section["provisioning"]:
                path = config.path(section["provisioning"])
                # The default file is optional; a file the config names must be there.
                if path.exists() or section["provisioning"] != "subscribers.toml":
                    accounts = balances_from_provisioning(str(path))
            for impu, value in section["accounts"].items():
                accounts[impu] = str(parse_amount(value, f"balance of {impu}"))
        except AccountError as e:
            raise ConfigError(f"config: [ocs] {e}") from None
        return accounts

    def migrations(self) -> Any:
        from imsp2pd.ims.ocs import MIGRATIONS

        return MIGRATIONS

    def build(self, config: Config, store: Store, reactor: Any, hub: Hub) -> Any:
        from imsp2pd.diameter.codes import Application
        from imsp2pd.diameter.node import DiameterNode, diameter_local_hops
        from imsp2pd.diameter.peer import LocalConfig
        from imsp2pd.ims.ocs import AccountError, OnlineChargingSystem
        from imsp2pd.web import HttpError

        section = config["ocs"]
        realm = config["ims"]["domain"]
        ccrs = hub.metrics.counter("imsp2pd_ocs_ccr_total", "CCRs answered", ("action", "result"))

        def counted(req: Any, decision: Any) -> None:
            ccrs.inc(action=req.action.name, result=str(decision.answer.result_code))

        ocs = OnlineChargingSystem(store, section["origin_host"], realm, reactor.seconds, counted)
        local = LocalConfig(
            origin_host=section["origin_host"],
            origin_realm=realm,
            auth_applications=(Application.CREDIT_CONTROL,),
        )
        node = DiameterNode(
            reactor,
            local,
            handler=lambda msg, peer: ocs.handle_ccr(msg),
            metrics=hub.metrics,
            # an AS in this process: its CCRs are taken as sent, not decoded again
            local_hops=diameter_local_hops(hub),
        )
        hub.add_check(
            "ocs", lambda: {"ok": True, "peers": [p.origin_host for p in node.open_peers()]}
        )

        def admin_error(f: Any) -> Any:
            f.trap(AccountError)
            raise HttpError(400, "bad_account", str(f.value))

        def balances(req: Any) -> Any:
            return ocs.accounts().addCallback(lambda accs: {"accounts": accs})

        def balance(req: Any) -> Any:
            def found(acc: Any) -> Any:
                if acc is None:
                    raise HttpError(404, "no_account", f"no account for {req.params['impu']}")
                return acc

            return ocs.account(req.params["impu"]).addCallback(found)

        def adjust(req: Any) -> Any:
            body = req.json_object()
            try:
                d = ocs.adjust(
                    req.params["impu"],
                    credit=body.get("credit"),
                    set_to=body.get("balance"),
                    currency=body.get("currency"),
                )
            except AccountError as e:
                raise HttpError(400, "bad_account", str(e)) from None
            return d.addErrback(admin_error)

        def records(req: Any) -> Any:
            return ocs.records(req.arg("user")).addCallback(lambda rs: {"records": rs})

        hub.admin.route("GET", "/admin/balances", balances)
        hub.admin.route("GET", "/admin/balances/{impu}", balance)
        hub.admin.route("POST", "/admin/balances/{impu}", adjust)
        hub.admin.route("GET", "/admin/charging-records", records)
        host, port = split_host_port(section["listen"])
        accounts = self.initial_accounts(config)
        return OcsService(ocs, node, host, port, accounts, section["currency"])


ocs = OcsRole()
