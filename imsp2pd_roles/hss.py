"""The ``hss`` role: the Home Subscriber Server over Diameter Cx (imsp2pd.ims.hss).

At start it applies the provisioning file (``[hss] provisioning``, the lab's
etc/subscribers.toml) idempotently, listens for Cx on ``[hss] listen`` and
serves admin routes on the control port:

* ``GET /admin/subscribers`` and ``GET /admin/subscribers/{impi}``
* ``PUT /admin/subscribers/{impi}`` ``{"impus", "password" | "ha1", "aka",
  "barred", "profile" | "ifcs", "mandatory_capabilities",
  "optional_capabilities"}``: create or change; a registered user's S-CSCF
  gets the new profile in a PPR
* ``DELETE /admin/subscribers/{impi}``
* ``POST /admin/subscribers/{impi}/deregister``: administrative
  deregistration, with an RTR to the S-CSCF that serves the user
* ``GET /admin/psis``, ``PUT /admin/psis/{psi}`` ``{"application_server"}``,
  ``DELETE /admin/psis/{psi}``

A user without an S-CSCF gets Server-Capabilities in the UAA/LIA
(imsp2pd.ims.hss): its provisioned ``mandatory_capabilities`` and
``optional_capabilities``, else ``[hss] mandatory_capabilities`` and
``optional_capabilities`` (empty: any S-CSCF), with the ``[hss]
scscf_names`` (empty: none) as Server-Name hints. The I-CSCF matches the
numbers against its ``[[icscf.scscfs]] capabilities``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from imsp2pd.config import Config, ConfigError, Field, host_port_check, split_host_port
from imsp2pd.roles import Hub, IRole, Role
from imsp2pd.store import Store

log = Logger()
DEFAULT_PROVISIONING = "subscribers.toml"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


def _capabilities_check(value: list[Any]) -> str | None:
    from imsp2pd.ims.hss import capabilities_error

    return capabilities_error(value)


class HssService(Service):
    def __init__(self, hss: Any, node: Any, host: str, port: int, provisioning: Any) -> None:
        self.hss, self.node = hss, node
        self.host, self.port = host, port
        self.provisioning = provisioning

    def startService(self) -> None:
        super().startService()
        if self.provisioning is not None:
            from imsp2pd.ims.hss import load_provisioning

            path, data = self.provisioning
            try:
                counts = self.hss.store.transact_now(
                    lambda txn: load_provisioning(self.hss, txn, data, str(path))
                )
                self.hss.forget_cache()
                # the first UAR of each provisioned user answered from the cache too
                self.hss.warm_cache().addErrback(
                    lambda f: log.warn("HSS cache not warmed: {why}", why=f.getErrorMessage())
                )
            except ValueError as e:  # e.g. an IMPU the admin API gave to someone else
                log.error(
                    "HSS provisioning from {path} not applied: {error}",
                    path=str(path),
                    error=str(e),
                )
                counts = {"subscribers": 0, "psis": 0}
            log.info(
                "HSS provisioning from {path}: {subscribers} subscribers, {psis} PSIs",
                path=str(path),
                **counts,
            )
        self.node.listen(self.port, self.host)
        self.node.start()

    def stopService(self) -> Any:
        super().stopService()
        return self.node.stop()


@implementer(IPlugin, IRole)
class HssRole(Role):
    name = "hss"
    description = (
        "home subscriber server: subscribers, credentials, profiles, PSIs over Diameter Cx"
    )
    section = "hss"
    order = 20
    schema = {
        "listen": Field(str, "127.0.0.1:3868", "Diameter TCP HOST:PORT", check=host_port_check),
        "origin_host": Field(str, "hss.ims.example.org", "Diameter identity"),
        "scscf_names": Field(
            list,
            [],
            "S-CSCF names (SIP URIs) sent inside Server-Capabilities, for an I-CSCF"
            " to prefer or fall back on; empty: capabilities only",
            item=str,
        ),
        "mandatory_capabilities": Field(
            list,
            [],
            "capabilities a subscriber's S-CSCF must have, unless its provisioning says",
            item=int,
            check=_capabilities_check,
        ),
        "optional_capabilities": Field(
            list,
            [],
            "capabilities a subscriber's S-CSCF should have, unless its provisioning says",
            item=int,
            check=_capabilities_check,
        ),
        "provisioning": Field(
            str, DEFAULT_PROVISIONING, "provisioning file applied at start ('' for none)"
        ),
        "watchdog_interval": Field(float, 30.0, "Diameter Tw in seconds", check=_positive),
        "max_auth_items": Field(int, 5, "most AKA vectors per MAA", check=_positive),
    }

    def check(self, config: Config) -> None:
        found = self._provisioning(config)
        if found is None:
            return
        from imsp2pd.ims.hss import Hss, HssConfig, MemoryTxn, ProvisioningError, load_provisioning

        path, data = found
        try:  # a dry run, so that a bad file is one line at start, not a failed service
            load_provisioning(
                Hss(HssConfig(realm=config["ims"]["domain"])), MemoryTxn(), data, str(path)
            )
        except (ProvisioningError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"config: [hss] provisioning: {e}") from None

    def _provisioning(self, config: Config) -> tuple[Any, dict[str, Any]] | None:
        name = config["hss"]["provisioning"]
        if not name:
            return None
        path = config.path(name)
        if name == DEFAULT_PROVISIONING and not path.exists():
            # The default file is optional (a config without it starts with no
            # subscribers); a file named explicitly must exist.
            log.warn("HSS: no provisioning file {path}; starting without", path=str(path))
            return None
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise ConfigError(
                f"config: [hss] provisioning: cannot read {path}: {e.strerror}"
            ) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config: [hss] provisioning: {path}: {e}") from None
        return path, data

    def migrations(self) -> Any:
        from imsp2pd.ims.hss import MIGRATIONS

        return MIGRATIONS

    def build(self, config: Config, store: Store, reactor: Any, hub: Hub) -> Any:
        from imsp2pd.diameter import cx
        from imsp2pd.diameter.codes import Application, Vendor
        from imsp2pd.diameter.node import DiameterNode, diameter_local_hops
        from imsp2pd.diameter.peer import LocalConfig
        from imsp2pd.ims.hss import Hss, HssConfig

        section = config["hss"]
        realm = config["ims"]["domain"]
        hss = Hss(
            HssConfig(
                origin_host=section["origin_host"],
                realm=realm,
                scscf_names=tuple(section["scscf_names"]),
                mandatory_capabilities=tuple(section["mandatory_capabilities"]),
                optional_capabilities=tuple(section["optional_capabilities"]),
                max_auth_items=section["max_auth_items"],
            ),
            store,
        )
        answers = hub.metrics.counter(
            "imsp2pd_hss_cx_answers_total", "Cx answers sent", ("command", "result")
        )

        series: dict[tuple[int, int], tuple[str, ...]] = {}  # made once per (command, result)

        def count(ans: Any, code: int) -> Any:
            result = cx.outcome(ans).code
            one = series.get((code, result))
            if one is None:
                one = series[(code, result)] = answers.series(command=str(code), result=str(result))
            answers.inc_series(one)
            return ans

        def handle(msg: Any, peer: Any) -> Any:
            result = hss.handle(msg, peer)
            if isinstance(result, Deferred):
                return result.addCallback(count, msg.code)
            return count(result, msg.code)

        local = LocalConfig(
            origin_host=section["origin_host"],
            origin_realm=realm,
            vendor_applications=((Vendor.TGPP, Application.CX),),
            watchdog_interval=section["watchdog_interval"],
        )
        node = DiameterNode(
            reactor,
            local,
            handler=handle,
            metrics=hub.metrics,
            local_hops=diameter_local_hops(hub),
        )
        hub.add_check(
            "hss", lambda: {"ok": True, "peers": [p.origin_host for p in node.open_peers()]}
        )
        HssAdmin(hss, node, store, cx.Origin(section["origin_host"], realm), reactor).install(
            hub.admin
        )
        host, port = split_host_port(section["listen"])
        return HssService(hss, node, host, port, self._provisioning(config))


class HssAdmin:
    """The HSS admin routes (see the module docstring)."""

    def __init__(self, hss: Any, node: Any, store: Store, origin: Any, reactor: Any) -> None:
        from imsp2pd.diameter import cx

        self.hss, self.node, self.store, self.origin = hss, node, store, origin
        self.sessions = cx.SessionIds(origin.host, reactor.seconds())

    def install(self, router: Any) -> None:
        router.route("GET", "/admin/subscribers", self.list_subscribers)
        router.route("GET", "/admin/subscribers/{impi}", self.get_subscriber)
        router.route("PUT", "/admin/subscribers/{impi}", self.put_subscriber)
        router.route("DELETE", "/admin/subscribers/{impi}", self.delete_subscriber)
        router.route("POST", "/admin/subscribers/{impi}/deregister", self.deregister)
        router.route("GET", "/admin/psis", self.list_psis)
        router.route("PUT", "/admin/psis/{psi}", self.put_psi)
        router.route("DELETE", "/admin/psis/{psi}", self.delete_psi)

    # helpers ----------------------------------------------------------------------

    def _bad(self, f: Any) -> Any:
        from imsp2pd.ims.hss import ProvisioningError
        from imsp2pd.web import HttpError

        f.trap(ProvisioningError)
        raise HttpError(400, "bad_subscriber", str(f.value))

    def _not_found(self, what: str) -> Any:
        from imsp2pd.web import HttpError

        return HttpError(404, "not_found", f"no {what}")

    # routes -----------------------------------------------------------------------

    def list_subscribers(self, req: Any) -> Any:
        from imsp2pd.ims.hss import SUBSCRIBERS

        def run(txn: Any) -> Any:
            return [self.hss.get_subscriber(txn, key) for key, _ in txn.scan(SUBSCRIBERS)]

        return self.hss.transact(run).addCallback(lambda subs: {"subscribers": subs})

    def get_subscriber(self, req: Any) -> Any:
        impi = unquote(req.params["impi"])

        def found(doc: Any) -> Any:
            if doc is None:
                raise self._not_found(f"subscriber {impi}")
            return doc

        return self.hss.transact(lambda t: self.hss.get_subscriber(t, impi)).addCallback(found)

    def put_subscriber(self, req: Any) -> Any:
        from imsp2pd.diameter import cx
        from imsp2pd.ims.hss import IDENTITIES, REGISTERED, ProvisioningError, load_provisioning
        from imsp2pd.web import HttpError

        impi = unquote(req.params["impi"])
        entry = {**req.json_object(), "impi": impi}

        def run(txn: Any) -> Any:
            if "ifcs" not in entry and entry.get("profile", "content") == "content":
                # The content profile points at the first PSI's application server.
                psis = [d for _, d in txn.find(IDENTITIES, impi=None) if d.get("kind") == "psi"]
                entry["ifcs"] = (
                    _content({"identity": psis[0]["impu"], "application_server": psis[0]["as"]})
                    if psis
                    else []
                )
            load_provisioning(self.hss, txn, {"subscriber": [entry]}, "request")
            shown = self.hss.get_subscriber(txn, impi)
            registered = [i["impu"] for i in shown["impus"] if i["state"] == REGISTERED]
            host = txn.get(IDENTITIES, registered[0]).get("scscf_host") if registered else None
            data = self.hss.user_data(txn, txn.get("hss_subscribers", impi)) if host else None
            return shown, host, data

        def push(result: Any) -> Any:
            shown, host, user_data = result
            if host is None:
                return shown
            ppr = cx.ppr(
                self.origin, self.sessions.next(), host, self.origin.realm, impi, user_data
            )
            d = self.node.request(ppr, timeout=10.0)
            d.addCallback(lambda ans: {**shown, "ppr": cx.outcome(ans).code})
            d.addErrback(lambda f: {**shown, "ppr": f"not delivered: {f.getErrorMessage()}"})
            return d

        def bad(f: Any) -> Any:
            f.trap(ProvisioningError, TypeError, ValueError, AttributeError)
            raise HttpError(400, "bad_subscriber", str(f.value))

        return self.hss.transact(run).addCallbacks(push, bad)

    def delete_subscriber(self, req: Any) -> Any:
        impi = unquote(req.params["impi"])

        def done(found: bool) -> Any:
            if not found:
                raise self._not_found(f"subscriber {impi}")
            return {"deleted": impi}

        return self.hss.transact(lambda t: self.hss.delete_subscriber(t, impi)).addCallback(done)

    def deregister(self, req: Any) -> Any:
        from imsp2pd.diameter import cx

        impi = unquote(req.params["impi"])

        def run(txn: Any) -> Any:
            if txn.get("hss_subscribers", impi) is None:
                raise self._not_found(f"subscriber {impi}")
            return self.hss.deregister(txn, impi)

        def notify(result: Any) -> Any:
            host, impus = result
            out: dict[str, Any] = {"impi": impi, "deregistered": impus}
            if host is None:
                return out
            rtr = cx.rtr(
                self.origin,
                self.sessions.next(),
                host,
                self.origin.realm,
                impi,
                impus,
                reason_info="deregistered by the operator",
            )
            d = self.node.request(rtr, timeout=10.0)
            d.addCallback(lambda ans: {**out, "rtr": cx.outcome(ans).code})
            d.addErrback(lambda f: {**out, "rtr": f"not delivered: {f.getErrorMessage()}"})
            return d

        return self.hss.transact(run).addCallback(notify)

    def list_psis(self, req: Any) -> Any:
        from imsp2pd.ims.hss import IDENTITIES

        def run(txn: Any) -> Any:
            return [
                {"identity": k, "application_server": d.get("as")}
                for k, d in txn.find(IDENTITIES, impi=None)
                if d.get("kind") == "psi"
            ]

        return self.hss.transact(run).addCallback(lambda psis: {"psis": psis})

    def put_psi(self, req: Any) -> Any:
        psi = unquote(req.params["psi"])
        body = req.json_object()
        server = body.get("application_server")
        if not isinstance(server, str):
            from imsp2pd.web import HttpError

            raise HttpError(400, "bad_psi", "application_server (a SIP URI) is required")

        def shown(doc: Any) -> Any:
            return {"identity": psi, "application_server": doc["as"]}

        return self.hss.transact(lambda t: self.hss.put_psi(t, psi, server)).addCallbacks(
            shown, self._bad
        )

    def delete_psi(self, req: Any) -> Any:
        from imsp2pd.ims.hss import IDENTITIES

        psi = unquote(req.params["psi"])

        def run(txn: Any) -> bool:
            doc = txn.get(IDENTITIES, psi)
            if doc is None or doc.get("kind") != "psi":
                return False
            return bool(txn.delete(IDENTITIES, psi))

        def done(found: bool) -> Any:
            if not found:
                raise self._not_found(f"PSI {psi}")
            return {"deleted": psi}

        return self.hss.transact(run).addCallback(done)


def _content(psi: Mapping[str, Any]) -> list[dict[str, Any]]:
    from imsp2pd.ims.hss import content_ifcs, ifc_documents

    return ifc_documents(content_ifcs(str(psi["identity"]), str(psi["application_server"])))


__all__ = ["HssAdmin", "HssRole", "HssService", "hss"]

hss = HssRole()
