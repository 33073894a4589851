"""makeService's work, in memory: the services for a set of roles, none started."""

from pathlib import Path

from twisted.application.service import IService, Service
from twisted.internet.task import Clock
from twisted.plugin import IPlugin
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from imsp2pd.config import ConfigError, Field, load_config
from imsp2pd.daemon import Plan, RoleService, StoreService, build
from imsp2pd.roles import IRole, Role, select_roles
from imsp2pd.store import Collection, Migration


@implementer(IPlugin, IRole)
class Echo(Role):
    name = "echo"
    section = "echo"
    schema = {"greeting": Field(str, "hi")}
    order = 20

    def __init__(self) -> None:
        self.built_with = None

    def migrations(self):
        return [Migration("echo-0001", [Collection("echoes")])]

    def build(self, config, store, reactor, hub):
        self.built_with = (config["echo"]["greeting"], store, reactor, hub)
        hub.admin.route("GET", "/admin/echo", lambda r: {"greeting": config["echo"]["greeting"]})
        return Service()


@implementer(IPlugin, IRole)
class First(Echo):
    name = "first"
    section = "first"
    order = 10

    def migrations(self):
        return []


class FakeReactor(Clock):
    def addSystemEventTrigger(self, *a, **k):
        return None


class BuildTests(TestCase):
    def setUp(self) -> None:
        d = Path(self.mktemp()).resolve()
        (d / "etc").mkdir(parents=True)
        f = d / "etc" / "c.toml"
        f.write_text(
            '[admin]\ntoken = "t"\nlisten = "tcp:0:interface=127.0.0.1"\n[echo]\ngreeting = "hello"\n'
        )
        self.roles = {"echo": Echo(), "first": First()}
        schemas = {r.section: r.schema for r in self.roles.values()}
        self.config = load_config(f, schemas)

    def test_services_for_the_roles_in_order_not_started(self) -> None:
        reactor = FakeReactor()
        roles = select_roles("all", self.roles)
        self.assertEqual([r.name for r in roles], ["first", "echo"])
        top = build(Plan(self.config, tuple(roles)), reactor)
        children = list(IService(top))
        self.assertIsInstance(children[0], StoreService)
        self.assertEqual(
            [c.name for c in children if isinstance(c, RoleService)], ["first", "echo"]
        )
        self.assertEqual(len(children), 4)  # store, control port, two roles
        self.assertFalse(any(c.running for c in children))
        greeting, store, built_reactor, hub = self.roles["echo"].built_with
        self.assertEqual(greeting, "hello")
        self.assertIs(built_reactor, reactor)
        self.assertEqual(hub.roles, ("first", "echo"))
        self.assertIn(("GET", "/admin/echo"), hub.admin.routes())
        self.assertEqual([m.id for m in children[0].migrations], ["echo-0001"])
        self.assertFalse(store.path.exists())  # opened at start, never before a fork

    def test_select_roles(self) -> None:
        self.assertEqual([r.name for r in select_roles("echo, echo", self.roles)], ["echo"])
        with self.assertRaises(ConfigError) as e:
            select_roles("echo,nope", self.roles)
        self.assertEqual(str(e.exception), "unknown role 'nope' (known roles: echo, first, or all)")
        with self.assertRaises(ConfigError):
            select_roles(" , ", self.roles)


class MigrationListTests(TestCase):
    def test_shared_migrations_are_applied_once(self) -> None:
        from imsp2pd.daemon import unique_migrations

        a = Migration("shared-0001", (Collection("x"),))
        b = Migration("own-0001", (Collection("y"),))
        self.assertEqual(
            unique_migrations([a, b, Migration("shared-0001", (Collection("x"),))]), [a, b]
        )
        with self.assertRaises(ConfigError):
            unique_migrations([a, Migration("shared-0001", (Collection("z"),))])
