"""The ``tracker`` role: the operator-controlled BitTorrent tracker (HTTP).

Serves ``/announce`` and ``/scrape`` on ``[tracker] listen``, admits only
holders of a tracker token signed by the AS (its public key from
``[tracker] as_public_key``, else the AS key under STATE/keys, made there if
missing as in the lab), keeps swarm registrations in the store, adds
``/admin/swarms`` to the control port and swarm metrics to ``/metrics``.

Revocations: ``[tracker] revocations = "store"`` reads the DRM server's list
from the shared store (one process), ``"http"`` pulls ``GET
/revocations?since=T`` from ``[tracker] drm_url`` (default ``[drm] url``),
``"auto"`` (default) picks ``store`` when the drm role runs in the same
process and ``http`` otherwise, ``"off"`` disables the check (tests only).
"""

from __future__ import annotations

from typing import Any, cast

from twisted.application.service import IService
from twisted.plugin import IPlugin
from zope.interface import implementer

from imsp2pd.config import Config, ConfigError, Field, one_of
from imsp2pd.roles import Hub, IRole, Role
from imsp2pd.store import Migration, Store


def _split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"must be HOST:PORT, not {value!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _listen_check(value: str) -> str | None:
    try:
        _split_listen(value)
    except ValueError as exc:
        return str(exc)
    return None


def _positive(value: int) -> str | None:
    return None if value > 0 else "must be positive"


@implementer(IPlugin, IRole)
class TrackerRole(Role):
    name = "tracker"
    description = (
        "operator-controlled BitTorrent tracker: token admission, mute/disable, stats (HTTP)"
    )
    section = "tracker"
    order = 60
    schema = {
        "listen": Field(
            str, "127.0.0.1:6969", "HTTP address, HOST:PORT (port 0: any)", check=_listen_check
        ),
        "as_public_key": Field(
            str,
            "",
            "AS Ed25519 public key (PEM, PEM file, base64url or hex); empty: the AS key "
            "under STATE/keys (made there if missing, as in the lab)",
        ),
        "interval": Field(int, 600, "announce interval, seconds", check=_positive),
        "min_interval": Field(int, 60, "minimum announce interval, seconds", check=_positive),
        "peer_expiry": Field(int, 1260, "drop peers silent this long, seconds", check=_positive),
        "numwant": Field(int, 50, "peers per answer unless the client asks", check=_positive),
        "max_numwant": Field(int, 200, "most peers per answer", check=_positive),
        "max_peers": Field(int, 200_000, "peers in all swarms", check=_positive),
        "max_peers_per_swarm": Field(int, 50_000, "peers in one swarm", check=_positive),
        "max_swarms": Field(int, 100_000, "registered swarms", check=_positive),
        "revocations": Field(
            str, "auto", "auto, store, http or off", check=one_of("auto", "store", "http", "off")
        ),
        "revocation_poll": Field(int, 30, "seconds between revocation pulls", check=_positive),
        "drm_url": Field(str, "", "DRM server URL for revocations; empty: [drm] url"),
        "drm_token": Field(
            str,
            "",
            "bearer credential at the DRM server; empty: [drm] service_token, else [admin] token",
        ),
        "ca": Field(
            str,
            "",
            "CA the DRM server's certificate chains to; empty: [drm] ca, else STATE/tls/ca.pem",
        ),
    }

    def migrations(self) -> tuple[Migration, ...]:
        from imsp2pd.bittorrent.tracker_http import MIGRATIONS

        return MIGRATIONS

    def check(self, config: Config) -> None:
        s = config["tracker"]
        if s["min_interval"] > s["interval"]:
            raise ConfigError("config: [tracker] min_interval must not exceed interval")
        if s["peer_expiry"] <= s["interval"]:
            raise ConfigError("config: [tracker] peer_expiry must be longer than interval")
        if s["numwant"] > s["max_numwant"]:
            raise ConfigError("config: [tracker] numwant must not exceed max_numwant")

    def build(self, config: Config, store: Store, reactor: Any, hub: Hub) -> IService:
        from imsp2pd import entitlement
        from imsp2pd.bittorrent.revocations import RevocationSet
        from imsp2pd.bittorrent.tracker import Tracker, TrackerConfig
        from imsp2pd.bittorrent.tracker_http import (
            RevocationPoller,
            SwarmRegistry,
            TrackerMetrics,
            TrackerResource,
            TrackerService,
            add_admin_routes,
        )

        s = config["tracker"]
        try:
            if s["as_public_key"]:
                as_key = entitlement.load_public_key(s["as_public_key"])
            else:
                as_key = entitlement.load_or_create_private_key(
                    config.state_path("keys")
                ).public_key()
        except entitlement.KeyConfigError as exc:
            raise ConfigError(f"config: [tracker] as_public_key: {exc}") from None
        revoked = RevocationSet()
        tracker = Tracker(
            entitlement.Verifier(as_key),
            TrackerConfig(
                interval=s["interval"],
                min_interval=s["min_interval"],
                peer_expiry=s["peer_expiry"],
                default_numwant=s["numwant"],
                max_numwant=s["max_numwant"],
                max_peers=s["max_peers"],
                max_peers_per_swarm=s["max_peers_per_swarm"],
                max_swarms=s["max_swarms"],
            ),
            revocations=revoked,
        )
        metrics = TrackerMetrics(hub.metrics, tracker)
        tracker.on_failure = metrics.failure
        registry = SwarmRegistry(tracker, store, reactor.seconds)
        add_admin_routes(hub.admin, registry)
        hub.provide("tracker", tracker)
        hub.provide("tracker.swarms", registry)  # durable registration, for an in-process AS
        poller = self._poller(config, store, reactor, hub, revoked, tracker, RevocationPoller)
        hub.add_check(
            "tracker",
            lambda: {
                "ok": poller is None or poller.failures < 3,
                "swarms": tracker.swarm_count,
                "peers": tracker.peer_count,
                "revocation_pull_failures": 0 if poller is None else poller.failures,
            },
        )
        host, port = _split_listen(s["listen"])
        resource = TrackerResource(tracker, reactor.seconds, metrics)
        return cast(
            IService,
            TrackerService(
                reactor, registry, resource, port, host, poller, float(s["revocation_poll"])
            ),
        )

    @staticmethod
    def _poller(
        config: Config,
        store: Store,
        reactor: Any,
        hub: Hub,
        revoked: Any,
        tracker: Any,
        poller_cls: Any,
    ) -> Any:
        from imsp2pd.bittorrent.tracker_http import HttpRevocationSource, StoreRevocationSource

        s = config["tracker"]
        mode = s["revocations"]
        if mode == "off":
            return None
        if mode == "auto":
            mode = "store" if "drm" in hub.roles else "http"
        if mode == "store":
            return poller_cls(StoreRevocationSource(store, reactor.seconds), revoked, tracker)
        drm = config.sections.get("drm", {})
        url = s["drm_url"] or drm.get("url", "")
        if not url:
            raise ConfigError("config: [tracker] drm_url is needed to pull revocations over HTTP")
        token = s["drm_token"] or drm.get("service_token", "") or config["admin"]["token"]
        get = _https_get(config, reactor, s["ca"] or drm.get("ca", ""))
        return poller_cls(HttpRevocationSource(url, token, get), revoked, tracker)


def _https_get(config: Config, reactor: Any, ca: str) -> Any:
    import treq.client
    from twisted.web.client import Agent

    from imsp2pd import tlslab

    ca_path = config.path(ca) if ca else config.state_path("tls", "ca.pem")
    if not ca_path.exists():
        # The lab CA is made by the drm role's first start; trust the system otherwise.
        return treq.client.HTTPClient(cast(Any, Agent(reactor))).get
    try:
        policy = tlslab.client_policy(ca_path)
    except tlslab.TlsLabError as exc:
        raise ConfigError(f"config: [tracker] ca: {exc}") from None
    return treq.client.HTTPClient(cast(Any, Agent(reactor, contextFactory=policy))).get


tracker = TrackerRole()
