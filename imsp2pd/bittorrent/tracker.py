"""The operator-controlled tracker, sans-IO (BEP 3, 7, 23, 27, 48).

:func:`parse_announce` and :func:`parse_scrape` turn the raw query string of
an HTTP GET into frozen requests (or raise :class:`TrackerFailure`);
:class:`Tracker` admits, updates its peer tables and returns the bencoded
response body; every failure a client can cause is a bencoded
``{"failure reason": …}`` (:func:`failure_body`), never an exception escaping
to the HTTP adapter. Time is always an argument (``now``, Unix seconds).

Admission (DESIGN.md §3): an announce needs a valid *tracker* entitlement
token (query parameter ``token``) for that info-hash, not expired and not
revoked, for a registered swarm:

* ``active`` swarms admit every role; a seed is sent only leechers;
* ``muted`` swarms admit only ``provider`` and ``seeder`` tokens and give
  them only each other;
* ``disabled`` swarms refuse everything and hold no peers.

Revocation is checked through an injected :class:`RevocationChecker`; after
the list changes, :meth:`Tracker.drop_revoked` removes the revoked peers from
every swarm at once.

Peers are identified by peer id *and* address:port (all loopback test peers
share 127.0.0.1). Peer tables are bounded (``max_peers`` overall,
``max_peers_per_swarm``, ``max_swarms``); a swarm keeps its peers in a list
plus an index, so joining, leaving and picking a random set of ``numwant``
peers cost O(numwant), not O(swarm size). Peers not heard from within
``peer_expiry`` seconds are dropped by a lazy per-swarm sweep and by
:meth:`Tracker.expire`.
"""

from __future__ import annotations

import enum
import ipaddress
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote_to_bytes

from imsp2pd.bittorrent.bencoding import bencode
from imsp2pd.entitlement import EntitlementError, Reason, TrackerRole, TrackerToken, Verifier

__all__ = [
    "AnnounceEvent",
    "AnnounceRequest",
    "FailureCode",
    "NoRevocations",
    "RevocationChecker",
    "ScrapeRequest",
    "SwarmState",
    "SwarmStats",
    "Tracker",
    "TrackerConfig",
    "TrackerFailure",
    "failure_body",
    "parse_announce",
    "parse_scrape",
]

MAX_QUERY = 8192
MAX_PARAMS = 64
MAX_SCRAPE_HASHES = 64
MAX_COUNTER = 2**62


class FailureCode(enum.IntEnum):
    """Why an announce or scrape was refused (a label for logs and metrics)."""

    BAD_REQUEST = 1
    NO_TOKEN = 2
    BAD_TOKEN = 3
    EXPIRED_TOKEN = 4
    WRONG_TOKEN = 5
    REVOKED = 6
    UNREGISTERED = 7
    MUTED = 8
    DISABLED = 9
    FULL = 10


class TrackerFailure(Exception):
    """Answered with a bencoded failure reason (HTTP 200, as BEP 3 expects)."""

    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def failure_body(message: str, retry_in: int | None = None) -> bytes:
    body: dict[bytes, object] = {b"failure reason": message}
    if retry_in is not None:
        body[b"retry in"] = retry_in  # BEP 31
    return bencode(body)


class AnnounceEvent(enum.IntEnum):
    NONE = 0
    COMPLETED = 1
    STARTED = 2
    STOPPED = 3
    PAUSED = 4  # BEP 21: a partial seed that stays in the swarm


_EVENTS = {
    b"": AnnounceEvent.NONE,
    b"empty": AnnounceEvent.NONE,
    b"started": AnnounceEvent.STARTED,
    b"completed": AnnounceEvent.COMPLETED,
    b"stopped": AnnounceEvent.STOPPED,
    b"paused": AnnounceEvent.PAUSED,
}


class SwarmState(enum.StrEnum):
    ACTIVE = "active"
    MUTED = "muted"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    info_hash: bytes
    peer_id: bytes
    ip: str  # the source address of the request, normalised
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: AnnounceEvent
    compact: bool
    no_peer_id: bool
    numwant: int | None
    token: str | None
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class ScrapeRequest:
    info_hashes: tuple[bytes, ...]
    token: str | None


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    interval: int = 1800
    min_interval: int = 60
    peer_expiry: int = 2 * 1800 + 60
    default_numwant: int = 50
    max_numwant: int = 200
    max_peers: int = 200_000
    max_peers_per_swarm: int = 50_000
    max_swarms: int = 100_000
    sweep_every: int = 60

    def __post_init__(self) -> None:
        if not 0 < self.min_interval <= self.interval:
            raise ValueError("tracker: need 0 < min_interval <= interval")
        if self.peer_expiry <= self.interval:
            raise ValueError("tracker: peer_expiry must be longer than interval")


class RevocationChecker(Protocol):
    """The DRM server's revocation list, as the tracker sees it."""

    def is_revoked(self, impu: str, token_id: str, doi: str | None) -> bool: ...


class NoRevocations:
    def is_revoked(self, impu: str, token_id: str, doi: str | None) -> bool:
        return False


# -- request parsing ---------------------------------------------------------


def _split_query(query: bytes) -> list[tuple[bytes, bytes]]:
    if len(query) > MAX_QUERY:
        raise TrackerFailure(FailureCode.BAD_REQUEST, "query too long")
    pairs = []
    for part in query.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        pairs.append((unquote_to_bytes(name), unquote_to_bytes(value)))
        if len(pairs) > MAX_PARAMS:
            raise TrackerFailure(FailureCode.BAD_REQUEST, "too many parameters")
    return pairs


def _single(pairs: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    params: dict[bytes, bytes] = {}
    for name, value in pairs:
        if name in params:
            raise TrackerFailure(
                FailureCode.BAD_REQUEST, f"parameter {name.decode('latin-1')} repeated"
            )
        params[name] = value
    return params


def _count(
    params: dict[bytes, bytes], name: bytes, default: int | None = None, hi: int = MAX_COUNTER
) -> int:
    raw = params.get(name)
    if raw is None or raw == b"":
        if default is None:
            raise TrackerFailure(FailureCode.BAD_REQUEST, f"missing {name.decode()}")
        return default
    if not raw.isdigit() or len(raw) > 19:
        raise TrackerFailure(
            FailureCode.BAD_REQUEST, f"{name.decode()} must be a non-negative integer"
        )
    value = int(raw)
    if value > hi:
        raise TrackerFailure(FailureCode.BAD_REQUEST, f"{name.decode()} out of range")
    return value


def _token(raw: bytes | None) -> str | None:
    if raw is None or raw == b"":
        return None
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise TrackerFailure(FailureCode.BAD_TOKEN, "token is not ASCII") from None


def _flag(params: dict[bytes, bytes], name: bytes, default: bool) -> bool:
    raw = params.get(name)
    if raw is None or raw == b"":
        return default
    if raw not in (b"0", b"1"):
        raise TrackerFailure(FailureCode.BAD_REQUEST, f"{name.decode()} must be 0 or 1")
    return raw == b"1"


def normalise_ip(ip: str) -> str:
    """The textual address of a peer; IPv4-mapped IPv6 becomes IPv4."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        raise TrackerFailure(FailureCode.BAD_REQUEST, "bad peer address") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def parse_announce(query: bytes, remote_ip: str) -> AnnounceRequest:
    """Parse the query string of ``GET /announce?…`` (BEP 3, 7, 23).

    The peer's address is the request's source address; the ``ip`` and
    ``ipv6`` parameters are ignored, so nobody can point a swarm at a third
    party.
    """
    params = _single(_split_query(query))
    info_hash = params.get(b"info_hash", b"")
    if len(info_hash) != 20:
        raise TrackerFailure(FailureCode.BAD_REQUEST, "info_hash must be 20 bytes")
    peer_id = params.get(b"peer_id", b"")
    if len(peer_id) != 20:
        raise TrackerFailure(FailureCode.BAD_REQUEST, "peer_id must be 20 bytes")
    port = _count(params, b"port", hi=65535)
    if port == 0:
        raise TrackerFailure(FailureCode.BAD_REQUEST, "port must be 1-65535")
    try:
        event = _EVENTS[params.get(b"event", b"")]
    except KeyError:
        raise TrackerFailure(FailureCode.BAD_REQUEST, "unknown event") from None
    numwant_raw = params.get(b"numwant")
    numwant = None if not numwant_raw else _count(params, b"numwant", hi=10**6)
    key = params.get(b"key")
    return AnnounceRequest(
        info_hash=info_hash,
        peer_id=peer_id,
        ip=normalise_ip(remote_ip),
        port=port,
        uploaded=_count(params, b"uploaded", 0),
        downloaded=_count(params, b"downloaded", 0),
        left=_count(params, b"left", 0),
        event=event,
        compact=_flag(params, b"compact", True),
        no_peer_id=_flag(params, b"no_peer_id", False),
        numwant=numwant,
        token=_token(params.get(b"token")),
        key=key[:64] if key else None,
    )


def parse_scrape(query: bytes) -> ScrapeRequest:
    """Parse ``GET /scrape?info_hash=…&info_hash=…&token=…`` (BEP 48)."""
    pairs = _split_query(query)
    hashes: list[bytes] = []
    token: bytes | None = None
    for name, value in pairs:
        if name == b"info_hash":
            if len(value) != 20:
                raise TrackerFailure(FailureCode.BAD_REQUEST, "info_hash must be 20 bytes")
            if value not in hashes:
                hashes.append(value)
        elif name == b"token":
            if token is not None:
                raise TrackerFailure(FailureCode.BAD_REQUEST, "parameter token repeated")
            token = value
    if len(hashes) > MAX_SCRAPE_HASHES:
        raise TrackerFailure(FailureCode.BAD_REQUEST, "too many info_hash values")
    return ScrapeRequest(tuple(hashes), _token(token))


# -- state -------------------------------------------------------------------


class _Peer:
    __slots__ = (
        "addr",
        "impu",
        "key",
        "last_seen",
        "left",
        "peer_id",
        "port",
        "ip",
        "role",
        "token_id",
        "uploaded",
        "downloaded",
        "v6",
        "completed",
    )

    def __init__(
        self, key: bytes, req: AnnounceRequest, token: TrackerToken, addr: bytes, now: float
    ) -> None:
        self.key = key
        self.peer_id = req.peer_id
        self.ip = req.ip
        self.port = req.port
        self.addr = addr  # compact: 4 or 16 address bytes + 2 port bytes
        self.v6 = len(addr) == 18
        self.impu = token.impu
        self.token_id = token.token_id
        self.role = token.role
        self.left = req.left
        self.uploaded = req.uploaded
        self.downloaded = req.downloaded
        self.last_seen = now
        self.completed = False

    @property
    def is_seed(self) -> bool:
        return self.left == 0


class _Swarm:
    __slots__ = (
        "completed",
        "doi",
        "downloaded_bytes",
        "index",
        "info_hash",
        "last_sweep",
        "origin_uploaded_bytes",
        "peers",
        "seeders",
        "state",
        "uploaded_bytes",
    )

    def __init__(self, info_hash: bytes, doi: str | None, state: SwarmState) -> None:
        self.info_hash = info_hash
        self.doi = doi
        self.state = state
        self.peers: list[_Peer] = []
        self.index: dict[bytes, int] = {}
        self.seeders = 0
        self.completed = 0
        self.uploaded_bytes = 0
        self.downloaded_bytes = 0
        self.origin_uploaded_bytes = 0  # uploaded by providers and the operator's seeders
        self.last_sweep = 0.0

    @property
    def leechers(self) -> int:
        return len(self.peers) - self.seeders


@dataclass(frozen=True, slots=True)
class SwarmStats:
    info_hash: str
    doi: str | None
    state: SwarmState
    seeders: int
    leechers: int
    completed: int
    uploaded: int
    downloaded: int
    origin_uploaded: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "info_hash": self.info_hash,
            "doi": self.doi,
            "state": str(self.state),
            "seeders": self.seeders,
            "leechers": self.leechers,
            "completed": self.completed,
            "uploaded": self.uploaded,
            "downloaded": self.downloaded,
            "origin_uploaded": self.origin_uploaded,
        }


_REASON_CODES = {
    Reason.MALFORMED: FailureCode.BAD_TOKEN,
    Reason.BAD_SIGNATURE: FailureCode.BAD_TOKEN,
    Reason.EXPIRED: FailureCode.EXPIRED_TOKEN,
    Reason.WRONG_KIND: FailureCode.WRONG_TOKEN,
    Reason.WRONG_SUBJECT: FailureCode.WRONG_TOKEN,
}


class Tracker:
    """Swarm registry, admission and peer tables. Not thread-safe; no I/O."""

    def __init__(
        self,
        verifier: Verifier,
        config: TrackerConfig | None = None,
        revocations: RevocationChecker | None = None,
        rng: random.Random | None = None,
        on_failure: Callable[[FailureCode], None] | None = None,
    ) -> None:
        self.verifier = verifier
        self.config = config or TrackerConfig()
        self.revocations: RevocationChecker = (
            revocations if revocations is not None else NoRevocations()
        )
        self._rng = rng or random.Random()
        self._swarms: dict[bytes, _Swarm] = {}
        self._npeers = 0
        self.on_failure = on_failure

    # -- registry --------------------------------------------------------

    def register(
        self, info_hash: bytes, doi: str | None, state: SwarmState = SwarmState.MUTED
    ) -> None:
        """Register a swarm, or update the DOI and state of a known one."""
        if len(info_hash) != 20:
            raise ValueError("info_hash must be 20 bytes")
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            if len(self._swarms) >= self.config.max_swarms:
                raise ValueError("too many swarms registered")
            self._swarms[info_hash] = _Swarm(info_hash, doi, SwarmState.ACTIVE)
            swarm = self._swarms[info_hash]
        swarm.doi = doi
        self.set_state(info_hash, state)

    def set_state(self, info_hash: bytes, state: SwarmState) -> None:
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            raise KeyError(info_hash.hex())
        swarm.state = SwarmState(state)
        if swarm.state is SwarmState.DISABLED:
            self._drop_where(swarm, lambda p: True)
        elif swarm.state is SwarmState.MUTED:
            self._drop_where(swarm, lambda p: p.role is TrackerRole.CONSUMER)

    def unregister(self, info_hash: bytes) -> None:
        swarm = self._swarms.pop(info_hash, None)
        if swarm is not None:
            self._npeers -= len(swarm.peers)

    def state(self, info_hash: bytes) -> SwarmState | None:
        swarm = self._swarms.get(info_hash)
        return None if swarm is None else swarm.state

    @property
    def peer_count(self) -> int:
        return self._npeers

    @property
    def swarm_count(self) -> int:
        return len(self._swarms)

    def stats(self, info_hash: bytes | None = None) -> list[SwarmStats]:
        if info_hash is not None:
            swarms: Iterable[_Swarm] = (
                [self._swarms[info_hash]] if info_hash in self._swarms else []
            )
        else:
            swarms = self._swarms.values()
        return [
            SwarmStats(
                s.info_hash.hex(),
                s.doi,
                s.state,
                s.seeders,
                s.leechers,
                s.completed,
                s.uploaded_bytes,
                s.downloaded_bytes,
                s.origin_uploaded_bytes,
            )
            for s in swarms
        ]

    # -- peer table ------------------------------------------------------

    def _remove_at(self, swarm: _Swarm, pos: int) -> None:
        peers = swarm.peers
        peer = peers[pos]
        last = peers.pop()
        if last is not peer:
            peers[pos] = last
            swarm.index[last.key] = pos
        del swarm.index[peer.key]
        if peer.is_seed:
            swarm.seeders -= 1
        self._npeers -= 1

    def _drop_where(self, swarm: _Swarm, doomed: Callable[[_Peer], bool]) -> int:
        dropped = 0
        pos = 0
        while pos < len(swarm.peers):
            if doomed(swarm.peers[pos]):
                self._remove_at(swarm, pos)
                dropped += 1
            else:
                pos += 1
        return dropped

    def _sweep(self, swarm: _Swarm, now: float) -> int:
        swarm.last_sweep = now
        deadline = now - self.config.peer_expiry
        return self._drop_where(swarm, lambda p: p.last_seen < deadline)

    def expire(self, now: float) -> int:
        """Drop every peer not heard from within ``peer_expiry``."""
        return sum(self._sweep(s, now) for s in self._swarms.values() if s.peers)

    def drop_revoked(self) -> int:
        """Drop every peer whose user, token or DOI is now revoked."""
        return sum(
            self._drop_where(swarm, self._revoked_in(swarm.doi))
            for swarm in self._swarms.values()
            if swarm.peers
        )

    def _revoked_in(self, doi: str | None) -> Callable[[_Peer], bool]:
        check = self.revocations.is_revoked
        return lambda p: check(p.impu, p.token_id, doi)

    # -- announce --------------------------------------------------------

    def _fail(self, code: FailureCode, message: str) -> TrackerFailure:
        if self.on_failure is not None:
            self.on_failure(code)
        return TrackerFailure(code, message)

    def _admit(
        self, token_text: str | None, info_hash: bytes, now: float
    ) -> tuple[_Swarm, TrackerToken]:
        if token_text is None:
            raise self._fail(FailureCode.NO_TOKEN, "an entitlement token is required")
        try:
            token = self.verifier.verify_tracker(token_text, now, info_hash)
        except EntitlementError as exc:
            raise self._fail(_REASON_CODES[exc.reason], f"token refused: {exc.reason}") from None
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            raise self._fail(FailureCode.UNREGISTERED, "unregistered torrent")
        if self.revocations.is_revoked(token.impu, token.token_id, swarm.doi):
            raise self._fail(FailureCode.REVOKED, "entitlement revoked")
        if swarm.state is SwarmState.DISABLED:
            raise self._fail(FailureCode.DISABLED, "torrent disabled by the operator")
        if swarm.state is SwarmState.MUTED and token.role is TrackerRole.CONSUMER:
            raise self._fail(FailureCode.MUTED, "torrent not yet available")
        return swarm, token

    def announce(self, req: AnnounceRequest, now: float) -> bytes:
        """Handle one announce; returns the bencoded body (success or failure)."""
        try:
            return self._announce(req, now)
        except TrackerFailure as exc:
            return failure_body(exc.message)

    def _announce(self, req: AnnounceRequest, now: float) -> bytes:
        swarm, token = self._admit(req.token, req.info_hash, now)
        cfg = self.config
        if now - swarm.last_sweep >= cfg.sweep_every:
            self._sweep(swarm, now)
        packed_ip = ipaddress.ip_address(req.ip).packed
        addr = packed_ip + req.port.to_bytes(2, "big")
        key = req.peer_id + addr
        pos = swarm.index.get(key)
        peer = swarm.peers[pos] if pos is not None else None

        if req.event is AnnounceEvent.STOPPED:
            if peer is not None and pos is not None:
                self._account(swarm, peer, req)
                self._remove_at(swarm, pos)
            return self._response(swarm, None, req, 0)

        if peer is None:
            if self._npeers >= cfg.max_peers or len(swarm.peers) >= cfg.max_peers_per_swarm:
                raise self._fail(FailureCode.FULL, "tracker is full, retry later")
            peer = _Peer(key, req, token, addr, now)
            swarm.index[key] = len(swarm.peers)
            swarm.peers.append(peer)
            self._npeers += 1
            if peer.is_seed:
                swarm.seeders += 1
            if req.event is AnnounceEvent.COMPLETED:
                peer.completed = True
                swarm.completed += 1
        else:
            if peer.impu != token.impu:
                raise self._fail(FailureCode.WRONG_TOKEN, "peer id in use by another user")
            self._account(swarm, peer, req)
            was_seed = peer.is_seed
            peer.left = req.left
            if peer.is_seed != was_seed:
                swarm.seeders += 1 if peer.is_seed else -1
            peer.token_id = token.token_id
            peer.role = token.role
            peer.last_seen = now
            if req.event is AnnounceEvent.COMPLETED and not peer.completed:
                peer.completed = True
                swarm.completed += 1
        numwant = cfg.default_numwant if req.numwant is None else req.numwant
        return self._response(swarm, peer, req, min(numwant, cfg.max_numwant))

    @staticmethod
    def _account(swarm: _Swarm, peer: _Peer, req: AnnounceRequest) -> None:
        if req.uploaded > peer.uploaded:
            swarm.uploaded_bytes += req.uploaded - peer.uploaded
            if peer.role is not TrackerRole.CONSUMER:
                swarm.origin_uploaded_bytes += req.uploaded - peer.uploaded
        if req.downloaded > peer.downloaded:
            swarm.downloaded_bytes += req.downloaded - peer.downloaded
        peer.uploaded = req.uploaded
        peer.downloaded = req.downloaded

    def _pick(self, swarm: _Swarm, me: _Peer | None, numwant: int) -> list[_Peer]:
        peers = swarm.peers
        n = len(peers)
        if numwant <= 0 or n == 0:
            return []
        muted = swarm.state is SwarmState.MUTED
        seed = me is not None and me.is_seed
        chosen: list[_Peer] = []
        start = self._rng.randrange(n)
        budget = max(4 * numwant, 1000)
        for i in range(min(n, budget)):
            p = peers[(start + i) % n]
            if p is me or (seed and p.is_seed) or (muted and p.role is TrackerRole.CONSUMER):
                continue
            chosen.append(p)
            if len(chosen) >= numwant:
                break
        return chosen

    def _response(
        self, swarm: _Swarm, me: _Peer | None, req: AnnounceRequest, numwant: int
    ) -> bytes:
        chosen = self._pick(swarm, me, numwant)
        body: dict[bytes, object] = {
            b"complete": swarm.seeders,
            b"incomplete": swarm.leechers,
            b"downloaded": swarm.completed,
            b"interval": self.config.interval,
            b"min interval": self.config.min_interval,
        }
        if req.compact:
            body[b"peers"] = b"".join(p.addr for p in chosen if not p.v6)
            v6 = b"".join(p.addr for p in chosen if p.v6)
            if v6:
                body[b"peers6"] = v6
        else:
            peer_list = []
            for p in chosen:
                entry: dict[bytes, object] = {b"ip": p.ip, b"port": p.port}
                if not req.no_peer_id:
                    entry[b"peer id"] = p.peer_id
                peer_list.append(entry)
            body[b"peers"] = peer_list
        return bencode(body)

    # -- scrape ----------------------------------------------------------

    def scrape(self, req: ScrapeRequest, now: float) -> bytes:
        """BEP 48 scrape, limited to the swarm the token is for."""
        try:
            if req.token is None:
                raise self._fail(FailureCode.NO_TOKEN, "an entitlement token is required")
            try:
                token = self.verifier.verify_tracker(req.token, now)
            except EntitlementError as exc:
                raise self._fail(
                    _REASON_CODES[exc.reason], f"token refused: {exc.reason}"
                ) from None
            swarm = self._swarms.get(token.info_hash)
            if swarm is not None and self.revocations.is_revoked(
                token.impu, token.token_id, swarm.doi
            ):
                raise self._fail(FailureCode.REVOKED, "entitlement revoked")
        except TrackerFailure as exc:
            return failure_body(exc.message)
        files: dict[bytes, object] = {}
        wanted = req.info_hashes or (token.info_hash,)
        visible = swarm is not None and (
            swarm.state is SwarmState.ACTIVE
            or (swarm.state is SwarmState.MUTED and token.role is not TrackerRole.CONSUMER)
        )
        if swarm is not None and visible and token.info_hash in wanted:
            files[swarm.info_hash] = {
                b"complete": swarm.seeders,
                b"incomplete": swarm.leechers,
                b"downloaded": swarm.completed,
            }
        return bencode({b"files": files})
