"""``twistd imsp2p``: options and ``makeService`` for the daemon.

Everything that can be wrong with the command line or the config is found in
``Options.postOptions``, before twistd daemonizes, and reported as one line
on stderr with exit status 2. The store is opened and migrated when the
service starts (after any fork), before the roles start.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.logger import Logger
from twisted.python import usage

from imsp2pd.config import Config, ConfigError, find_config_path, load_config
from imsp2pd.control import ControlPort, admin_router
from imsp2pd.metrics import Registry
from imsp2pd.roles import Hub, discover_roles, role_schemas, select_roles
from imsp2pd.store import Migration, SQLiteStore, StoreError
from imsp2pd.web import make_site

log = Logger()


@dataclass(frozen=True)
class Plan:
    """What to run: a checked config and the roles, in build order."""

    config: Config
    roles: tuple[Any, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.roles)


def plan(role_spec: str, config_path: str | None = None) -> Plan:
    """Check ``--role`` and the config; raise ConfigError with one line."""
    known = discover_roles()
    roles = select_roles(role_spec, known)
    config = load_config(find_config_path(config_path), role_schemas(known))
    for role in roles:
        role.check(config)
    return Plan(config, tuple(roles))


class Options(usage.Options):
    synopsis = "[--role=ROLES] [--config=PATH] [--control=ENDPOINT]"
    longdesc = (
        "Run imsp2pd roles. ROLES is a comma list or 'all'. The config is --config, "
        "else $IMSP2P_CONFIG, else ./etc/imsp2pd.toml."
    )
    optParameters = [
        ["role", "r", "all", "roles to run: a comma list, or all"],
        ["config", "c", None, "config file (default: $IMSP2P_CONFIG, else ./etc/imsp2pd.toml)"],
        ["control", None, None, "control port endpoint (overrides [admin] listen)"],
    ]

    plan: Plan

    def postOptions(self) -> None:
        try:
            self.plan = plan(self["role"], self["config"])
        except ConfigError as e:
            # One line, not twistd's usage dump followed by the error.
            sys.stderr.write(f"imsp2p: {e}\n")
            raise SystemExit(2) from None


class StoreService(Service):
    """Opens and migrates the store at start; closes it at stop."""

    def __init__(self, store: SQLiteStore, migrations: list[Migration], reactor: Any) -> None:
        self.store = store
        self.migrations = migrations
        self.reactor = reactor

    def startService(self) -> None:
        try:
            self.store.start()
            applied = self.store.migrate(self.migrations)
        except StoreError as e:
            log.critical("{error}", error=str(e))
            self.reactor.callLater(0, self.reactor.stop)
            raise
        if applied:
            log.info("store: applied migrations {ids}", ids=", ".join(applied))
        super().startService()

    def stopService(self) -> None:
        super().stopService()
        self.store.close()


class RoleService(MultiService):
    """A role's service that marks the role up/down for /health and /metrics."""

    def __init__(self, name: str, inner: Any, control: ControlPort) -> None:
        super().__init__()
        self.setName(name)
        self.control = control
        inner.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        self.control.roles_up.add(str(self.name))

    def stopService(self) -> Any:
        self.control.roles_up.discard(self.name)
        return super().stopService()


def unique_migrations(migrations: Iterable[Migration]) -> list[Migration]:
    """Migrations in order, each once: roles that share collections (the AS and
    the index share the catalogue) both declare their migrations."""
    seen: dict[str, Migration] = {}
    for m in migrations:
        if m.id in seen and seen[m.id] is not m and seen[m.id] != m:
            raise ConfigError(f"two different store migrations are named {m.id!r}")
        seen.setdefault(m.id, m)
    return list(seen.values())


def build(p: Plan, reactor: Any, control_endpoint: str | None = None) -> MultiService:
    """The whole process: store, control port, then every role."""
    config = p.config
    top = MultiService()
    store = SQLiteStore(config.state_path(config["daemon"]["store"]), reactor)
    migrations = unique_migrations(m for role in p.roles for m in role.migrations())
    StoreService(store, migrations, reactor).setServiceParent(top)

    metrics = Registry()
    router = admin_router(config["admin"]["token"])
    hub = Hub(reactor, config, store, metrics, router, p.names)
    control = ControlPort(router, metrics, reactor.seconds, p.names, hub.health_checks)
    endpoint = control_endpoint or config["admin"]["listen"]
    site: Any = make_site(router, reactor)
    strports.service(endpoint, site, reactor=reactor).setServiceParent(top)

    for role in p.roles:
        service = role.build(config, store, reactor, hub)
        RoleService(role.name, service, control).setServiceParent(top)
    log.info(
        "imsp2pd: roles {roles} with {config}; control port {endpoint}",
        roles=",".join(p.names),
        config=str(config.file),
        endpoint=endpoint,
    )
    return top


class GcTuning(Service):
    """The collector tuned for a daemon that allocates many short-lived
    objects per message: young collections every 50,000 allocations instead
    of 700 (most objects of a request die before one), and what start-up
    made (modules, roles, configuration) moved out of the collector's sight
    once the process runs.  Full collections then only scan what traffic
    keeps alive, which the SIP and Diameter cores keep small."""

    THRESHOLDS = (50_000, 20, 10)

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()
        gc.set_threshold(*self.THRESHOLDS)
        self.reactor.callWhenRunning(self._freeze)

    def _freeze(self) -> None:
        gc.collect()
        gc.freeze()


def makeService(options: Options) -> MultiService:
    from twisted.internet import reactor

    top = build(options.plan, reactor, options["control"])
    GcTuning(reactor).setServiceParent(top)
    return top
