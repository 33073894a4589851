"""What the client asks of the content service (the AS behind the PSI), over a UE.

:class:`ContentService` turns the flows of DESIGN.md §2 into calls: a
purchase (MESSAGE, then the grant MESSAGE), a publisher token, a publication
(PUBLISH with the .torrent and the metadata, then the seeding token), a
removal, and a content-list subscription (SUBSCRIBE, then NOTIFYs). A
refusal becomes a :class:`~imsp2pd.client.ue.UeError` with the status and
the reason the AS gave ("402 credit limit reached").
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import inlineCallbacks

from imsp2pd.client.ue import UeError, UserEquipment, of_type
from imsp2pd.content import multipart
from imsp2pd.content.application import REMOVAL_TYPE
from imsp2pd.content.publish import (
    EVENT_PACKAGE,
    PUBLISHER_TOKEN_REQUEST_TYPE,
    PUBLISHER_TOKEN_TYPE,
    SEEDING_TOKEN_TYPE,
    TORRENT_TYPE,
)
from imsp2pd.content.purchase import GRANT_TYPE, PURCHASE_TYPE
from imsp2pd.sip.message import Request, Response


def _refused(what: str, resp: Response) -> UeError:
    return UeError(f"{what}: {resp.status} {resp.reason}")


def _json(req: Request) -> Any:
    try:
        return json.loads(req.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise UeError(f"the {req.content_type} from the AS is not JSON") from None


class ContentService:
    def __init__(self, ue: UserEquipment, psi: str, timeout: float = 30.0) -> None:
        self.ue = ue
        self.psi = psi
        self.timeout = timeout

    @inlineCallbacks
    def buy(self, doi: str, offer: str, purchase_id: str | None = None) -> Any:
        """Purchase ``offer`` of ``doi``; the grant (a dict)."""
        pid = purchase_id or str(uuid.uuid4())
        body = json.dumps({"purchase_id": pid, "doi": doi, "offer": offer}).encode()
        resp = yield self.ue.request("MESSAGE", self.psi, body=body, content_type=PURCHASE_TYPE)
        if resp.status != 200:
            raise _refused(f"purchase of {doi}", resp)
        req = yield self.ue.wait_for(
            of_type(GRANT_TYPE, lambda r: _json(r).get("purchase_id") == pid), self.timeout
        )
        return _json(req)

    @inlineCallbacks
    def publisher_token(self) -> Any:
        resp = yield self.ue.request(
            "MESSAGE", self.psi, body=b"{}", content_type=PUBLISHER_TOKEN_REQUEST_TYPE
        )
        if resp.status != 200:
            raise _refused("publisher token", resp)
        req = yield self.ue.wait_for(of_type(PUBLISHER_TOKEN_TYPE), self.timeout)
        return _json(req)["publisher_token"]

    @inlineCallbacks
    def publish(self, torrent: bytes, metadata: Mapping[str, Any], expires: int = 3600) -> Any:
        """PUBLISH a .torrent and its metadata; (seeding grant dict, SIP-ETag)."""
        ctype, body = multipart.build(
            [
                multipart.Part(TORRENT_TYPE, torrent),
                multipart.Part("application/json", json.dumps(dict(metadata)).encode()),
            ]
        )
        resp = yield self.ue.request(
            "PUBLISH",
            self.psi,
            body=body,
            content_type=ctype,
            extra=(("Event", EVENT_PACKAGE), ("Expires", str(expires))),
        )
        if resp.status != 200:
            raise _refused("publication", resp)
        req = yield self.ue.wait_for(of_type(SEEDING_TOKEN_TYPE), self.timeout)
        return _json(req), resp.get("SIP-ETag")

    @inlineCallbacks
    def refresh(self, etag: str, expires: int = 3600) -> Any:
        """Refresh the seeding presence of a publication; the new SIP-ETag."""
        resp = yield self.ue.request(
            "PUBLISH",
            self.psi,
            extra=(("Event", EVENT_PACKAGE), ("Expires", str(expires)), ("SIP-If-Match", etag)),
        )
        if resp.status != 200:
            raise _refused("publication refresh", resp)
        return resp.get("SIP-ETag")

    @inlineCallbacks
    def remove(self, doi: str) -> Any:
        body = json.dumps({"doi": doi}).encode()
        resp = yield self.ue.request("MESSAGE", self.psi, body=body, content_type=REMOVAL_TYPE)
        if resp.status != 200:
            raise _refused(f"removal of {doi}", resp)
        return None

    @inlineCallbacks
    def subscribe(
        self, genre: str | None = None, series: str | None = None, expires: int = 3600
    ) -> Any:
        """SUBSCRIBE to a content list; the first NOTIFY's list of assets."""
        event = EVENT_PACKAGE
        if genre:
            event += f";genre={genre}"
        if series:
            event += f";series={series}"
        resp = yield self.ue.request(
            "SUBSCRIBE", self.psi, extra=(("Event", event), ("Expires", str(expires)))
        )
        if resp.status != 200:
            raise _refused("subscription", resp)
        req = yield self.ue.wait_for(lambda r: r.method == "NOTIFY", self.timeout)
        return _json(req)

    def next_notify(self, timeout: float | None = None) -> Any:
        d = self.ue.wait_for(lambda r: r.method == "NOTIFY", timeout or self.timeout)
        return d.addCallback(_json)
