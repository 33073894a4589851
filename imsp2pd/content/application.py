"""The SIP side of the Application Server (DESIGN.md §2), on the PSI of the content service.

:class:`ApplicationServer` is a set of handlers on a
:class:`~imsp2pd.sip.ua.UserAgent`; the business logic lives in
:class:`~imsp2pd.content.purchase.PurchaseDesk` and
:class:`~imsp2pd.content.publish.PublishDesk`.

MESSAGE to the PSI, by Content-Type:

- ``application/vnd.imsp2p.purchase+json``: a purchase. 200 once it is
  charged and authorised (RFC 3428 forbids a body in a 2xx to MESSAGE), then
  the grant (``application/vnd.imsp2p.grant+json``) in a MESSAGE from the PSI
  to the buyer; 400 for a bad body, 402 no credit, 403 not allowed, 404
  unknown DOI or offer, 500 with Retry-After when a back end is down.
- ``application/vnd.imsp2p.publisher-token-request+json``: 200 and, for a
  trusted publisher, the token (``…publisher-token+json``) in a MESSAGE; 403
  for anyone else.
- ``application/vnd.imsp2p.content-removal+json`` ``{"doi"}``: the publisher
  removes its content (200, 403, 404).
- anything else: 415 with Accept.

PUBLISH (RFC 3903, ``Event: imsp2p-content``): a multipart/mixed body
publishes content (200 with SIP-ETag and Expires, then the seeding token in a
MESSAGE); a bodiless PUBLISH with SIP-If-Match refreshes the provider's
seeding presence (412 for an unknown entity tag), Expires 0 ends it. The
publication itself is durable; the presence is soft state.

SUBSCRIBE (RFC 6665, ``Event: imsp2p-content;genre=G`` or ``;series=S``):
200, then a NOTIFY with the JSON list of the listed assets of that genre or
series (all of them without a parameter), and a new NOTIFY whenever an asset
is listed there; Expires 0 ends the subscription with a final NOTIFY.

Every request must carry a P-Asserted-Identity and come from a host of the
trust domain (``[as] trusted_hosts``: the S-CSCFs; RFC 3325): the AS sits
behind the S-CSCF, which (with the P-CSCF) asserts the identity of the
served user; anything else gets 403. Third-party REGISTERs from the S-CSCF
get 200.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from imsp2pd.content.catalogue import Asset, Catalogue
from imsp2pd.content.publish import (
    EVENT_PACKAGE,
    PUBLISHER_TOKEN_REQUEST_TYPE,
    PUBLISHER_TOKEN_TYPE,
    SEEDING_TOKEN_TYPE,
    PublishDesk,
)
from imsp2pd.content.purchase import (
    GRANT_TYPE,
    PURCHASE_TYPE,
    BadPurchase,
    Grant,
    PurchaseDesk,
    PurchaseRequest,
    ServiceError,
)
from imsp2pd.sip.errors import SipError
from imsp2pd.sip.headers import parse_name_addr
from imsp2pd.sip.message import Request, Response, make_response, new_tag
from imsp2pd.sip.proxy import Source, Target
from imsp2pd.sip.ua import UserAgent, build_request

log = Logger()

REMOVAL_TYPE = "application/vnd.imsp2p.content-removal+json"
LIST_TYPE = "application/json"
ACCEPTED = (PURCHASE_TYPE, PUBLISHER_TOKEN_REQUEST_TYPE, REMOVAL_TYPE)
MAX_SUBSCRIPTIONS = 10_000


@dataclass(frozen=True)
class AsConfig:
    psi: str  # sip:content@ims.example.org
    contact: str  # the AS's own SIP URI, for dialogs
    scscf: Target  # where MESSAGEs to users go (the S-CSCF routes them to the contact)
    publish_expires: int = 3600
    max_publish_expires: int = 86400
    subscribe_expires: int = 3600
    max_subscribe_expires: int = 86400
    # Sources whose P-Asserted-Identity the AS believes: the S-CSCFs (RFC 3325 trust domain).
    trusted_hosts: frozenset[str] = frozenset({"127.0.0.1", "::1"})


def asserted_identity(req: Request) -> str | None:
    """The sip: URI of the first P-Asserted-Identity, if any."""
    for value in req.get_all("P-Asserted-Identity"):
        try:
            uri = str(parse_name_addr(value).uri)
        except SipError:
            continue
        if uri.startswith(("sip:", "sips:")):
            return uri
    return None


def icid_of(req: Request) -> str:
    """The icid-value of P-Charging-Vector (RFC 7315), or an empty string."""
    value = req.get("P-Charging-Vector") or ""
    for part in value.split(";"):
        name, _, v = part.strip().partition("=")
        if name.strip().lower() == "icid-value":
            return v.strip().strip('"')
    return ""


def _event(req: Request) -> tuple[str, dict[str, str]]:
    value = req.get("Event") or ""
    package, *params = [p.strip() for p in value.split(";")]
    out = {}
    for p in params:
        k, _, v = p.partition("=")
        out[k.strip().lower()] = v.strip().strip('"')
    return package.lower(), out


def _json_body(req: Request) -> Any:
    try:
        return json.loads(req.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadPurchase("the body is not JSON") from None


def _base_type(req: Request) -> str:
    return (req.content_type or "").partition(";")[0].strip().lower()


@dataclass
class Presence:
    impu: str
    info_hash: str
    expires_at: float


@dataclass
class Subscription:
    call_id: str
    subscriber: str
    local_tag: str
    remote_from: str  # the subscriber's From (with its tag): our To
    remote_target: str  # its Contact
    route_set: tuple[str, ...]
    event: str  # the Event header value, echoed in NOTIFYs
    genre: str | None
    series: str | None
    expires_at: float
    cseq: int = 0
    sent: set[str] = field(default_factory=set)


class ApplicationServer:
    def __init__(
        self,
        ua: UserAgent,
        purchases: PurchaseDesk,
        publications: PublishDesk,
        catalogue: Catalogue,
        config: AsConfig,
        clock: Callable[[], float],
    ) -> None:
        self.ua = ua
        self.purchases = purchases
        self.publications = publications
        self.catalogue = catalogue
        self.config = config
        self.clock = clock
        self.presence: dict[str, Presence] = {}
        self.subscriptions: dict[tuple[str, str], Subscription] = {}
        ua.on("MESSAGE", self.on_message)
        ua.on("PUBLISH", self.on_publish)
        ua.on("SUBSCRIBE", self.on_subscribe)
        ua.on("REGISTER", lambda req, src: 200)
        ua.on("OPTIONS", lambda req, src: 200)
        ua.on("NOTIFY", lambda req, src: 200)

    # -- helpers ---------------------------------------------------------

    def _error(self, req: Request, e: ServiceError) -> Response:
        extra: tuple[tuple[str, str], ...] = ()
        if e.retry_after:
            extra = (("Retry-After", str(e.retry_after)),)
        reason = e.reason.replace("\r", " ").replace("\n", " ")[:120]
        return make_response(req, e.status, reason, to_tag=new_tag(), extra=extra)

    def _answer(self, req: Request, d: Deferred[Any]) -> Deferred[Any]:
        def failed(f: Failure) -> Response:
            if f.check(ServiceError):
                return self._error(req, f.value)  # type: ignore[arg-type]
            log.failure("as: {method} failed", f, method=req.method)
            return make_response(
                req, 500, "Server Internal Error", to_tag=new_tag(), extra=(("Retry-After", "5"),)
            )

        return d.addErrback(failed)

    def _identity(self, req: Request, source: Source) -> str | None:
        """The served user, when the request comes from the trust domain with one."""
        if source.host not in self.config.trusted_hosts:
            return None
        return asserted_identity(req)

    def _is_psi(self, req: Request) -> bool:
        uri = str(req.uri)
        return uri.partition(";")[0] == self.config.psi

    def send_to_user(self, impu: str, content_type: str, body: bytes) -> Deferred[Response]:
        """A MESSAGE from the PSI to a user, through the S-CSCF (terminating routing)."""
        req = build_request(
            "MESSAGE",
            impu,
            from_uri=self.config.psi,
            to_uri=impu,
            body=body,
            content_type=content_type,
            extra=(("P-Asserted-Identity", f"<{self.config.psi}>"),),
        )
        d = self.ua.request(req, target=self.config.scscf)

        def sent(resp: Response) -> Response:
            if resp.status >= 300:
                log.warn(
                    "as: {ctype} to {impu} got {status}",
                    ctype=content_type,
                    impu=impu,
                    status=resp.status,
                )
            return resp

        def lost(f: Failure) -> None:
            log.warn(
                "as: {ctype} to {impu} not delivered: {why}",
                ctype=content_type,
                impu=impu,
                why=f.getErrorMessage(),
            )

        d.addCallbacks(sent, lost)
        return d

    # -- MESSAGE ---------------------------------------------------------

    def on_message(self, req: Request, source: Source) -> Any:
        if not self._is_psi(req):
            return make_response(req, 404, "Not Found", to_tag=new_tag())
        impu = self._identity(req, source)
        if impu is None:
            return make_response(req, 403, "No Asserted Identity", to_tag=new_tag())
        ctype = _base_type(req)
        try:
            if ctype == PURCHASE_TYPE:
                return self._answer(req, self._purchase(req, impu))
            if ctype == PUBLISHER_TOKEN_REQUEST_TYPE:
                return self._publisher_token(req, impu)
            if ctype == REMOVAL_TYPE:
                return self._answer(req, self._removal(req, impu))
        except ServiceError as e:
            return self._error(req, e)
        return make_response(
            req,
            415,
            "Unsupported Media Type",
            to_tag=new_tag(),
            extra=(("Accept", ", ".join(ACCEPTED)),),
        )

    def _purchase(self, req: Request, impu: str) -> Deferred[Response]:
        request = PurchaseRequest.from_json(_json_body(req))
        d = self.purchases.purchase(impu, icid_of(req), request)

        def granted(grant: Grant) -> Response:
            body = json.dumps(grant.to_json(), separators=(",", ":")).encode()
            # After the 200 has gone: the grant travels in its own MESSAGE.
            self.ua.node.reactor.callLater(0, self.send_to_user, impu, GRANT_TYPE, body)
            return make_response(req, 200, "OK", to_tag=new_tag())

        return d.addCallback(granted)

    def _publisher_token(self, req: Request, impu: str) -> Response:
        token, not_after = self.publications.publisher_token(impu)
        body = json.dumps({"publisher_token": token, "expires": not_after}).encode()
        self.ua.node.reactor.callLater(0, self.send_to_user, impu, PUBLISHER_TOKEN_TYPE, body)
        return make_response(req, 200, "OK", to_tag=new_tag())

    def _removal(self, req: Request, impu: str) -> Deferred[Response]:
        body = _json_body(req)
        if not isinstance(body, dict) or not isinstance(body.get("doi"), str):
            raise BadPurchase('a removal is {"doi": DOI}')
        d = self.publications.remove(body["doi"], impu)
        return d.addCallback(lambda _: make_response(req, 200, "OK", to_tag=new_tag()))

    # -- PUBLISH ---------------------------------------------------------

    def on_publish(self, req: Request, source: Source) -> Any:
        package, _ = _event(req)
        if package != EVENT_PACKAGE:
            return make_response(
                req, 489, "Bad Event", to_tag=new_tag(), extra=(("Allow-Events", EVENT_PACKAGE),)
            )
        if not self._is_psi(req):
            return make_response(req, 404, "Not Found", to_tag=new_tag())
        impu = self._identity(req, source)
        if impu is None:
            return make_response(req, 403, "No Asserted Identity", to_tag=new_tag())
        expires = self._expires(req, self.config.publish_expires, self.config.max_publish_expires)
        etag = req.get("SIP-If-Match")
        now = self.clock()
        if etag is not None and not req.body:
            presence = self.presence.get(etag)
            if presence is None or presence.impu != impu or presence.expires_at < now:
                return make_response(req, 412, "Conditional Request Failed", to_tag=new_tag())
            del self.presence[etag]
            if expires == 0:
                return make_response(req, 200, "OK", to_tag=new_tag(), extra=(("Expires", "0"),))
            return self._presence(req, impu, presence.info_hash, expires, now)
        if not req.body:
            return make_response(req, 400, "PUBLISH Without Body", to_tag=new_tag())
        d = self.publications.publish(impu, req.get("Content-Type") or "", req.body)

        def published(pub: Any) -> Response:
            body = json.dumps(pub.to_json(), separators=(",", ":")).encode()
            self.ua.node.reactor.callLater(0, self.send_to_user, impu, SEEDING_TOKEN_TYPE, body)
            return self._presence(req, impu, pub.info_hash, expires, self.clock())

        return self._answer(req, d.addCallback(published))

    def _presence(
        self, req: Request, impu: str, info_hash: str, expires: int, now: float
    ) -> Response:
        self._expire(now)
        etag = secrets.token_urlsafe(12)
        self.presence[etag] = Presence(impu, info_hash, now + expires)
        return make_response(
            req, 200, "OK", to_tag=new_tag(), extra=(("SIP-ETag", etag), ("Expires", str(expires)))
        )

    def _expire(self, now: float) -> None:
        for etag in [e for e, p in self.presence.items() if p.expires_at < now]:
            del self.presence[etag]
        for key in [k for k, s in self.subscriptions.items() if s.expires_at < now]:
            del self.subscriptions[key]

    def online_providers(self, info_hash: str) -> list[str]:
        now = self.clock()
        return sorted(
            {
                p.impu
                for p in self.presence.values()
                if p.info_hash == info_hash and p.expires_at >= now
            }
        )

    @staticmethod
    def _expires(req: Request, default: int, maximum: int) -> int:
        value = req.expires
        return default if value is None else max(0, min(int(value), maximum))

    # -- SUBSCRIBE / NOTIFY ------------------------------------------------

    def on_subscribe(self, req: Request, source: Source) -> Any:
        package, params = _event(req)
        if package != EVENT_PACKAGE:
            return make_response(
                req, 489, "Bad Event", to_tag=new_tag(), extra=(("Allow-Events", EVENT_PACKAGE),)
            )
        impu = self._identity(req, source)
        if impu is None:
            return make_response(req, 403, "No Asserted Identity", to_tag=new_tag())
        contacts = req.contacts
        if not contacts:
            return make_response(req, 400, "Missing Contact", to_tag=new_tag())
        now = self.clock()
        self._expire(now)
        expires = self._expires(
            req, self.config.subscribe_expires, self.config.max_subscribe_expires
        )
        key = (req.call_id, req.from_.tag or "")
        sub = self.subscriptions.get(key)
        if sub is None:
            if req.to.tag is not None:
                return make_response(req, 481, "Subscription Does Not Exist")
            if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
                return make_response(
                    req,
                    503,
                    "Too Many Subscriptions",
                    to_tag=new_tag(),
                    extra=(("Retry-After", "60"),),
                )
            sub = Subscription(
                call_id=req.call_id,
                subscriber=impu,
                local_tag=new_tag(),
                remote_from=req.get("From") or "",
                remote_target=str(contacts[0].uri),
                route_set=tuple(req.get_all("Record-Route")),
                event=req.get("Event") or EVENT_PACKAGE,
                genre=params.get("genre"),
                series=params.get("series"),
                expires_at=now + expires,
            )
            self.subscriptions[key] = sub
        else:
            sub.expires_at = now + expires
        response = make_response(
            req,
            200,
            "OK",
            to_tag=sub.local_tag,
            extra=(("Expires", str(expires)), ("Contact", f"<{self.config.contact}>")),
        )
        if expires == 0:
            self.subscriptions.pop(key, None)
        self.ua.node.reactor.callLater(0, self._notify_list, sub, expires == 0)
        return response

    def _matches(self, sub: Subscription, asset: Asset) -> bool:
        if sub.genre is not None and asset.genre != sub.genre:
            return False
        return sub.series is None or asset.series == sub.series

    def _notify_list(self, sub: Subscription, final: bool) -> Deferred[Any]:
        d = self.catalogue.listed(sub.genre, sub.series)
        return d.addCallback(lambda assets: self.notify(sub, assets, final))

    def listed(self, asset: Asset) -> None:
        """An asset was listed: NOTIFY every subscription it matches."""
        self._expire(self.clock())
        for sub in list(self.subscriptions.values()):
            if self._matches(sub, asset):
                self._notify_list(sub, False)

    def notify(self, sub: Subscription, assets: list[Asset], final: bool = False) -> Deferred[Any]:
        sub.cseq += 1
        remaining = max(0, int(sub.expires_at - self.clock()))
        state = "terminated;reason=timeout" if final else f"active;expires={remaining}"
        body = json.dumps([_asset_entry(a) for a in assets], separators=(",", ":")).encode()
        extra = [
            ("Event", sub.event),
            ("Subscription-State", state),
            ("Contact", f"<{self.config.contact}>"),
        ]
        extra += [("Route", r) for r in sub.route_set]
        req = build_request(
            "NOTIFY",
            sub.remote_target,
            from_uri=self.config.psi,
            from_tag=sub.local_tag,
            to_uri=None,
            call_id=sub.call_id,
            cseq=sub.cseq,
            body=body,
            content_type=LIST_TYPE,
            extra=tuple(extra),
        ).replace_header("To", sub.remote_from)
        target = None if sub.route_set else _target_of(sub.remote_target)
        d = self.ua.request(req, target=target)

        def lost(f: Failure) -> None:
            log.warn(
                "as: NOTIFY to {who} failed: {why}", who=sub.subscriber, why=f.getErrorMessage()
            )

        return d.addErrback(lost)


def _asset_entry(a: Asset) -> dict[str, Any]:
    return {
        "doi": a.doi,
        "title": a.title,
        "genre": a.genre,
        "series": a.series,
        "offers": [o.to_json() for o in a.offers],
        "info_hash": a.info_hash,
    }


def _target_of(uri: str) -> Target | None:
    from imsp2pd.sip.uri import SipURI, parse_uri

    try:
        u = parse_uri(uri)
    except SipError:
        return None
    if not isinstance(u, SipURI):
        return None
    transport = (u.param("transport") or "udp").upper()
    return Target(transport, u.host, u.port or 5060)
