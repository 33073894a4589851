"""The ``index`` role: the content index web site (imsp2pd.content.index).

It serves the site on ``[index] listen`` (HTTP), reads the catalogue the AS
writes (same store), samples the health of every pending and listed swarm
every ``scrape_interval`` seconds (from the tracker's operator API where
``[index] tracker_admin`` names it, else by BEP 48 scrape), and adds
``GET /admin/content`` and ``GET /admin/content/{doi}`` to the control port.

The operator's tracker only answers a scrape that carries an entitlement
token. The index makes short-lived ``seeder`` tokens (IMPU
``sip:index@<domain>``) with the AS's token issuer: the one the AS role
provides in the same process (``hub.provide("as.issuer", issuer)``), else the
AS key file ``[index] scrape_key`` (default: the AS key under
``STATE/keys/`` when it exists, as in the lab). Without either it scrapes
without a token, and swarm health shows "unknown" on a tracker that insists.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from imsp2pd.config import Config, ConfigError, Field
from imsp2pd.roles import Hub, IRole, Role
from imsp2pd.store import Migration, Store

log = Logger()

SCRAPE_TOKEN_LIFETIME = 300


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0: any free port, for tests); IPv6 hosts in brackets."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"must be HOST:PORT, not {value!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _listen_check(value: str) -> str | None:
    try:
        split_listen(value)
    except ValueError as e:
        return str(e)
    return None


def _url_check(value: str) -> str | None:
    if not value.startswith(("http://", "https://")):
        return "must be an http:// or https:// URL"
    return None


def _psi_check(value: str) -> str | None:
    if value and (not value.startswith(("sip:", "sips:")) or any(c in value for c in ";?<> ")):
        return "must be a sip: URI without parameters (or empty)"
    return None


def _admin_urls_check(value: dict[str, Any]) -> str | None:
    for k, v in value.items():
        if not isinstance(v, str) or _url_check(v) or _url_check(k):
            return f"must map tracker URLs to http(s) control port URLs ({k!r})"
    return None


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


class ListenService(Service):
    """Listens with a site on HOST:PORT through the injected reactor."""

    def __init__(self, reactor: Any, host: str, port: int, site: Any) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.site = site
        self.listening: Any = None

    def startService(self) -> None:
        self.listening = self.reactor.listenTCP(self.port, self.site, interface=self.host)
        super().startService()

    def stopService(self) -> Any:
        super().stopService()
        if self.listening is not None:
            listening, self.listening = self.listening, None
            return listening.stopListening()
        return None

    def address(self) -> tuple[str, int] | None:
        if self.listening is None:
            return None
        a = self.listening.getHost()
        return a.host, a.port


class SamplerService(Service):
    """Samples the health of every pending and listed swarm on a timer."""

    def __init__(self, site: Any, reactor: Any, interval: float) -> None:
        self.site = site
        self.reactor = reactor
        self.interval = interval
        self._loop: LoopingCall | None = None

    def tick(self) -> Deferred[Any]:
        from imsp2pd.content.catalogue import AssetState

        cat = self.site.catalogue
        d = cat.by_state(AssetState.LISTED)

        def more(listed: list[Any]) -> Deferred[Any]:
            self.site.listed.set(len(listed))
            return cat.by_state(AssetState.PENDING).addCallback(lambda p: listed + p)

        d.addCallback(more)
        d.addCallback(self.site.monitor.sample_all)
        d.addErrback(lambda f: log.failure("index: cannot sample the swarms", f))
        return d

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None


class IndexService(MultiService):
    def __init__(self, site: Any, listener: ListenService, sampler: SamplerService) -> None:
        super().__init__()
        self.site = site
        self.listener = listener
        self.sampler = sampler
        listener.setServiceParent(self)
        sampler.setServiceParent(self)


def make_token_for(config: Config, hub: Hub, reactor: Any) -> Any:
    """``token_for(asset)``: a short-lived seeder token for scraping, or None."""
    from imsp2pd import entitlement
    from imsp2pd.entitlement import TrackerRole

    section = config["index"]
    impu = f"sip:index@{config['ims']['domain']}"
    key_path = (
        config.path(section["scrape_key"])
        if section["scrape_key"]
        else config.state_path("keys", entitlement.AS_KEY_FILENAME)
    )
    cached: dict[str, Any] = {}

    def issuer() -> Any:
        provided = hub.lookup("as.issuer")
        if provided is not None:
            return provided
        if "issuer" not in cached:
            cached["issuer"] = None
            if key_path.exists():
                try:
                    key = entitlement.load_or_create_private_key(key_path.parent, key_path.name)
                    cached["issuer"] = entitlement.Issuer(key)
                except entitlement.KeyConfigError as e:
                    log.error("index: cannot use {path} for scrape tokens: {e}", path=key_path, e=e)
        return cached["issuer"]

    def token_for(asset: Any) -> str | None:
        found = issuer()
        if found is None:
            return None
        not_after = int(reactor.seconds()) + SCRAPE_TOKEN_LIFETIME
        token: str = found.issue_tracker(
            impu, bytes.fromhex(asset.info_hash), TrackerRole.SEEDER, not_after
        )
        return token

    return token_for


@implementer(IPlugin, IRole)
class IndexRole(Role):
    name = "index"
    description = "content index web site: catalogue, asset pages with sip: purchase links, .torrents, JSON API, swarm dashboard"
    section = "index"
    order = 120
    schema = {
        "listen": Field(str, "127.0.0.1:8080", "HTTP address, HOST:PORT", check=_listen_check),
        "url": Field(str, "http://127.0.0.1:8080", "the site's public URL", check=_url_check),
        "psi": Field(
            str, "", "content service PSI; empty: sip:content@<[ims] domain>", check=_psi_check
        ),
        "site_name": Field(str, "imsp2p content", "name shown on every page"),
        "dashboard": Field(bool, True, "serve the operator's swarm dashboard at /dashboard"),
        "scrape_interval": Field(
            float, 15.0, "seconds between swarm health samples", check=_positive
        ),
        "scrape_timeout": Field(float, 5.0, "seconds a tracker has to answer", check=_positive),
        "history": Field(int, 240, "samples kept per swarm (ring buffer)", check=_positive),
        "tracker_admin": Field(
            dict,
            {},
            "tracker URL = URL of the control port serving its /admin/swarms (upload totals)",
            check=_admin_urls_check,
        ),
        "tracker_admin_token": Field(
            str, "", "bearer token of those control ports; empty: the [admin] token"
        ),
        "scrape_key": Field(
            str, "", "AS Ed25519 key for scrape tokens; empty: STATE/keys/as_ed25519.pem if there"
        ),
    }

    def migrations(self) -> tuple[Migration, ...]:
        from imsp2pd.content.catalogue import MIGRATIONS

        return tuple(MIGRATIONS)

    def check(self, config: Config) -> None:
        section = config["index"]
        if section["scrape_timeout"] >= section["scrape_interval"] * 4:
            raise ConfigError("config: [index] scrape_timeout must be well under scrape_interval")

    def build(self, config: Config, store: Store, reactor: Any, hub: Hub) -> IService:
        from imsp2pd.content.catalogue import Catalogue
        from imsp2pd.content.index import (
            FirstKnownSource,
            IndexSite,
            ScrapeHealthSource,
            SwarmMonitor,
            TrackerAdminSource,
            http_fetch,
            settings_from,
        )
        from imsp2pd.web import Router, make_site

        section = config["index"]
        catalogue = Catalogue(store, reactor.seconds)
        scrapes = hub.metrics.counter(
            "imsp2pd_index_scrapes_total", "Swarm health samples by outcome", ("result",)
        )
        fetch = http_fetch(reactor, timeout=section["scrape_timeout"])
        source: Any = ScrapeHealthSource(fetch, make_token_for(config, hub, reactor))
        if section["tracker_admin"]:
            token = section["tracker_admin_token"] or config["admin"]["token"]
            admin = TrackerAdminSource(fetch, section["tracker_admin"], token)
            source = FirstKnownSource(admin, source)
        monitor = SwarmMonitor(
            source,
            reactor.seconds,
            history=section["history"],
            max_age=section["scrape_interval"] * 2,
            on_sample=lambda s: scrapes.inc(result="ok" if s.health is not None else "unknown"),
        )
        site = IndexSite(
            catalogue,
            monitor,
            settings_from(section, config["ims"]["domain"]),
            hub.metrics,
            reactor.seconds,
            Router(max_body=0),
        )
        site.add_admin_routes(hub.admin)
        host, port = split_listen(section["listen"])
        listener = ListenService(reactor, host, port, make_site(site.router, reactor))
        sampler = SamplerService(site, reactor, section["scrape_interval"])

        def health() -> dict[str, Any]:
            return {"ok": listener.listening is not None, "swarms": len(monitor.tracked())}

        hub.add_check("index", health)
        hub.provide("index.catalogue", catalogue)
        return cast(IService, IndexService(site, listener, sampler))


index = IndexRole()
