"""The ``seeder`` role: the operator's seeding service (imsp2pd.content.seeder)."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.plugin import IPlugin
from zope.interface import implementer

from imsp2pd.config import Config, ConfigError, Field
from imsp2pd.roles import Hub, IRole, Role
from imsp2pd.store import Store


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


@implementer(IPlugin, IRole)
class SeederRole(Role):
    name = "seeder"
    description = "the operator's seeding service: takes new content over while its swarm is muted"
    section = "seeder"
    order = 80
    schema = {
        "impu": Field(str, "sip:seeder@ims.example.org", "the seeder's identity in its tokens"),
        "as_admin_url": Field(str, "", "control port of the AS; empty: [admin] url"),
        "directory": Field(str, "seeder", "where content is kept, under [daemon] state_dir"),
        "budget_mib": Field(int, 4096, "storage budget in MiB", check=_positive),
        "upload_kib": Field(int, 0, "upload limit per swarm in KiB/s (0: none)"),
        "interface": Field(str, "127.0.0.1", "peer-wire address"),
        "poll": Field(
            float, 1.0, "seconds between looks at the AS's publications", check=_positive
        ),
    }

    def check(self, config: Config) -> None:
        if config["seeder"]["upload_kib"] < 0:
            raise ConfigError("config: [seeder] upload_kib must not be negative")

    def build(self, config: Config, store: Store, reactor: Any, hub: Hub) -> Any:
        import treq

        from imsp2pd.content.seeder import OperatorSeeder
        from imsp2pd.httpclient import JsonClient

        s = config["seeder"]

        def http_get(url: str) -> Any:
            d = treq.get(url, persistent=False, timeout=15)
            return d.addCallback(treq.content)

        admin = JsonClient(
            reactor, s["as_admin_url"] or config["admin"]["url"], token=config["admin"]["token"]
        )
        seeder = OperatorSeeder(
            reactor,
            admin,
            config.state_path(s["directory"]),
            impu=s["impu"],
            budget=s["budget_mib"] * 1024 * 1024,
            upload_rate=s["upload_kib"] * 1024 or None,
            http_get=http_get,
            interface=s["interface"],
        )
        hub.admin.route("GET", "/admin/seeder", lambda req: seeder.status())
        hub.add_check(
            "seeder", lambda: {"ok": seeder.last_error is None, "swarms": len(seeder.swarms)}
        )

        class Stopper(Service):
            def stopService(self) -> Any:
                super().stopService()
                return seeder.stop()

        top = MultiService()
        Stopper().setServiceParent(top)
        TimerService(s["poll"], seeder.poll).setServiceParent(top)
        return top


seeder = SeederRole()
