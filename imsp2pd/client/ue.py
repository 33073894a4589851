"""The client's IMS user agent (UE): registration, requests to the PSI, inbox.

:class:`UserEquipment` registers through the P-CSCF over TCP (grants and
publications are larger than UDP allows, RFC 3261 §18.1.1) with SIP digest,
refreshes the registration at half its lifetime, and keeps the TCP flow it
registered over, on which the P-CSCF delivers the MESSAGEs (grants, tokens)
and NOTIFYs the AS sends to the user. Incoming MESSAGE and NOTIFY requests
are answered 200 and queued; :meth:`UserEquipment.wait_for` takes them.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from imsp2pd.sip.message import Request, Response
from imsp2pd.sip.proxy import Source, Target
from imsp2pd.sip.service import make_node
from imsp2pd.sip.ua import SipRequestFailed, UserAgent, build_request

log = Logger()


class UeError(Exception):
    """A request the network refused or did not answer; one line."""


@dataclass(frozen=True)
class Account:
    impu: str  # sip:alice@ims.example.org
    impi: str  # alice@ims.example.org
    password: str
    domain: str

    @classmethod
    def lab(cls, user: str, password: str, domain: str = "ims.example.org") -> Account:
        name = user.removeprefix("sip:").split("@")[0]
        return cls(f"sip:{name}@{domain}", f"{name}@{domain}", password, domain)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class UserEquipment:
    def __init__(
        self,
        reactor: Any,
        account: Account,
        pcscf: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        expires: int = 600,
    ) -> None:
        self.reactor = reactor
        self.account = account
        self.pcscf = Target("TCP", pcscf[0], pcscf[1])
        self.host = host
        self.port = port or _free_port(host)
        self.expires = expires
        self.node, self.ua = make_node(reactor, host, self.port, UserAgent)
        self.ua.on("MESSAGE", self._incoming)
        self.ua.on("NOTIFY", self._incoming)
        self.ua.on("OPTIONS", lambda req, src: 200)
        self.inbox: list[Request] = []
        self._waiters: list[tuple[Callable[[Request], bool], Deferred[Request]]] = []
        self._refresh: Any = None
        self.registered = False
        self.service_route: list[str] = []
        self.cseq = 0
        self.call_id: str | None = None
        self._stopped = False

    @property
    def contact(self) -> str:
        user = self.account.impu.removeprefix("sip:").split("@")[0]
        return f"<sip:{user}@{self.host}:{self.port};transport=tcp>"

    # -- registration ------------------------------------------------------

    def start(self) -> Deferred[Response]:
        self.node.listen_tcp(self.port, self.host)
        return self.register()

    def register(self, expires: int | None = None) -> Deferred[Response]:
        expires = self.expires if expires is None else expires
        self.cseq += 1
        req = build_request(
            "REGISTER",
            f"sip:{self.account.domain}",
            from_uri=self.account.impu,
            contact=self.contact,
            call_id=self.call_id,
            cseq=self.cseq,
            extra=(("Expires", str(expires)),),
        )
        self.call_id = req.call_id
        d = self.ua.request(
            req, target=self.pcscf, credentials=(self.account.impi, self.account.password)
        )
        return d.addCallbacks(self._registered, self._unreachable, callbackArgs=(expires,))

    def _registered(self, resp: Response, expires: int) -> Response:
        self.cseq += 1  # the digest retry used one more
        if resp.status != 200:
            self.registered = False
            raise UeError(f"REGISTER of {self.account.impu}: {resp.status} {resp.reason}")
        self.registered = expires > 0
        self.service_route = resp.get_all("Service-Route")
        granted = resp.expires if resp.expires is not None else expires
        if self._refresh is not None and self._refresh.active():
            self._refresh.cancel()
        if self.registered and granted:
            self._refresh = self.reactor.callLater(max(5, granted // 2), self._renew)
        return resp

    def _renew(self) -> None:
        def failed(f: Any) -> None:
            log.warn(
                "ue: refresh of {impu} failed: {why}",
                impu=self.account.impu,
                why=f.getErrorMessage(),
            )
            self._refresh = self.reactor.callLater(10, self._renew)

        self.register().addErrback(failed)

    def _unreachable(self, f: Any) -> Any:
        if f.check(SipRequestFailed):
            raise UeError(
                f"the P-CSCF at {self.pcscf.host}:{self.pcscf.port} does not answer: "
                f"{f.getErrorMessage()}"
            )
        return f

    @inlineCallbacks
    def stop(self) -> Any:
        if self._stopped:
            return
        self._stopped = True
        if self._refresh is not None and self._refresh.active():
            self._refresh.cancel()
        if self.registered:
            try:
                yield self.register(0)
            except Exception as e:  # the network may be gone already
                log.info("ue: de-registration of {impu}: {e}", impu=self.account.impu, e=str(e))
        yield self.node.stop()

    # -- requests -------------------------------------------------------------

    def request(
        self,
        method: str,
        uri: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Deferred[Response]:
        """A request through the P-CSCF (which adds the asserted identity)."""
        req = build_request(
            method,
            uri,
            from_uri=self.account.impu,
            contact=self.contact,
            body=body,
            content_type=content_type,
            extra=extra,
        )
        d = self.ua.request(req, target=self.pcscf)
        return d.addErrback(self._unreachable)

    # -- inbox -------------------------------------------------------------------

    def _incoming(self, req: Request, source: Source) -> int:
        for i, (match, d) in enumerate(self._waiters):
            if match(req):
                del self._waiters[i]
                d.callback(req)
                return 200
        self.inbox.append(req)
        if len(self.inbox) > 1000:
            del self.inbox[0]
        return 200

    def wait_for(
        self, match: Callable[[Request], bool], timeout: float = 30.0
    ) -> Deferred[Request]:
        """The first incoming MESSAGE or NOTIFY that ``match`` accepts (queued or to come)."""
        for i, req in enumerate(self.inbox):
            if match(req):
                del self.inbox[i]
                d: Deferred[Request] = Deferred()
                d.callback(req)
                return d
        d = Deferred()
        entry = (match, d)
        self._waiters.append(entry)

        def expired() -> None:
            if entry in self._waiters:
                self._waiters.remove(entry)
                d.errback(UeError(f"nothing arrived for {self.account.impu} in {timeout:.0f}s"))

        call = self.reactor.callLater(timeout, expired)
        d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return d


def of_type(
    content_type: str, test: Callable[[Request], bool] | None = None
) -> Callable[[Request], bool]:
    def match(req: Request) -> bool:
        if (req.content_type or "") != content_type:
            return False
        return test is None or test(req)

    return match
