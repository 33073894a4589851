"""Roles: the plugin interface and the objects a process shares between roles.

A role is an object providing :class:`IRole` (and ``twisted.plugin.IPlugin``)
in a module of the role plugin package :mod:`imsp2pd_roles` (the ``plugins/``
folder of the checkout). A third party adds a role by dropping a module into
an ``imsp2pd_roles/`` folder anywhere on ``sys.path`` (Twisted's drop-in
plugin mechanism), without touching imsp2pd.

The daemon (:mod:`imsp2pd.daemon`) loads the config with the schemas of every
known role, opens the store, applies every role's migrations, and then calls
``build(config, store, reactor, hub)`` on each selected role, lowest ``order``
first. The :class:`Hub` carries what roles in one process share: the
metrics registry, the control port's admin router, and a small registry of
in-process objects (``provide``/``lookup``) for the few things that are
shared without a socket (the revocation list between the DRM server and the
tracker, the AS's token issuer for the operator's seeder).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import IService
from twisted.plugin import getPlugins
from zope.interface import Attribute, Interface

from imsp2pd.config import Config, ConfigError, Schema
from imsp2pd.metrics import Registry
from imsp2pd.store import Migration, Store
from imsp2pd.web import Router


class IRole(Interface):
    """A server role of imsp2pd (``--role=NAME``)."""

    name = Attribute("str: the role's name, as given to --role")
    description = Attribute("str: one line saying what the role does")
    section = Attribute("str: the name of its config section")
    schema = Attribute("Mapping[str, Field]: the keys of its config section")
    order = Attribute("int: build order, lower first (default 100)")

    def check(config: Config) -> None:
        """Cross-key checks beyond the schema; raise ConfigError naming the key."""

    def migrations() -> Sequence[Migration]:  # type: ignore[misc,empty-body]
        """The store migrations this role needs, in order."""

    def build(config: Config, store: Store, reactor: Any, hub: Hub) -> IService:  # type: ignore[empty-body]
        """Make the role's service (not started)."""


@dataclass
class Hub:
    """What the roles of one process share."""

    reactor: Any
    config: Config
    store: Store
    metrics: Registry
    admin: Router
    roles: tuple[str, ...] = ()
    health_checks: dict[str, Callable[[], dict[str, Any]]] = field(default_factory=dict)
    _objects: dict[str, Any] = field(default_factory=dict)

    def add_check(self, name: str, check: Callable[[], dict[str, Any]]) -> None:
        """A health check shown by /health: returns a dict with at least ``ok``."""
        self.health_checks[name] = check

    def provide(self, name: str, obj: Any) -> None:
        if name in self._objects:
            raise ValueError(f"{name!r} is already provided in this process")
        self._objects[name] = obj

    def lookup(self, name: str, default: Any = None) -> Any:
        return self._objects.get(name, default)


def discover_roles(package: Any = None) -> dict[str, Any]:
    """Every role plugin found, by name."""
    if package is None:
        import imsp2pd_roles as package
    found: dict[str, Any] = {}
    for role in getPlugins(IRole, package):
        if role.name in found:
            raise ConfigError(f"two role plugins are named {role.name!r}")
        found[role.name] = role
    return found


def select_roles(spec: str, known: Mapping[str, Any]) -> list[Any]:
    """Parse ``--role`` (a comma list or ``all``) into role objects in build order."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ConfigError("no role given (use --role=all or a comma list)")
    if "all" in names:
        names = list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        listing = ", ".join(sorted(known)) or "none installed"
        raise ConfigError(f"unknown role {unknown[0]!r} (known roles: {listing}, or all)")
    chosen = [known[n] for n in dict.fromkeys(names)]
    return sorted(chosen, key=lambda r: (getattr(r, "order", 100), r.name))


def role_schemas(known: Mapping[str, Any]) -> dict[str, Schema]:
    return {r.section: r.schema for r in known.values()}


class Role:
    """A convenient base for role plugins: subclass, set the attributes, write build().

    A plugin module then holds one instance, e.g. ``hss = HssRole()``; the
    class must be decorated ``@implementer(IPlugin, IRole)``.
    """

    name: str = ""
    description: str = ""
    section: str = ""
    schema: Schema = {}
    order: int = 100

    def check(self, config: Config) -> None:
        return None

    def migrations(self) -> Sequence[Migration]:
        return ()

    def build(self, config: Config, store: Store, reactor: Any, hub: Hub) -> IService:
        raise NotImplementedError
