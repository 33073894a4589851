"""The content index web site (``--role=index``) on twisted.web.

Pages (HTML, rendered on the server, no script at all, every provider text
escaped, a strict Content-Security-Policy and no external asset):

``/``                              the catalogue: listed assets, newest first, ``?genre=``
                                   filters, ``?page=`` pages
``/assets/{doi}``                  one asset: title, description, offers and prices,
                                   swarm health, purchase links, the .torrent
``/torrents/{infohash}.torrent``   the .torrent of a listed asset (application/x-bittorrent)
``/dashboard``                     the operator's view: each swarm's health over time,
                                   an SVG chart drawn here (seeders, leechers,
                                   the origin's share of the upload)
``/api/assets``                    JSON list (``?genre=``, ``?series=``, ``?offset=``, ``?limit=``)
``/api/assets/{doi}``              JSON of one listed asset, with its latest swarm health

On the control port: ``GET /admin/content`` (every asset, any state, with its
swarm health; ``?state=``) and ``GET /admin/content/{doi}``.

**Purchase URIs.** The purchase link of an offer is the SIP URI of the
content service PSI with the DOI and the offer id as *URI parameters*
(RFC 3261 §19.1.1 ``other-param``)::

    sip:content@ims.example.org;doi=10.5555/night-train;offer=rent

Values are escaped as RFC 3261 ``paramchar`` wants (``/`` and ``:`` may stay
as they are, anything else outside ``unreserved`` becomes ``%XX`` of its
UTF-8 bytes). An IMS client that opens the URI (:func:`parse_purchase_uri`)
sends its purchase MESSAGE to it with the body ``{"purchase_id", "doi",
"offer"}`` of DESIGN.md §2, making the purchase id itself; the parameters
travel in the Request-URI, so the AS sees them too, yet the URI still
matches the PSI (RFC 3261 §19.1.4: a parameter present in only one of two
URIs is ignored when comparing them) and the S-CSCF's iFC still fires. The
body, not the URI, is what the AS acts on.

**Swarm health** comes from an injected :class:`HealthSource`. The role
uses, in turn (:class:`FirstKnownSource`): :class:`TrackerAdminSource`, the
tracker's operator API ``GET /admin/swarms/{infohash}`` on the control port
of the process running it (counts and upload totals, so the origin's share
of the upload), when ``[index] tracker_admin`` names that port; then
:class:`ScrapeHealthSource`, a BEP 48 ``/scrape`` of the asset's tracker
(counts only; the operator's tracker wants an entitlement token for that,
made by ``token_for``). :class:`SwarmMonitor` samples every swarm on a
timer and keeps the samples in a bounded ring buffer per swarm; a page shows
the latest sample, scraping first only when it is stale. A tracker that is
down, slow or answers nonsense gives "unknown", never an error page.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.error import ConnectError
from twisted.internet.error import TimeoutError as TxTimeoutError
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from imsp2pd.bittorrent.bencoding import BencodeError, bdecode
from imsp2pd.content.catalogue import (
    DOI_RE,
    OFFER_ID_RE,
    Asset,
    AssetState,
    Catalogue,
    Offer,
)
from imsp2pd.metrics import Registry
from imsp2pd.web import HttpError, Response, Router, WebRequest

log = Logger()

__all__ = [
    "HealthSource",
    "IndexSettings",
    "IndexSite",
    "PurchaseTarget",
    "PurchaseUriError",
    "Sample",
    "ScrapeError",
    "ScrapeHealthSource",
    "TrackerAdminSource",
    "FirstKnownSource",
    "parse_swarm_stats",
    "SwarmHealth",
    "SwarmMonitor",
    "http_fetch",
    "parse_purchase_uri",
    "parse_scrape_response",
    "purchase_uri",
    "scrape_url",
    "svg_chart",
]

TORRENT_TYPE = "application/x-bittorrent"
HTML_TYPE = "text/html; charset=utf-8"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# -- purchase URIs -------------------------------------------------------------

# RFC 3261 paramchar = param-unreserved / unreserved / escaped
_PARAM_SAFE = "[]/:&+$" + "-_.!~*'()"


class PurchaseUriError(ValueError):
    """A purchase URI that an IMS client cannot use; one line naming the fault."""


@dataclass(frozen=True, slots=True)
class PurchaseTarget:
    """What a purchase URI says: where to send the MESSAGE and what to buy."""

    psi: str
    doi: str
    offer: str | None


def purchase_uri(psi: str, doi: str, offer: str | None = None) -> str:
    """``sip:content@domain;doi=…;offer=…``: the link an IMS client opens to buy."""
    uri = f"{psi};doi={quote(doi, safe=_PARAM_SAFE)}"
    if offer is not None:
        uri += f";offer={quote(offer, safe=_PARAM_SAFE)}"
    return uri


def parse_purchase_uri(uri: str) -> PurchaseTarget:
    """The PSI, DOI and offer of a purchase URI (the inverse of :func:`purchase_uri`)."""
    if not isinstance(uri, str) or len(uri) > 2048:
        raise PurchaseUriError("a purchase URI must be a sip: URI")
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips"):
        raise PurchaseUriError(f"not a sip: or sips: URI: {uri!r:.80}")
    rest = rest.partition("?")[0]  # URI headers play no part in a purchase
    target, *params = rest.split(";")
    if not target or "@" not in target or any(c in target for c in " <>\"'"):
        raise PurchaseUriError(f"no user@host in {uri!r:.80}")
    values: dict[str, str] = {}
    for p in params:
        name, _, value = p.partition("=")
        name = name.lower()
        if name in values:
            raise PurchaseUriError(f"parameter {name} given twice")
        try:
            values[name] = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise PurchaseUriError(f"parameter {name} is not UTF-8") from None
    doi = values.get("doi")
    if doi is None or not DOI_RE.match(doi):
        raise PurchaseUriError("the URI has no doi=10.NNNN/… parameter")
    offer = values.get("offer")
    if offer is not None and not OFFER_ID_RE.match(offer):
        raise PurchaseUriError("the offer parameter is not an offer id")
    return PurchaseTarget(f"{scheme.lower()}:{target}", doi, offer)


def asset_path(doi: str) -> str:
    return "/assets/" + quote(doi, safe="/")


def torrent_path(info_hash: str) -> str:
    return f"/torrents/{info_hash}.torrent"


# -- swarm health --------------------------------------------------------------


class ScrapeError(Exception):
    """A tracker answer that says nothing usable about the swarm."""


@dataclass(frozen=True, slots=True)
class SwarmHealth:
    """One look at a swarm. ``origin_uploaded``/``total_uploaded`` (bytes) when known."""

    seeders: int
    leechers: int
    completed: int
    origin_uploaded: int | None = None
    total_uploaded: int | None = None

    @property
    def origin_share(self) -> float | None:
        """The origin's (publisher's and operator seeders') share of all bytes uploaded."""
        if self.origin_uploaded is None or not self.total_uploaded:
            return None
        return min(1.0, max(0.0, self.origin_uploaded / self.total_uploaded))

    def to_json(self) -> dict[str, Any]:
        return {
            "seeders": self.seeders,
            "leechers": self.leechers,
            "completed": self.completed,
            "uploaded": self.total_uploaded,
            "origin_share": self.origin_share,
        }


class HealthSource(Protocol):
    def health(self, asset: Asset) -> Deferred[SwarmHealth | None]:
        """The swarm's health now; None (or a failure) when it is not known."""


def scrape_url(tracker: str, info_hash: str, token: str | None = None) -> str:
    """The BEP 48 scrape URL of a tracker (a base URL or its announce URL)."""
    parts = urlsplit(tracker)
    path = parts.path
    head, _, last = path.rpartition("/")
    if last.startswith("announce"):
        path = f"{head}/scrape{last[len('announce') :]}"
    else:
        path = path.rstrip("/") + "/scrape"
    query = "info_hash=" + quote(bytes.fromhex(info_hash), safe="")
    if token is not None:
        query += "&" + urlencode({"token": token})
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def _count(value: Any, name: str) -> int:
    if type(value) is not int or value < 0:
        raise ScrapeError(f"scrape: {name} is not a count")
    return value


def parse_scrape_response(body: bytes, info_hash: str) -> SwarmHealth:
    """The swarm's counts from a scrape answer; :class:`ScrapeError` otherwise."""
    try:
        doc = bdecode(body)
    except BencodeError as e:
        raise ScrapeError(f"scrape: not bencoded: {e}") from None
    if not isinstance(doc, dict):
        raise ScrapeError("scrape: the answer is not a dictionary")
    failure = doc.get(b"failure reason")
    if failure is not None:
        reason = failure.decode("utf-8", "replace") if isinstance(failure, bytes) else "?"
        raise ScrapeError(f"scrape refused: {reason[:200]}")
    files = doc.get(b"files")
    if not isinstance(files, dict):
        raise ScrapeError("scrape: no files dictionary")
    entry = files.get(bytes.fromhex(info_hash))
    if not isinstance(entry, dict):
        raise ScrapeError("scrape: the tracker does not report this swarm")
    return SwarmHealth(
        seeders=_count(entry.get(b"complete"), "complete"),
        leechers=_count(entry.get(b"incomplete"), "incomplete"),
        completed=_count(entry.get(b"downloaded", 0), "downloaded"),
    )


class Fetch(Protocol):
    def __call__(
        self, url: str, headers: Mapping[str, str] | None = None
    ) -> Deferred[tuple[int, bytes]]: ...


class _CappedBody(TwistedProtocol):
    def __init__(self, done: Deferred[bytes], cap: int) -> None:
        self.done = done
        self.cap = cap
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.cap:
            self.done.errback(ScrapeError(f"answer larger than {self.cap} bytes"))
            self.transport.stopProducing()  # type: ignore[union-attr]
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = ResponseDone) -> None:  # type: ignore[assignment]
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


def http_fetch(reactor: Any, timeout: float = 5.0, max_bytes: int = 64 * 1024) -> Fetch:
    """A ``fetch(url) -> Deferred[(status, body)]`` on twisted.web's Agent, with a
    deadline for the whole exchange and a cap on the body."""
    agent = Agent(
        reactor, connectTimeout=timeout, pool=HTTPConnectionPool(reactor, persistent=False)
    )

    def fetch(url: str, headers: Mapping[str, str] | None = None) -> Deferred[tuple[int, bytes]]:
        h = Headers({b"user-agent": [b"imsp2pd-index"]})
        for k, v in (headers or {}).items():
            h.setRawHeaders(k.encode("latin-1"), [v.encode("latin-1")])
        d: Deferred[Any] = agent.request(b"GET", url.encode("ascii"), h)

        def read(response: Any) -> Deferred[tuple[int, bytes]]:
            proto: _CappedBody

            def cancel(_: Deferred[bytes]) -> None:
                if proto.transport is not None:
                    proto.transport.stopProducing()

            body: Deferred[bytes] = Deferred(cancel)
            proto = _CappedBody(body, max_bytes)
            response.deliverBody(proto)
            return body.addCallback(lambda data: (response.code, data))

        d.addCallback(read)
        d.addTimeout(timeout, reactor)
        return d

    return fetch


class ScrapeHealthSource:
    """Swarm health by BEP 48 scrape over HTTP.

    ``token_for(asset)`` gives the entitlement token the operator's tracker
    wants in the scrape query (or None to scrape without one).
    """

    def __init__(
        self, fetch: Fetch, token_for: Callable[[Asset], str | None] | None = None
    ) -> None:
        self.fetch = fetch
        self.token_for = token_for

    def health(self, asset: Asset) -> Deferred[SwarmHealth | None]:
        token = self.token_for(asset) if self.token_for is not None else None
        url = scrape_url(asset.tracker, asset.info_hash, token)

        def answered(result: tuple[int, bytes]) -> SwarmHealth:
            status, body = result
            if status != 200:
                raise ScrapeError(f"scrape: HTTP {status}")
            return parse_scrape_response(body, asset.info_hash)

        return self.fetch(url).addCallback(answered)


def tracker_key(url: str) -> str:
    """A tracker URL without a trailing ``/`` or ``/announce``: the key of ``admin_urls``."""
    url = url.rstrip("/")
    return url[: -len("/announce")] if url.endswith("/announce") else url


def _opt_count(doc: Mapping[str, Any], name: str) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise ScrapeError(f"swarm stats: {name} is not a count")
    return value


def parse_swarm_stats(body: bytes, info_hash: str) -> SwarmHealth:
    """The tracker's ``GET /admin/swarms/{infohash}`` JSON as :class:`SwarmHealth`.

    ``seeders``, ``leechers``, ``completed`` are required; ``uploaded`` (all
    bytes the swarm's peers reported uploading) and ``origin_uploaded`` (the
    part the publisher's and the operator's seeders uploaded) are used when
    the tracker gives them."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ScrapeError("swarm stats: not JSON") from None
    if not isinstance(doc, dict):
        raise ScrapeError("swarm stats: not a JSON object")
    if doc.get("info_hash", info_hash) != info_hash:
        raise ScrapeError("swarm stats: another swarm's")
    counts = {n: _opt_count(doc, n) for n in ("seeders", "leechers", "completed")}
    missing = [n for n, v in counts.items() if v is None]
    if missing:
        raise ScrapeError(f"swarm stats: no {missing[0]}")
    return SwarmHealth(
        seeders=counts["seeders"] or 0,
        leechers=counts["leechers"] or 0,
        completed=counts["completed"] or 0,
        origin_uploaded=_opt_count(doc, "origin_uploaded"),
        total_uploaded=_opt_count(doc, "uploaded"),
    )


class TrackerAdminSource:
    """Swarm health from the tracker's operator API (its control port):
    ``GET {admin}/admin/swarms/{infohash}`` with the bearer token. ``admin_urls``
    maps a tracker URL (:func:`tracker_key`) to the control port URL of the
    process that runs it. Unlike a scrape, it reports the upload totals, so
    the origin's share is known when the tracker counts it."""

    def __init__(self, fetch: Fetch, admin_urls: Mapping[str, str], token: str) -> None:
        self.fetch = fetch
        self.admin_urls = {tracker_key(k): v.rstrip("/") for k, v in admin_urls.items()}
        self.token = token

    def health(self, asset: Asset) -> Deferred[SwarmHealth | None]:
        admin = self.admin_urls.get(tracker_key(asset.tracker))
        if admin is None:
            return fail(ScrapeError(f"no operator API known for {asset.tracker}"))
        url = f"{admin}/admin/swarms/{asset.info_hash}"

        def answered(result: tuple[int, bytes]) -> SwarmHealth | None:
            status, body = result
            if status == 404:
                return None  # not registered there (yet)
            if status != 200:
                raise ScrapeError(f"swarm stats: HTTP {status}")
            return parse_swarm_stats(body, asset.info_hash)

        d = self.fetch(url, {"Authorization": f"Bearer {self.token}"})
        return d.addCallback(answered)


class FirstKnownSource:
    """Asks each source in turn until one knows the swarm's health."""

    def __init__(self, *sources: HealthSource) -> None:
        self.sources = sources

    def health(self, asset: Asset) -> Deferred[SwarmHealth | None]:
        def attempt(i: int) -> Deferred[SwarmHealth | None]:
            try:
                d = self.sources[i].health(asset)
            except Exception:
                d = fail()
            if i + 1 == len(self.sources):
                return d

            def next_if_unknown(result: Any) -> Any:
                if isinstance(result, Failure) or result is None:
                    return attempt(i + 1)
                return result

            return d.addBoth(next_if_unknown)

        return attempt(0)


# What a down, slow or confused tracker causes: an unknown sample, not a logged failure.
_EXPECTED = (
    ScrapeError,
    ConnectError,
    TxTimeoutError,
    CancelledError,
    ResponseFailed,
    ConnectionError,
    OSError,
    ValueError,
)


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    health: SwarmHealth | None  # None: unknown at that time


class SwarmMonitor:
    """Samples swarm health and keeps the last ``history`` samples of each swarm.

    At most ``max_swarms`` swarms are remembered (the least recently sampled
    go first); one request per swarm is in flight at a time, and a round of
    :meth:`sample_all` has at most ``concurrency`` requests out at once.
    """

    def __init__(
        self,
        source: HealthSource,
        clock: Callable[[], float],
        history: int = 240,
        max_age: float = 30.0,
        max_swarms: int = 10_000,
        on_sample: Callable[[Sample], None] | None = None,
        concurrency: int = 8,
    ) -> None:
        if history < 1 or max_swarms < 1 or concurrency < 1:
            raise ValueError("history, max_swarms and concurrency must be positive")
        self.source = source
        self.clock = clock
        self.history_size = history
        self.max_age = max_age
        self.max_swarms = max_swarms
        self.on_sample = on_sample
        self._rings: OrderedDict[str, deque[Sample]] = OrderedDict()
        self._in_flight: dict[str, list[Deferred[Sample]]] = {}
        self._round = DeferredSemaphore(concurrency)

    def latest(self, info_hash: str) -> Sample | None:
        ring = self._rings.get(info_hash)
        return ring[-1] if ring else None

    def history(self, info_hash: str) -> list[Sample]:
        return list(self._rings.get(info_hash, ()))

    def tracked(self) -> list[str]:
        return list(self._rings)

    def _record(self, info_hash: str, sample: Sample) -> Sample:
        ring = self._rings.get(info_hash)
        if ring is None:
            ring = self._rings[info_hash] = deque(maxlen=self.history_size)
            while len(self._rings) > self.max_swarms:
                self._rings.popitem(last=False)
        else:
            self._rings.move_to_end(info_hash)
        ring.append(sample)
        if self.on_sample is not None:
            self.on_sample(sample)
        return sample

    def sample(self, asset: Asset) -> Deferred[Sample]:
        """Ask the source now; never fails (an error is an unknown sample)."""
        waiting = self._in_flight.get(asset.info_hash)
        if waiting is not None:
            d: Deferred[Sample] = Deferred()
            waiting.append(d)
            return d
        self._in_flight[asset.info_hash] = []
        try:
            asked = self.source.health(asset)
        except Exception:
            asked = Deferred()
            asked.errback()

        def got(health: SwarmHealth | None) -> Sample:
            return self._record(asset.info_hash, Sample(self.clock(), health))

        def failed(f: Failure) -> Sample:
            if f.check(*_EXPECTED):
                log.debug(
                    "index: swarm {ih} health unknown: {why}", ih=asset.info_hash, why=f.value
                )
            else:  # pragma: no cover - a bug in a source
                log.failure("index: health source failed", f)
            return self._record(asset.info_hash, Sample(self.clock(), None))

        def release(sample: Sample) -> Sample:
            for w in self._in_flight.pop(asset.info_hash, []):
                w.callback(sample)
            return sample

        out = cast("Deferred[Sample]", asked.addCallbacks(got, failed))
        return out.addCallback(release)

    def current(self, asset: Asset) -> Deferred[Sample]:
        """The latest sample when fresh, else a new one."""
        last = self.latest(asset.info_hash)
        if last is not None and self.clock() - last.at <= self.max_age:
            return succeed(last)
        return self.sample(asset)

    def sample_all(self, assets: Iterable[Asset]) -> Deferred[list[Sample]]:
        assets = list(assets)
        keep = {a.info_hash for a in assets}
        for ih in [ih for ih in self._rings if ih not in keep]:
            del self._rings[ih]
        # a round asks at most ``concurrency`` trackers at once
        return gatherResults([self._round.run(self.sample, a) for a in assets])


# -- the chart -------------------------------------------------------------------


def _nice_max(value: float) -> int:
    """A round upper bound for a count axis (1, 2, 5, 10, 20, 50, …)."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return int(step * magnitude)
    return int(10 * magnitude)  # pragma: no cover


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"-{round(seconds)} s"
    if seconds < 5400:
        return f"-{round(seconds / 60)} min"
    return f"-{seconds / 3600:.1f} h"


def svg_chart(
    samples: Sequence[Sample],
    now: float,
    *,
    title: str = "",
    width: int = 640,
    height: int = 200,
) -> str:
    """An inline SVG of seeders and leechers (left axis) and the origin's share of
    the upload (right axis, percent) over the time of the samples. Gaps where
    the health was unknown. Pure: the same samples draw the same bytes."""
    left, right, top, bottom = 44, 48, 12, 28
    pw, ph = width - left - right, height - top - bottom
    t0 = samples[0].at if samples else now - 60
    span = max(now - t0, 1.0)
    known = [s.health for s in samples if s.health is not None]
    ymax = _nice_max(max([1] + [max(h.seeders, h.leechers) for h in known]))

    def x(t: float) -> float:
        return round(left + pw * (t - t0) / span, 1)

    def y_count(v: float) -> float:
        return round(top + ph - ph * v / ymax, 1)

    def y_share(v: float) -> float:
        return round(top + ph - ph * v, 1)

    def lines(
        value: Callable[[SwarmHealth], float | None], y: Callable[[float], float]
    ) -> list[str]:
        runs: list[list[str]] = [[]]
        for s in samples:
            v = None if s.health is None else value(s.health)
            if v is None:
                if runs[-1]:
                    runs.append([])
                continue
            runs[-1].append(f"{x(s.at)},{y(v)}")
        return [" ".join(r) for r in runs if r]

    esc = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f"<title>{esc(title or 'swarm health')}</title>",
        f'<rect class="plot" x="{left}" y="{top}" width="{pw}" height="{ph}" '
        'fill="#fafafa" stroke="#ccc"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        yy = round(top + ph - ph * frac, 1)
        out.append(
            f'<line x1="{left}" y1="{yy}" x2="{left + pw}" y2="{yy}" stroke="#e4e4e4"/>'
            f'<text class="axis" x="{left - 6}" y="{yy + 4}" text-anchor="end" '
            f'font-size="11" fill="#555">{round(ymax * frac)}</text>'
            f'<text class="axis share" x="{left + pw + 6}" y="{yy + 4}" font-size="11" '
            f'fill="#36c">{round(100 * frac)}%</text>'
        )
    for label, t, anchor in ((_ago(now - t0), t0, "start"), ("now", now, "end")):
        out.append(
            f'<text class="axis" x="{x(t)}" y="{height - 8}" text-anchor="{anchor}" '
            f'font-size="11" fill="#555">{esc(label)}</text>'
        )
    series = (
        ("seeders", "#1a7f37", lambda h: h.seeders, y_count, ""),
        ("leechers", "#d4700b", lambda h: h.leechers, y_count, ""),
        ("origin-share", "#36c", lambda h: h.origin_share, y_share, ' stroke-dasharray="5 3"'),
    )
    for name, colour, value, y, dash in series:
        for points in lines(value, y):
            if " " not in points:  # a single point: a dot, so it shows
                cx, cy = points.split(",")
                out.append(f'<circle class="{name}" cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
            else:
                out.append(
                    f'<polyline class="{name}" fill="none" stroke="{colour}" '
                    f'stroke-width="2"{dash} points="{points}"/>'
                )
    if not known:
        out.append(
            f'<text class="unknown" x="{left + pw / 2}" y="{top + ph / 2}" '
            'text-anchor="middle" font-size="13" fill="#888">no data from the tracker yet</text>'
        )
    out.append("</svg>")
    return "".join(out)


# -- pages ----------------------------------------------------------------------

STYLESHEET = b"""\
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d1d1f;background:#fff}
header{display:flex;gap:1.5em;align-items:baseline;padding:.8em 1.5em;background:#123;color:#fff}
header a{color:#fff;text-decoration:none}header .brand{font-weight:700;font-size:1.2em}
main{max-width:60em;margin:1.5em auto;padding:0 1.5em}
footer{max-width:60em;margin:2em auto;padding:0 1.5em;color:#666;font-size:.85em}
.assets{list-style:none;padding:0}.assets li{border-bottom:1px solid #eee;padding:.8em 0}
.assets .title{font-size:1.15em;font-weight:600}.meta{color:#666;font-size:.9em}
.genres a{margin-right:.8em}.genres a.current{font-weight:700}
table{border-collapse:collapse}td,th{padding:.35em .8em;border-bottom:1px solid #eee;text-align:left}
.buy{display:inline-block;padding:.25em .8em;border-radius:4px;background:#1a7f37;color:#fff;text-decoration:none}
.health .unknown{color:#888}.description{white-space:pre-wrap}
.swarm{margin-bottom:2em}.legend span{margin-right:1em}
.legend .seeders{color:#1a7f37}.legend .leechers{color:#d4700b}.legend .origin-share{color:#36c}
"""

FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    b'<rect width="16" height="16" rx="3" fill="#123"/>'
    b'<path d="M4 11l4-6 4 6z" fill="#fff"/></svg>'
)


@dataclass(frozen=True, slots=True)
class IndexSettings:
    psi: str = "sip:content@ims.example.org"
    base_url: str = "http://127.0.0.1:8080"
    site_name: str = "imsp2p content"
    dashboard: bool = True
    page_size: int = 50  # assets per catalogue page
    api_limit: int = 1000  # most assets per JSON answer


def _all(*ds: Deferred[Any]) -> Deferred[list[Any]]:
    return gatherResults(list(ds))


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _rights_text(offer: Offer) -> str:
    r = offer.rights
    parts = []
    if r.play_seconds_from_first_use is not None:
        s = r.play_seconds_from_first_use
        if s % 86400 == 0:
            parts.append(f"{s // 86400} day(s) from first play")
        elif s % 3600 == 0:
            parts.append(f"{s // 3600} hour(s) from first play")
        else:
            parts.append(f"{s} s from first play")
    if r.play_until is not None:
        when = datetime.fromtimestamp(r.play_until, UTC).strftime("%Y-%m-%d %H:%M UTC")
        parts.append(f"until {when}")
    if r.plays is not None:
        parts.append(f"{r.plays} play(s)")
    parts.append(f"{r.devices} device(s)")
    return ", ".join(parts)


def _int_arg(req: WebRequest, name: str, default: int, lo: int, hi: int) -> int:
    raw = req.arg(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise HttpError(400, "bad_request", f"{name} must be an integer from {lo} to {hi}")
    return int(raw)


def _pager(page: int, pages: int, genre: str | None) -> str:
    def href(n: int) -> str:
        query = {"genre": genre} if genre is not None else {}
        if n > 1:
            query["page"] = str(n)
        return "/" + ("?" + urlencode(query) if query else "")

    parts = ['<p class="pager">']
    if page > 1:
        parts.append(f'<a rel="prev" href="{_e(href(page - 1))}">Newer</a> ')
    parts.append(f"page {page} of {pages}")
    if page < pages:
        parts.append(f' <a rel="next" href="{_e(href(page + 1))}">Older</a>')
    parts.append("</p>")
    return "".join(parts)


def _health_html(sample: Sample | None, now: float) -> str:
    if sample is None or sample.health is None:
        return '<p class="health"><span class="unknown">Swarm health: unknown</span></p>'
    h = sample.health
    share = "" if h.origin_share is None else f" · origin share {100 * h.origin_share:.0f}%"
    return (
        f'<p class="health">Seeders <b class="seeders">{h.seeders}</b> · '
        f'leechers <b class="leechers">{h.leechers}</b> · '
        f'completed <b class="completed">{h.completed}</b>{share} '
        f'<span class="meta">({max(0, round(now - sample.at))} s ago)</span></p>'
    )


class IndexSite:
    """The site's handlers on a :class:`Router` (``self.router``)."""

    def __init__(
        self,
        catalogue: Catalogue,
        monitor: SwarmMonitor,
        settings: IndexSettings,
        metrics: Registry,
        clock: Callable[[], float],
        router: Router | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.monitor = monitor
        self.settings = settings
        self.clock = clock
        self.views = metrics.counter(
            "imsp2pd_index_page_views_total", "Pages and API answers served by the index", ("page",)
        )
        self.listed = metrics.gauge(
            "imsp2pd_index_assets_listed", "Assets listed on the index (at the last look)"
        )
        self.router = router if router is not None else Router(max_body=0)
        r = self.router
        r.route("GET", "/", self.catalogue_page)
        r.route("GET", "/assets/{doi}", self.asset_page)
        r.route("GET", "/torrents/{info_hash}.torrent", self.torrent)
        if settings.dashboard:
            r.route("GET", "/dashboard", self.dashboard)
        r.route("GET", "/api/assets", self.api_assets)
        r.route("GET", "/api/assets/{doi}", self.api_asset)
        r.route("GET", "/static/index.css", self.static(STYLESHEET, "text/css; charset=utf-8"))
        r.route("GET", "/static/favicon.svg", self.static(FAVICON, "image/svg+xml"))
        r.route("GET", "/favicon.ico", self.static(FAVICON, "image/svg+xml"))
        r.route("GET", "/{path}", self.not_found)

    # -- admin routes (control port) --------------------------------------------

    def add_admin_routes(self, admin: Router) -> None:
        admin.route("GET", "/admin/content", self.admin_content)
        admin.route("GET", "/admin/content/{doi}", self.admin_asset)

    def _admin_view(self, asset: Asset) -> dict[str, Any]:
        view = asset.to_json()
        last = self.monitor.latest(asset.info_hash)
        view["health"] = (
            None
            if last is None
            else {"at": last.at, **(last.health.to_json() if last.health else {"known": False})}
        )
        return view

    def admin_content(self, req: WebRequest) -> Deferred[dict[str, Any]]:
        raw = req.arg("state")
        try:
            state = None if raw in (None, "", "all") else AssetState(raw)
        except ValueError:
            raise HttpError(
                400, "bad_state", "state must be pending, listed, removed or all"
            ) from None
        d = self.catalogue.by_state(state)
        return d.addCallback(lambda assets: {"assets": [self._admin_view(a) for a in assets]})

    def admin_asset(self, req: WebRequest) -> Deferred[dict[str, Any]]:
        def found(asset: Asset | None) -> dict[str, Any]:
            if asset is None:
                raise HttpError(404, "unknown_doi", f"no asset {req.params['doi']}")
            view = self._admin_view(asset)
            view["history"] = [
                {"at": s.at, **(s.health.to_json() if s.health else {"known": False})}
                for s in self.monitor.history(asset.info_hash)
            ]
            return view

        return self.catalogue.get(req.params["doi"]).addCallback(found)

    # -- helpers ----------------------------------------------------------------

    def static(self, body: bytes, content_type: str) -> Callable[[WebRequest], Response]:
        def serve(req: WebRequest) -> Response:
            return Response(200, body, content_type, {"Cache-Control": "max-age=3600"})

        return serve

    def _page(self, title: str, body: str, status: int = 200) -> Response:
        s = self.settings
        nav = '<a href="/">Catalogue</a>'
        if s.dashboard:
            nav += ' <a href="/dashboard">Dashboard</a>'
        nav += ' <a href="/api/assets">JSON</a>'
        doc = (
            "<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)} · {_e(s.site_name)}</title>"
            '<link rel="stylesheet" href="/static/index.css">'
            '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
            "</head><body>"
            f'<header><a class="brand" href="/">{_e(s.site_name)}</a><nav>{nav}</nav></header>'
            f"<main>{body}</main>"
            f"<footer>Buy with your IMS client: each price is a <code>sip:</code> link to the "
            f"content service <code>{_e(s.psi)}</code>.</footer>"
            "</body></html>\n"
        )
        return Response(status, doc.encode("utf-8"), HTML_TYPE, SECURITY_HEADERS)

    def _listed(self, assets: list[Asset]) -> list[Asset]:
        self.listed.set(len(assets))
        return assets

    def _asset_json(self, asset: Asset) -> dict[str, Any]:
        view = asset.to_json()
        base = self.settings.base_url.rstrip("/")
        view["url"] = base + asset_path(asset.doi)
        view["torrent_url"] = base + torrent_path(asset.info_hash)
        for offer in view["offers"]:
            offer["purchase_uri"] = purchase_uri(self.settings.psi, asset.doi, offer["id"])
        return view

    # -- pages ------------------------------------------------------------------

    def catalogue_page(self, req: WebRequest) -> Deferred[Response]:
        self.views.inc(page="catalogue")
        genre = req.arg("genre") or None
        d = _all(self.catalogue.listed(), self.catalogue.genres())

        def render(results: list[Any]) -> Response:
            every, genres = results
            self._listed(every)
            matching = [a for a in every if genre is None or a.genre == genre]
            size = self.settings.page_size
            pages = max(1, -(-len(matching) // size))
            try:
                page = min(_int_arg(req, "page", 1, 1, 1_000_000), pages)
            except HttpError:
                page = 1
            assets = matching[(page - 1) * size : page * size]
            current = ' class="current"'
            links = [f'<a href="/"{current if genre is None else ""}>All</a>']
            for name, n in genres:
                cls = current if name == genre else ""
                href = "/?" + urlencode({"genre": name})
                links.append(f'<a href="{_e(href)}"{cls}>{_e(name)} ({n})</a>')
            heading = "Catalogue" if genre is None else f"Catalogue: {genre}"
            body = [f"<h1>{_e(heading)}</h1>", f'<p class="genres">{" ".join(links)}</p>']
            if not assets:
                body.append('<p class="empty">Nothing is listed here yet.</p>')
            else:
                body.append('<ul class="assets">')
                for a in assets:
                    prices = ", ".join(f"{_e(o.price)} {_e(o.currency)}" for o in a.offers)
                    meta = " · ".join(_e(x) for x in (a.genre, a.series, _size(a.size), a.doi) if x)
                    body.append(
                        f'<li class="asset" data-doi="{_e(a.doi)}">'
                        f'<a class="title" href="{_e(asset_path(a.doi))}">{_e(a.title)}</a> '
                        f'<span class="prices">from {prices}</span>'
                        f'<div class="meta">{meta}</div></li>'
                    )
                body.append("</ul>")
            if pages > 1:
                body.append(_pager(page, pages, genre))
            return self._page(heading, "".join(body))

        return d.addCallback(render)

    def _listed_asset(self, doi: str) -> Deferred[Asset]:
        def found(asset: Asset | None) -> Asset:
            if asset is None or asset.state is not AssetState.LISTED:
                raise HttpError(404, "unknown_doi", f"no listed asset {doi}")
            return asset

        return self.catalogue.get(doi).addCallback(found)

    def asset_page(self, req: WebRequest) -> Deferred[Response]:
        self.views.inc(page="asset")
        doi = req.params["doi"]

        def with_health(asset: Asset) -> Deferred[Response]:
            return self.monitor.current(asset).addCallback(lambda s: self._render_asset(asset, s))

        def missing(f: Failure) -> Response:
            f.trap(HttpError)
            body = f"<h1>Not found</h1><p>No asset <code>{_e(doi)}</code> is listed.</p>"
            return self._page("Not found", body, 404)

        return self._listed_asset(doi).addCallback(with_health).addErrback(missing)

    def _render_asset(self, a: Asset, sample: Sample | None) -> Response:
        psi = self.settings.psi
        rows = []
        for o in a.offers:
            uri = purchase_uri(psi, a.doi, o.id)
            rows.append(
                f'<tr class="offer" data-offer="{_e(o.id)}"><td>{_e(o.id)}</td>'
                f'<td class="price">{_e(o.price)} {_e(o.currency)}</td>'
                f"<td>{_e(_rights_text(o))}</td>"
                f'<td><a class="buy" href="{_e(uri)}" data-doi="{_e(a.doi)}" '
                f'data-offer="{_e(o.id)}">Buy</a></td></tr>'
            )
        facts = [("DOI", a.doi), ("Size", _size(a.size)), ("Publisher", a.publisher)]
        if a.genre:
            facts.insert(1, ("Genre", a.genre))
        if a.series:
            facts.insert(2, ("Series", a.series))
        facts_html = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
        body = (
            f'<article class="asset" data-doi="{_e(a.doi)}">'
            f"<h1>{_e(a.title)}</h1>"
            f'<p class="description">{_e(a.description)}</p>'
            f'<table class="facts">{facts_html}</table>'
            "<h2>Offers</h2>"
            '<table class="offers"><tr><th>Offer</th><th>Price</th><th>Rights</th><th></th></tr>'
            f"{''.join(rows)}</table>"
            "<h2>Swarm</h2>"
            f"{_health_html(sample, self.clock())}"
            f'<p><a class="torrent" href="{_e(torrent_path(a.info_hash))}" download>'
            f"Download the .torrent</a> (encrypted; playing it needs a license)</p>"
            "</article>"
        )
        return self._page(a.title, body)

    def torrent(self, req: WebRequest) -> Deferred[Response]:
        self.views.inc(page="torrent")
        info_hash = req.params["info_hash"].lower()
        if not re.fullmatch(r"[0-9a-f]{40}", info_hash):
            raise HttpError(404, "not_found", "no such .torrent")
        d = _all(self.catalogue.torrent(info_hash), self.catalogue.by_info_hash(info_hash))

        def found(results: list[Any]) -> Response:
            data, asset = results
            if data is None or asset is None:
                raise HttpError(404, "not_found", "no such .torrent")
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", asset.name or asset.info_hash)[:100]
            return Response(
                200,
                data,
                TORRENT_TYPE,
                {"Content-Disposition": f'attachment; filename="{name}.torrent"'},
            )

        return d.addCallback(found)

    def dashboard(self, req: WebRequest) -> Deferred[Response]:
        self.views.inc(page="dashboard")
        d = _all(
            self.catalogue.by_state(AssetState.LISTED),
            self.catalogue.by_state(AssetState.PENDING),
        )

        def render(results: list[list[Asset]]) -> Response:
            listed, pending = results
            self._listed(listed)
            now = self.clock()
            parts = [
                "<h1>Swarm dashboard</h1>",
                '<p class="legend"><span class="seeders">— seeders</span>'
                '<span class="leechers">— leechers</span>'
                '<span class="origin-share">- - origin share of the upload (right axis)</span></p>',
            ]
            if not listed and not pending:
                parts.append('<p class="empty">No swarms yet.</p>')
            for a in pending + listed:
                samples = self.monitor.history(a.info_hash)
                last = samples[-1] if samples else None
                parts.append(
                    f'<section class="swarm" data-infohash="{_e(a.info_hash)}">'
                    f'<h2>{_e(a.title)} <small class="meta">{_e(a.state)} · '
                    f"{_e(a.info_hash)}</small></h2>"
                    f"{_health_html(last, now)}"
                    f"{svg_chart(samples, now, title=f'swarm health of {a.title}')}"
                    "</section>"
                )
            return self._page("Dashboard", "".join(parts))

        return d.addCallback(render)

    def not_found(self, req: WebRequest) -> Response:
        self.views.inc(page="not_found")
        body = f"<h1>Not found</h1><p>Nothing at <code>{_e(req.path)}</code>.</p>"
        return self._page("Not found", body, 404)

    # -- JSON API ---------------------------------------------------------------

    def api_assets(self, req: WebRequest) -> Deferred[dict[str, Any]]:
        """Listed assets, newest first: ``?genre=``, ``?series=``, ``?offset=``, ``?limit=``."""
        self.views.inc(page="api")
        genre, series = req.arg("genre") or None, req.arg("series") or None
        cap = self.settings.api_limit
        offset = _int_arg(req, "offset", 0, 0, 10**9)
        limit = _int_arg(req, "limit", cap, 1, cap)

        def render(assets: list[Asset]) -> dict[str, Any]:
            if genre is None and series is None:
                self._listed(assets)
            return {
                "total": len(assets),
                "offset": offset,
                "assets": [self._asset_json(a) for a in assets[offset : offset + limit]],
            }

        return self.catalogue.listed(genre=genre, series=series).addCallback(render)

    def api_asset(self, req: WebRequest) -> Deferred[dict[str, Any]]:
        self.views.inc(page="api")

        def with_health(asset: Asset) -> Deferred[dict[str, Any]]:
            def render(sample: Sample) -> dict[str, Any]:
                view = self._asset_json(asset)
                view["health"] = (
                    None if sample.health is None else {"at": sample.at, **sample.health.to_json()}
                )
                return view

            return self.monitor.current(asset).addCallback(render)

        return self._listed_asset(req.params["doi"]).addCallback(with_health)


def settings_from(section: Mapping[str, Any], domain: str) -> IndexSettings:
    """The site's settings from the ``[index]`` section of the config."""
    return IndexSettings(
        psi=section["psi"] or f"sip:content@{domain}",
        base_url=section["url"],
        site_name=section["site_name"],
        dashboard=section["dashboard"],
    )
