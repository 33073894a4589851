"""Dialogs (RFC 3261 §12) and subscriptions (RFC 6665), pure.

A :class:`Dialog` is made by the UAS from the dialog-creating request and
its 2xx (:meth:`Dialog.as_uas`), or by the UAC from its request and the 2xx
(:meth:`Dialog.as_uac`).  :meth:`Dialog.next_request` builds the next
in-dialog request (Request-URI, Route set with loose or strict routing,
tags, CSeq); :meth:`Dialog.check_incoming` applies §12.2.2 to a request
received in the dialog.  :func:`notify_headers` gives the Event and
Subscription-State of a NOTIFY.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from imsp2pd.sip.errors import SipParseError
from imsp2pd.sip.headers import parse_name_addr
from imsp2pd.sip.message import Request, Response
from imsp2pd.sip.uri import URI, SipURI


@dataclass(frozen=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # the From of our requests (a name-addr)
    remote_uri: str  # the To of our requests
    remote_target: URI
    route_set: tuple[str, ...] = ()
    local_seq: int = 0
    remote_seq: int | None = None

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uas(cls, request: Request, response: Response) -> Dialog:
        """§12.1.1: the route set is the request's Record-Route in order,
        the remote target its Contact; our tag is the To tag of our 2xx."""
        local_tag = response.to.tag
        remote_tag = request.from_.tag
        if not local_tag or not remote_tag:
            raise SipParseError("dialog needs both tags")
        contacts = request.contacts
        if not contacts:
            raise SipParseError("dialog-creating request without Contact")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=str(request.to.without_param("tag")),
            remote_uri=str(request.from_.without_param("tag")),
            remote_target=contacts[0].uri,
            route_set=tuple(request.get_all("Record-Route")),
            local_seq=0,
            remote_seq=request.cseq.seq,
        )

    @classmethod
    def as_uac(cls, request: Request, response: Response) -> Dialog:
        """§12.1.2: the route set is the 2xx's Record-Route reversed, the
        remote target its Contact."""
        local_tag = request.from_.tag
        remote_tag = response.to.tag
        if not local_tag or not remote_tag:
            raise SipParseError("dialog needs both tags")
        contacts = response.contacts
        if not contacts:
            raise SipParseError("2xx without Contact cannot make a dialog")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=str(request.from_.without_param("tag")),
            remote_uri=str(request.to.without_param("tag")),
            remote_target=contacts[0].uri,
            route_set=tuple(reversed(response.get_all("Record-Route"))),
            local_seq=request.cseq.seq,
            remote_seq=None,
        )

    def next_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
        contact: str | None = None,
    ) -> tuple[Dialog, Request]:
        """§12.2.1.1: the next request in the dialog (no Via: the core adds
        it) and the dialog with its local CSeq advanced."""
        seq = self.local_seq + 1
        uri: URI = self.remote_target
        routes = list(self.route_set)
        if routes:
            first = parse_name_addr(routes[0]).uri
            if not (isinstance(first, SipURI) and first.is_loose_router):
                # strict router: it goes in the Request-URI, the target last
                uri = first
                routes = routes[1:] + [f"<{self.remote_target}>"]
        headers: list[tuple[str, str]] = [("Route", r) for r in routes]
        headers += [
            ("From", f"{self.local_uri};tag={self.local_tag}"),
            ("To", f"{self.remote_uri};tag={self.remote_tag}"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{seq} {method}"),
            ("Max-Forwards", "70"),
        ]
        if contact:
            headers.append(("Contact", contact))
        headers += list(extra)
        if content_type:
            headers.append(("Content-Type", content_type))
        return replace(self, local_seq=seq), Request(tuple(headers), body, method=method, uri=uri)

    def check_incoming(self, request: Request) -> tuple[Dialog, int | None]:
        """§12.2.2: (the dialog updated, None) for an acceptable in-dialog
        request, or (the dialog unchanged, 500) for one out of order."""
        seq = request.cseq.seq
        if request.method != "ACK" and self.remote_seq is not None and seq <= self.remote_seq:
            return self, 500
        updated = replace(self, remote_seq=seq if request.method != "ACK" else self.remote_seq)
        contacts = request.contacts if request.method in ("NOTIFY", "UPDATE", "INVITE") else []
        if contacts:  # a target refresh
            updated = replace(updated, remote_target=contacts[0].uri)
        return updated, None


class SubscriptionState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    TERMINATED = "terminated"


def notify_headers(
    event: str,
    state: SubscriptionState,
    *,
    expires: int | None = None,
    reason: str | None = None,
) -> tuple[tuple[str, str], ...]:
    """Event and Subscription-State of a NOTIFY (RFC 6665 §8.2.3, §4.1.3)."""
    value = str(state)
    if state is not SubscriptionState.TERMINATED and expires is not None:
        value += f";expires={max(0, expires)}"
    if state is SubscriptionState.TERMINATED and reason:
        value += f";reason={reason}"
    return (("Event", event), ("Subscription-State", value))


def event_package(request: Request) -> str | None:
    """The event package of a SUBSCRIBE/NOTIFY/PUBLISH, lowercased, without
    parameters (RFC 6665 §8.2.1)."""
    value = request.get("Event")
    if value is None:
        return None
    return value.split(";", 1)[0].strip().lower() or None
