"""Announcing to HTTP trackers from the peer side (BEP 3, 7, 23).

Pure helpers :func:`announce_url` and :func:`parse_response`, and the thin
:class:`Announcer` that re-announces at the tracker's interval with an
injected ``get(url) -> Deferred[bytes]`` (treq in the commands, a fake in
tests) and connects the torrent to the peers it learns. Announce URLs
carry the entitlement token in their query (``?token=…``); the other
parameters are appended after it, and the URL is never logged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_from_bytes

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from imsp2pd.bittorrent.bencoding import BencodeError, bdecode

__all__ = ["AnnounceError", "AnnounceResult", "Announcer", "announce_url", "parse_response"]

log = Logger()


class AnnounceError(Exception):
    """The tracker refused (its failure reason) or answered nonsense."""


@dataclass(frozen=True, slots=True)
class AnnounceResult:
    interval: int
    min_interval: int | None
    peers: tuple[tuple[str, int], ...]
    complete: int | None = None
    incomplete: int | None = None


def announce_url(
    base: str,
    info_hash: bytes,
    peer_id: bytes,
    port: int,
    uploaded: int,
    downloaded: int,
    left: int,
    event: str = "",
    numwant: int | None = None,
) -> str:
    params = [
        "info_hash=" + quote_from_bytes(info_hash, safe=""),
        "peer_id=" + quote_from_bytes(peer_id, safe=""),
        f"port={port}",
        f"uploaded={uploaded}",
        f"downloaded={downloaded}",
        f"left={left}",
        "compact=1",
    ]
    if event:
        params.append(f"event={event}")
    if numwant is not None:
        params.append(f"numwant={numwant}")
    sep = "&" if "?" in base else "?"
    return base + sep + "&".join(params)


def _compact(raw: bytes, size: int) -> list[tuple[str, int]]:
    if len(raw) % size:
        raise AnnounceError("compact peer list has a bad length")
    out = []
    for i in range(0, len(raw), size):
        host = str(ipaddress.ip_address(raw[i : i + size - 2]))
        port = int.from_bytes(raw[i + size - 2 : i + size], "big")
        if port:
            out.append((host, port))
    return out


def _int(body: dict[bytes, Any], key: bytes) -> int | None:
    value = body.get(key)
    return value if isinstance(value, int) and value >= 0 else None


def parse_response(data: bytes) -> AnnounceResult:
    """A tracker's announce answer; raises AnnounceError (with its reason)."""
    try:
        body = bdecode(data, max_depth=8)
    except BencodeError as exc:
        raise AnnounceError(f"tracker answer is not bencoded: {exc}") from None
    if not isinstance(body, dict):
        raise AnnounceError("tracker answer is not a dictionary")
    reason = body.get(b"failure reason")
    if reason is not None:
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise AnnounceError(f"tracker refused: {text[:200]}")
    interval = _int(body, b"interval")
    if interval is None:
        raise AnnounceError("tracker answer has no interval")
    peers: list[tuple[str, int]] = []
    raw = body.get(b"peers", b"")
    if isinstance(raw, bytes):
        peers += _compact(raw, 6)
    elif isinstance(raw, list):
        for entry in raw:
            if not isinstance(entry, dict):
                continue
            ip, port = entry.get(b"ip"), entry.get(b"port")
            if isinstance(ip, bytes) and isinstance(port, int) and 0 < port < 65536:
                try:
                    peers.append((str(ipaddress.ip_address(ip.decode("ascii"))), port))
                except (ValueError, UnicodeDecodeError):
                    continue
    raw6 = body.get(b"peers6")
    if isinstance(raw6, bytes):
        peers += _compact(raw6, 18)
    return AnnounceResult(
        interval=max(interval, 1),
        min_interval=_int(body, b"min interval"),
        peers=tuple(peers),
        complete=_int(body, b"complete"),
        incomplete=_int(body, b"incomplete"),
    )


class Announcer:
    """Keeps one torrent announced to its trackers (first working one wins)."""

    def __init__(
        self,
        reactor: Any,
        torrent: Any,
        urls: list[str],
        port: int,
        get: Callable[[str], Deferred[bytes]],
        retry: float = 15.0,
    ) -> None:
        if not urls:
            raise ValueError("no tracker to announce to")
        self.reactor = reactor
        self.torrent = torrent
        self.urls = urls
        self.port = port
        self.get = get
        self.retry = retry
        self.last: AnnounceResult | None = None
        self.last_error: str | None = None
        self._call: Any = None
        self._completed_sent = torrent.complete
        self._stopped = False
        torrent.done.addCallback(self._on_done)

    def start(self) -> Deferred[None]:
        return self.announce("started")

    def _on_done(self, result: Any) -> Any:
        if not self._completed_sent and not self._stopped:
            self._completed_sent = True
            self.announce("completed")
        return result

    def _url(self, base: str, event: str) -> str:
        t = self.torrent
        return announce_url(
            base, t.meta.info_hash, t.peer_id, self.port, t.uploaded, t.downloaded, t.left, event
        )

    def announce(self, event: str = "") -> Deferred[None]:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        d = self._try(0, event)
        return d

    def _try(self, i: int, event: str) -> Deferred[None]:
        d: Deferred[Any] = self.get(self._url(self.urls[i], event))
        d.addCallback(parse_response)

        def ok(result: AnnounceResult) -> None:
            self.last, self.last_error = result, None
            for host, port in result.peers:
                self.torrent.connect(host, port)  # ourselves: refused at the handshake
            self._schedule(result.interval)

        def bad(failure: Any) -> Deferred[None] | None:
            self.last_error = failure.getErrorMessage()
            if i + 1 < len(self.urls):
                return self._try(i + 1, event)
            log.warn("announce failed: {error}", error=self.last_error)
            self._schedule(self.retry)
            return None

        d.addCallbacks(ok, bad)
        return d

    def _schedule(self, delay: float) -> None:
        if self._stopped:
            return
        if self._call is not None and self._call.active():
            self._call.cancel()  # two announces were in flight: keep one timer
        self._call = self.reactor.callLater(delay, self.announce)

    def stop(self) -> Deferred[None]:
        """Announce ``stopped`` (best effort) and stop re-announcing."""
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        d: Deferred[Any] = self.get(self._url(self.urls[0], "stopped"))
        d.addErrback(lambda _: None)
        d.addCallback(lambda _: None)
        return d
