"""The AS's back ends over HTTP: the DRM server (rights, content, revocation).

:class:`DrmBackend` implements ``Rights`` for
:class:`~imsp2pd.content.purchase.PurchaseDesk` and ``ContentRegistry`` for
:class:`~imsp2pd.content.publish.PublishDesk` on the DRM server's web
services (DESIGN.md §3), with the AS's service credential. Its answers map
onto the AS's errors: 404 → UnknownContent, 403/409 → NotAllowed, any other
4xx → NotAllowed with the server's message, 5xx or no answer → BackendDown.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from imsp2pd.content.purchase import BackendDown, NotAllowed, PricedOffer, UnknownContent
from imsp2pd.httpclient import JsonClient, Reply, Unreachable


def _check(reply: Reply, what: str) -> Any:
    if reply.ok:
        return reply.json()
    try:
        body = reply.json()
        message = f"{body.get('error')}: {body.get('message')}"
    except Unreachable:
        message = reply.body[:200].decode("utf-8", "replace")
    if reply.status == 404:
        raise UnknownContent(f"{what}: {message}")
    if 400 <= reply.status < 500:
        raise NotAllowed(f"{what}: {message}")
    raise BackendDown(f"{what}: the DRM server answered {reply.status}")


def _down(f: Failure, what: str) -> Any:
    if f.check(Unreachable):
        raise BackendDown(f"{what}: {f.getErrorMessage()}")
    return f


class DrmBackend:
    def __init__(self, client: JsonClient) -> None:
        self.client = client

    def _call(self, method: str, path: str, body: Any, what: str) -> Deferred[Any]:
        d = self.client.request(method, path, body)
        return d.addCallbacks(_check, _down, callbackArgs=(what,), errbackArgs=(what,))

    # Rights (purchases) ---------------------------------------------------------

    def authorise(self, purchase_id: str, impu: str, offer: PricedOffer) -> Deferred[None]:
        body = {
            "impu": impu,
            "doi": offer.doi,
            "purchase_id": purchase_id,
            "offer": {
                "id": offer.offer_id,
                "price": str(offer.price),
                "currency": offer.currency,
                "rights": offer.rights,
                "devices": offer.devices,
            },
        }
        return self._call("POST", "/rights", body, "rights").addCallback(lambda _: None)

    # ContentRegistry (publications) ---------------------------------------------

    def content(self, doi: str) -> Deferred[dict[str, Any] | None]:
        d = self._call("GET", f"/content/{doi}", None, f"content {doi}")

        def unknown(f: Failure) -> None:
            f.trap(UnknownContent)
            return None

        return d.addErrback(unknown)

    def bind(self, doi: str, info_hash: str) -> Deferred[None]:
        d = self._call("PUT", f"/content/{doi}/infohash", {"info_hash": info_hash}, f"bind {doi}")
        return d.addCallback(lambda _: None)

    def revoke_doi(self, doi: str, reason: str) -> Deferred[None]:
        body = {"kind": "doi", "value": doi, "reason": reason}
        return self._call("POST", "/revocations", body, f"revoke {doi}").addCallback(lambda _: None)


class TrackerSwarms:
    """The operator's trackers through their admin API (``/admin/swarms``).

    ``trackers`` maps each tracker's base URL (what announce URLs start with)
    to a client of the control port that serves its admin API.
    """

    def __init__(self, trackers: dict[str, JsonClient]) -> None:
        if not trackers:
            raise ValueError("the AS needs at least one tracker")
        self.trackers = trackers

    def _client(self, tracker: str) -> JsonClient:
        client = self.trackers.get(tracker.rstrip("/"))
        if client is None:
            raise BackendDown(f"no admin API known for tracker {tracker}")
        return client

    def _call(self, tracker: str, method: str, path: str, body: Any = None) -> Deferred[Any]:
        what = f"tracker {tracker}"
        d = self._client(tracker).request(method, path, body)
        return d.addCallbacks(_check, _down, callbackArgs=(what,), errbackArgs=(what,))

    def load(self, tracker: str) -> Deferred[int]:
        """Peers in all the tracker's swarms."""

        def total(body: dict[str, Any]) -> int:
            return sum(int(s["seeders"]) + int(s["leechers"]) for s in body["swarms"])

        return self._call(tracker, "GET", "/admin/swarms").addCallback(total)

    def least_loaded(self) -> Deferred[str]:
        return Deferred.fromCoroutine(self._least_loaded())

    async def _least_loaded(self) -> str:
        loads: list[tuple[int, str]] = []
        for tracker in self.trackers:
            try:
                loads.append((await self.load(tracker), tracker))
            except BackendDown:
                continue  # a tracker that does not answer takes no new swarms
        if not loads:
            raise BackendDown("no tracker answers")
        return min(loads)[1]

    def register(self, tracker: str, info_hash: str, doi: str) -> Deferred[None]:
        body = {"info_hash": info_hash, "doi": doi, "state": "muted"}
        return self._call(tracker, "POST", "/admin/swarms", body).addCallback(lambda _: None)

    def stats(self, tracker: str, info_hash: str) -> Deferred[dict[str, Any]]:
        return self._call(tracker, "GET", f"/admin/swarms/{info_hash}")

    def unmute(self, tracker: str, info_hash: str) -> Deferred[None]:
        return self._action(tracker, info_hash, "unmute")

    def disable(self, tracker: str, info_hash: str) -> Deferred[None]:
        return self._action(tracker, info_hash, "disable")

    def _action(self, tracker: str, info_hash: str, action: str) -> Deferred[None]:
        d = self._call(tracker, "POST", f"/admin/swarms/{info_hash}/{action}")
        return d.addCallback(lambda _: None)
