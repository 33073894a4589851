"""A small HTTP(S) client for the services' JSON APIs (twisted.web's Agent).

Used between roles: the AS calls the DRM server and the tracker's admin API,
the tracker pulls the revocation list, the index scrapes the tracker. HTTPS
trusts only the CA given (the lab CA under var/tls/); a bearer token is sent
when given. Answers are read up to ``max_body`` bytes; a connection failure,
a timeout or an oversized answer fails with :class:`Unreachable`, which the
callers map to their "back end down" answers. Any HTTP status is an answer:
the caller looks at :attr:`Reply.status`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer


class Unreachable(Exception):
    """The service did not answer usably (refused, timed out, cut off, too large)."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        """The body as JSON; :class:`Unreachable` when it is not (a broken service)."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise Unreachable(f"answer {self.status} is not JSON") from None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@implementer(IBodyProducer)
class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Capped(Protocol):
    def __init__(self, done: Deferred[bytes], limit: int) -> None:
        self.done = done
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            if not self.done.called:
                self.done.errback(Unreachable(f"answer larger than {self.limit} bytes"))
            assert self.transport is not None
            self.transport.stopProducing()
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.done.called:
            return
        if reason is None or reason.check(ResponseDone):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(Unreachable(f"answer cut off: {reason.getErrorMessage()}"))


class JsonClient:
    """Requests to one base URL (``http://host:port`` or ``https://…``)."""

    def __init__(
        self,
        reactor: Any,
        base_url: str,
        *,
        token: str | None = None,
        ca_path: str | None = None,
        timeout: float = 10.0,
        max_body: int = 8 << 20,
        persistent: bool = True,
    ) -> None:
        self.reactor = reactor
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.max_body = max_body
        self.pool = HTTPConnectionPool(reactor, persistent=persistent)
        self.pool.maxPersistentPerHost = 4
        if ca_path is not None:
            from imsp2pd.tlslab import client_policy

            self.agent = Agent(reactor, contextFactory=client_policy(ca_path), pool=self.pool)
        else:
            self.agent = Agent(reactor, pool=self.pool)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Deferred[Reply]:
        """Send one request; fires with the :class:`Reply` or fails with Unreachable."""
        h = Headers({"user-agent": ["imsp2pd"]})
        if self.token:
            h.addRawHeader("authorization", f"Bearer {self.token}")
        for k, v in (headers or {}).items():
            h.addRawHeader(k, v)
        producer: Any = None
        if body is not None or raw is not None:
            data = raw if raw is not None else json.dumps(body, separators=(",", ":")).encode()
            h.addRawHeader("content-type", content_type)
            producer = _Bytes(data)
        url = (self.base_url + path).encode("ascii")
        d: Deferred[Any] = self.agent.request(method.encode("ascii"), url, h, producer)
        d.addCallback(self._read)
        d.addTimeout(self.timeout, self.reactor)
        d.addErrback(self._failed, method, path)
        return d

    def _read(self, response: Any) -> Deferred[Reply]:
        done: Deferred[bytes] = Deferred()
        response.deliverBody(_Capped(done, self.max_body))
        ctype = response.headers.getRawHeaders(b"content-type", [b""])[0].decode("latin-1")
        return done.addCallback(lambda body: Reply(response.code, body, ctype))

    def _failed(self, f: Failure, method: str, path: str) -> Reply:
        if f.check(Unreachable):
            f.raiseException()
        # The path may carry a token in its query: name only the path.
        raise Unreachable(
            f"{method} {self.base_url}{path.partition('?')[0]}: {f.getErrorMessage() or f.type}"
        )

    def get(self, path: str) -> Deferred[Reply]:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Deferred[Reply]:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> Deferred[Reply]:
        return self.request("PUT", path, body)

    def close(self) -> Deferred[None]:
        return self.pool.closeCachedConnections()
