"""The ``as`` role: the SIP Application Server of the content service (imsp2pd.content).

It serves the PSI (``[as] psi``) over SIP UDP and TCP, charges through the
OCS over Diameter Ro, authorises rights and checks publishers at the DRM
server (``[drm] url`` with ``[drm] service_token``), registers swarms at the
operator's trackers through their admin API, and keeps purchases and the
catalogue in the store. The AS's Ed25519 key (tokens) is made at first start
under ``STATE/keys``.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.plugin import IPlugin
from zope.interface import implementer

from imsp2pd.config import Config, ConfigError, Field, host_port_check, one_of, split_host_port
from imsp2pd.roles import Hub, IRole, Role
from imsp2pd.store import Store


def _positive(value: int) -> str | None:
    return None if value > 0 else "must be positive"


@implementer(IPlugin, IRole)
class AsRole(Role):
    name = "as"
    description = "SIP application server: purchases, content injection, content lists"
    section = "as"
    order = 70
    schema = {
        "listen": Field(str, "127.0.0.1:7060", "SIP UDP and TCP HOST:PORT", check=host_port_check),
        "psi": Field(str, "sip:content@ims.example.org", "the PSI of the content service"),
        "scscf": Field(
            str, "127.0.0.1:6060", "S-CSCF for MESSAGEs to users (TCP)", check=host_port_check
        ),
        "origin_host": Field(str, "as.ims.example.org", "Diameter identity"),
        "ocs": Field(str, "127.0.0.1:3869", "the OCS, HOST:PORT", check=host_port_check),
        "ocs_host": Field(str, "ocs.ims.example.org", "the OCS's Diameter identity"),
        "trackers": Field(
            list, ["http://127.0.0.1:6969"], "trackers the AS chooses from", item=str
        ),
        "tracker_admin": Field(
            dict,
            {"http://127.0.0.1:6969": "http://127.0.0.1:9100"},
            "tracker URL = URL of the control port serving its /admin/swarms",
        ),
        "index_url": Field(
            str, "http://127.0.0.1:8080", "the content index (grants link its .torrents)"
        ),
        "trusted_publishers": Field(
            list, ["sip:carol@ims.example.org"], "publishers the operator trusts", item=str
        ),
        "token_lifetime": Field(
            int, 7 * 24 * 3600, "seconds a grant's tokens last", check=_positive
        ),
        "listing": Field(
            str,
            "auto",
            "who completes a new swarm before it is listed: operator (seeder), provider, auto",
            check=one_of("auto", "operator", "provider"),
        ),
        "completion_poll": Field(float, 2.0, "seconds between checks of pending swarms"),
        "trusted_hosts": Field(
            list,
            ["127.0.0.1", "::1"],
            "addresses whose P-Asserted-Identity the AS believes (the S-CSCFs)",
            item=str,
        ),
    }

    def check(self, config: Config) -> None:
        section = config["as"]
        admin = section["tracker_admin"]
        for tracker in section["trackers"]:
            if tracker.rstrip("/") not in {k.rstrip("/") for k in admin}:
                raise ConfigError(f"config: [as] tracker_admin has no control port for {tracker}")
        for k, v in admin.items():
            if not isinstance(v, str) or not v.startswith(("http://", "https://")):
                raise ConfigError(f"config: [as] tracker_admin {k} must be an http(s) URL")
        if not section["psi"].startswith("sip:"):
            raise ConfigError("config: [as] psi must be a sip: URI")

    def migrations(self) -> Any:
        from imsp2pd.content import catalogue, purchase

        return [*purchase.MIGRATIONS, *catalogue.MIGRATIONS]

    def build(self, config: Config, store: Store, reactor: Any, hub: Hub) -> Any:
        from imsp2pd import entitlement
        from imsp2pd.content.application import ApplicationServer, AsConfig
        from imsp2pd.content.backends import DrmBackend, TrackerSwarms
        from imsp2pd.content.catalogue import AssetState, Catalogue
        from imsp2pd.content.charging import RoCharging
        from imsp2pd.content.publish import PublishDesk
        from imsp2pd.content.purchase import DeskConfig, PurchaseDesk
        from imsp2pd.diameter.codes import Application
        from imsp2pd.diameter.node import DiameterNode, PeerConfig, diameter_local_hops
        from imsp2pd.diameter.peer import LocalConfig
        from imsp2pd.httpclient import JsonClient
        from imsp2pd.sip.proxy import Target
        from imsp2pd.sip.service import SipService, make_node, sip_local_hops, sip_metrics
        from imsp2pd.sip.ua import UserAgent
        from imsp2pd_roles.drm import ca_path

        s = config["as"]
        realm = config["ims"]["domain"]
        issuer = entitlement.Issuer(
            entitlement.load_or_create_private_key(config.state_path("keys"))
        )
        hub.provide("as.issuer", issuer)
        drm = config["drm"]
        drm_client = JsonClient(
            reactor,
            drm["url"],
            token=drm["service_token"] or config["admin"]["token"],
            ca_path=str(ca_path(config)) if drm["url"].startswith("https:") else None,
        )
        drm_backend = DrmBackend(drm_client)
        admin_token = config["admin"]["token"]
        swarms = TrackerSwarms(
            {
                t.rstrip("/"): JsonClient(reactor, url, token=admin_token)
                for t, url in s["tracker_admin"].items()
                if t.rstrip("/") in {x.rstrip("/") for x in s["trackers"]}
            }
        )
        ocs_host, ocs_port = split_host_port(s["ocs"])
        ro_node = DiameterNode(
            reactor,
            LocalConfig(s["origin_host"], realm, auth_applications=(Application.CREDIT_CONTROL,)),
            peers=[PeerConfig(s["ocs_host"], realm, ocs_host, ocs_port)],
            metrics=hub.metrics,
            # an OCS in this process takes the CCRs as sent, the AS its CCAs
            local_hops=diameter_local_hops(hub),
        )
        catalogue = Catalogue(store, reactor.seconds)
        purchases = PurchaseDesk(
            store,
            catalogue,
            RoCharging(ro_node, s["origin_host"], realm, s["ocs_host"]),
            drm_backend,
            issuer,
            DeskConfig(
                s["origin_host"],
                s["index_url"],
                drm["url"].rstrip("/") + "/license",
                s["token_lifetime"],
            ),
            reactor.seconds,
        )
        holder: dict[str, Any] = {}
        publications = PublishDesk(
            catalogue,
            drm_backend,
            swarms,
            issuer,
            s["trusted_publishers"],
            reactor.seconds,
            on_listed=lambda asset: holder["app"].listed(asset),
        )
        hub.provide("as.publications", publications)
        host, port = split_host_port(s["listen"])
        scscf_host, scscf_port = split_host_port(s["scscf"])
        node, ua = make_node(reactor, host, port, UserAgent, hops=sip_local_hops(hub))
        sip_metrics(hub).add("as", node)
        app = ApplicationServer(
            ua,
            purchases,
            publications,
            catalogue,
            AsConfig(
                psi=s["psi"],
                contact=f"sip:as@{host}:{port};transport=tcp",
                scscf=Target("TCP", scscf_host, scscf_port),
                trusted_hosts=frozenset(s["trusted_hosts"]),
            ),
            reactor.seconds,
        )
        holder["app"] = app
        _admin_routes(hub, publications, store, app)
        listing = s["listing"]
        if listing == "auto":
            listing = "operator" if "seeder" in hub.roles else "provider"

        def poll_pending() -> Any:
            """Where the provider completes swarms: list those with a seeder at the tracker."""
            if listing != "provider":
                return None

            def seeded(stats: dict[str, Any], info_hash: str) -> Any:
                if stats.get("seeders", 0) > 0:
                    return publications.complete(info_hash)
                return None

            def check(assets: list[Any]) -> None:
                for asset in assets:
                    d = swarms.stats(asset.tracker, asset.info_hash)
                    d.addCallback(seeded, asset.info_hash)
                    d.addErrback(lambda f: None)  # the next round tries again

            return catalogue.by_state(AssetState.PENDING).addCallback(check)

        hub.add_check(
            "as",
            lambda: {"ok": ro_node.is_available(), "sip": dict(node.stats), "listing": listing},
        )

        class BackEnds(Service):
            def startService(self) -> None:
                super().startService()
                ro_node.start()

            def stopService(self) -> Any:
                super().stopService()
                drm_client.close()
                for client in swarms.trackers.values():
                    client.close()
                return ro_node.stop()

        top = MultiService()
        BackEnds().setServiceParent(top)
        SipService(node, host, port).setServiceParent(top)
        TimerService(s["completion_poll"], poll_pending).setServiceParent(top)
        return top


def _admin_routes(hub: Hub, publications: Any, store: Any, app: Any) -> None:
    from twisted.python.failure import Failure

    from imsp2pd.content.purchase import PURCHASES, ServiceError
    from imsp2pd.web import HttpError

    def mapped(f: Failure) -> Any:
        if f.check(ServiceError):
            e: Any = f.value
            status = {400: 400, 403: 403, 404: 404}.get(e.status, 503)
            raise HttpError(status, "refused" if status < 500 else "backend_down", e.reason)
        return f

    def as_json(asset: Any) -> Any:
        return asset.to_json()

    def remove(req: Any) -> Any:
        return publications.remove(req.params["doi"], None).addCallbacks(as_json, mapped)

    def complete(req: Any) -> Any:
        return publications.complete(req.params["infohash"]).addCallbacks(as_json, mapped)

    def seeder_token(req: Any) -> Any:
        body = req.json_object()
        impu = body.get("impu")
        if not isinstance(impu, str) or not impu.startswith("sip:"):
            raise HttpError(400, "bad_impu", "impu must be a sip: URI")
        d = publications.seeder_token(impu, req.params["infohash"])
        return d.addCallbacks(lambda url: {"announce_url": url}, mapped)

    def purchases(req: Any) -> Any:
        user = req.arg("user")

        def txn(t: Any) -> Any:
            rows = t.find(PURCHASES, impu=user) if user else list(t.scan(PURCHASES))
            return [{k: v for k, v in doc.items() if k != "grant"} for _, doc in rows]

        return store.transact(txn).addCallback(lambda rows: {"purchases": rows})

    def presence(req: Any) -> Any:
        return {
            "providers": [
                {"impu": p.impu, "info_hash": p.info_hash, "expires_at": p.expires_at}
                for p in app.presence.values()
            ],
            "subscriptions": len(app.subscriptions),
        }

    def publications_list(req: Any) -> Any:
        from imsp2pd.content.catalogue import AssetState

        wanted = req.arg("state")
        try:
            state = AssetState(wanted) if wanted else None
        except ValueError:
            raise HttpError(400, "bad_state", "state must be pending, listed or removed") from None
        d = publications.catalogue.by_state(state)
        return d.addCallback(
            lambda assets: {
                "publications": [
                    {
                        "doi": a.doi,
                        "info_hash": a.info_hash,
                        "state": a.state.value,
                        "tracker": a.tracker,
                        "size": a.size,
                    }
                    for a in assets
                ]
            }
        )

    def torrent(req: Any) -> Any:
        from imsp2pd.web import Response

        def found(data: bytes | None) -> Response:
            if data is None:
                raise HttpError(404, "unknown_swarm", f"no publication {req.params['infohash']}")
            return Response(200, data, "application/x-bittorrent")

        return publications.catalogue.torrent_any_state(req.params["infohash"]).addCallback(found)

    hub.admin.route("GET", "/admin/publications", publications_list)
    hub.admin.route("GET", "/admin/publications/{infohash}/torrent", torrent)
    hub.admin.route("DELETE", "/admin/content/{doi}", remove)
    hub.admin.route("POST", "/admin/publications/{infohash}/complete", complete)
    hub.admin.route("POST", "/admin/publications/{infohash}/seeder-token", seeder_token)
    hub.admin.route("GET", "/admin/purchases", purchases)
    hub.admin.route("GET", "/admin/presence", presence)


appserver = AsRole()
