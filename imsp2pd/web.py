"""A small router for JSON (and other) HTTP services on twisted.web.

Used by the control port (``/health``, ``/metrics``, ``/admin/…``) and by
the HTTP roles (tracker, DRM server, index). A route is a method, a path
pattern with ``{name}`` segments and a handler ``handler(req) -> result``
where ``req`` is a :class:`WebRequest` and ``result`` (or the Deferred it
returns) is one of:

- a JSON value (``dict``/``list``/…): 200 with ``application/json``;
- a :class:`Response`: any status, content type and bytes body.

Raising :class:`HttpError` answers ``{"error": CODE, "message": …}`` with its
status. Any other exception is logged and answered with a plain 500 JSON
error: never a traceback. Request bodies are capped (``max_body``) and JSON
bodies must parse, or the answer is a 4xx.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

log = Logger()


class HttpError(Exception):
    """An error answered as ``{"error": code, "message": message}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, json_bytes(value))


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


@dataclass(frozen=True)
class WebRequest:
    """What a handler sees of a request."""

    method: str
    path: str
    params: Mapping[str, str]
    query: Mapping[str, list[str]]
    raw_query: bytes
    headers: Mapping[str, str]
    body: bytes
    client: tuple[str, int] | None
    request: Request | None = field(default=None, repr=False, compare=False)

    def json(self) -> Any:
        """The body as JSON; :class:`HttpError` 400 when it is not."""
        if not self.body:
            raise HttpError(400, "bad_request", "a JSON body is required")
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise HttpError(400, "bad_json", f"body is not JSON: {e}") from None
        except RecursionError:
            raise HttpError(400, "bad_json", "body is nested too deeply") from None

    def json_object(self) -> dict[str, Any]:
        value = self.json()
        if not isinstance(value, dict):
            raise HttpError(400, "bad_json", "body must be a JSON object")
        return value

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


Handler = Callable[[WebRequest], Any]

_SEGMENT = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}")


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: str
    regex: re.Pattern[str]
    handler: Handler
    auth: bool


def _compile(pattern: str) -> re.Pattern[str]:
    parts, pos = [], 0
    for m in _SEGMENT.finditer(pattern):
        parts.append(re.escape(pattern[pos : m.start()]))
        # DOIs contain slashes ("10.5555/abc"): the last segment may take the rest.
        rest = m.end() == len(pattern)
        parts.append(f"(?P<{m.group(1)}>{'.+' if rest else '[^/]+'})")
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    return re.compile("^" + "".join(parts) + "$")


class Router(Resource):
    """A leaf resource dispatching on method and path.

    ``token``: when given, routes added with ``auth=True`` (and every route
    under ``auth_prefix``) need ``Authorization: Bearer <token>`` (401
    otherwise). ``access_log(req, status)`` is called after each answer.
    """

    isLeaf = True

    def __init__(
        self,
        token: str | None = None,
        max_body: int = 1 << 20,
        access_log: Callable[[WebRequest, int], None] | None = None,
        auth_prefix: str | None = None,
    ) -> None:
        super().__init__()
        self._routes: list[_Route] = []
        self._token = token
        self._auth_prefix = auth_prefix
        self.max_body = max_body
        self._access_log = access_log

    def route(self, method: str, pattern: str, handler: Handler, *, auth: bool = False) -> None:
        """Add a route; with ``auth_prefix`` set, every route under it needs the token."""
        if self._auth_prefix is not None and pattern.startswith(self._auth_prefix):
            auth = True
        if auth and self._token is None:
            raise ValueError("this router has no token for authenticated routes")
        self._routes.append(_Route(method.upper(), pattern, _compile(pattern), handler, auth))

    def routes(self) -> list[tuple[str, str]]:
        return [(r.method, r.pattern) for r in self._routes]

    # -- twisted.web --------------------------------------------------------

    def render(self, request: Request) -> int:
        d = self.dispatch(request)
        d.addCallback(self._write, request)
        return NOT_DONE_YET

    def _write(self, response: Response, request: Request) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        request.setResponseCode(response.status)
        request.setHeader(b"content-type", response.content_type.encode())
        for k, v in response.headers.items():
            request.setHeader(k.encode(), v.encode())
        request.setHeader(b"content-length", str(len(response.body)).encode())
        if request.method != b"HEAD":
            request.write(response.body)
        request.finish()

    def _web_request(self, request: Request, params: Mapping[str, str]) -> WebRequest:
        raw_query = request.uri.partition(b"?")[2]
        query = {
            k: v for k, v in parse_qs(raw_query.decode("latin-1"), keep_blank_values=True).items()
        }
        content = request.content
        body = b""
        if content is not None:
            content.seek(0)
            body = content.read(self.max_body + 1)
        if len(body) > self.max_body:
            raise HttpError(413, "too_large", f"body larger than {self.max_body} bytes")
        headers = {
            k.decode("latin-1").lower(): v[-1].decode("latin-1")
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        peer = request.getClientAddress()
        client = (peer.host, peer.port) if hasattr(peer, "port") else None
        return WebRequest(
            method=request.method.decode("latin-1"),
            path=unquote(request.path.decode("latin-1")),
            params=params,
            query=query,
            raw_query=raw_query,
            headers=headers,
            body=body,
            client=client,
            request=request,
        )

    def dispatch(self, request: Request) -> Deferred[Response]:
        """Route ``request`` and produce its :class:`Response` (never fails)."""
        try:
            return self._dispatch(request)
        except Exception:
            log.failure("cannot dispatch {uri}", uri=redact(request.uri))
            return succeed(_error(500, "internal", "internal error"))

    def _dispatch(self, request: Request) -> Deferred[Response]:
        path = unquote(request.path.decode("latin-1"))
        method = request.method.decode("latin-1")
        allowed: list[str] = []
        for r in self._routes:
            m = r.regex.match(path)
            if m is None:
                continue
            if r.method != method and not (method == "HEAD" and r.method == "GET"):
                allowed.append(r.method)
                continue
            if r.auth and not self._authorised(request):
                return succeed(_error(401, "unauthorized", "a valid bearer token is required"))
            try:
                req = self._web_request(request, m.groupdict())
            except HttpError as e:
                return succeed(_error(e.status, e.code, e.message))
            d = maybeDeferred(r.handler, req)
            d.addCallbacks(_to_response, self._failure, errbackArgs=(req,))
            if self._access_log is not None:
                d.addCallback(self._logged, req)
            return d
        if allowed:
            return succeed(
                _error(405, "method_not_allowed", f"use {', '.join(sorted(set(allowed)))}")
            )
        return succeed(_error(404, "not_found", f"no such resource: {path}"))

    def _logged(self, response: Response, req: WebRequest) -> Response:
        assert self._access_log is not None
        self._access_log(req, response.status)
        return response

    def _authorised(self, request: Request) -> bool:
        header = request.getHeader(b"authorization") or b""
        scheme, _, token = header.partition(b" ")
        assert self._token is not None
        return scheme.lower() == b"bearer" and hmac.compare_digest(
            token.strip(), self._token.encode()
        )

    def _failure(self, failure: Failure, req: WebRequest) -> Response:
        e = failure.value
        if isinstance(e, HttpError):
            return _error(e.status, e.code, e.message)
        log.failure("unhandled error in {method} {path}", failure, method=req.method, path=req.path)
        return _error(500, "internal", "internal error")


def redact(uri: bytes) -> str:
    """A URI for the logs: the query (which may carry a token) replaced by ``?…``."""
    path, sep, _ = uri.partition(b"?")
    return path.decode("latin-1") + ("?…" if sep else "")


def _log_formatter(timestamp: str, request: Request) -> str:
    """twisted.web's combined log line, with the query of the URI redacted."""
    ref = request.getHeader(b"referer")
    referrer = "-" if ref is None else redact(ref)
    agent = _quote(request.getHeader(b"user-agent"))
    host = getattr(request.getClientAddress(), "host", "-")
    line = (
        f'"{host}" - - {timestamp} '
        f'"{request.method.decode("latin-1")} {redact(request.uri)} '
        f'{request.clientproto.decode("latin-1")}" {request.code} '
        f'{request.sentLength or "-"} "{referrer}" "{agent}"'
    )
    return line


def _quote(value: bytes | None) -> str:
    return "-" if value is None else value.decode("latin-1").replace('"', '\\"')


def make_site(resource: Resource, reactor: Any = None, timeout: float = 60) -> Site:
    """A Site whose access log never shows a query string (tokens travel there)."""
    site = Site(resource, logFormatter=_log_formatter, reactor=reactor)
    site.timeOut = timeout
    return site


def _error(status: int, code: str, message: str) -> Response:
    return json_response({"error": code, "message": message}, status)


def _to_response(result: Any) -> Response:
    if isinstance(result, Response):
        return result
    return json_response(result)
