"""Choking (BEP 3 tit-for-tat) and super-seeding (BEP 16), pure.

:class:`Choker` decides every ``rechoke_every`` (10 s) which peers we upload
to: ``slots`` (4) unchoked peers, of which ``slots - 1`` are the interested
peers that gave us the most (download rate; snubbed peers last) — or, when
we are a seed, those we upload to fastest (ties: the one unchoked longest ago
first, so slots rotate among equal peers) — plus one **optimistic unchoke**,
a random interested peer outside that set, rotated every
``optimistic_every`` (30 s), newly connected peers three times as likely.

:class:`SuperSeeder` is the BEP 16 policy for an initial seed: advertise no
pieces up front, offer each peer one piece at a time (the rarest, preferring
pieces not yet offered to anyone), and offer a peer its next piece only once
another peer announces having the piece that peer was given (proof that it
passed it on), or when that peer is the only one connected. Requests for a
piece that was never offered to that peer are refused
(:meth:`SuperSeeder.may_serve`).
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

__all__ = ["ChokeDecision", "Choker", "PeerRates", "SuperSeeder"]


@dataclass(frozen=True, slots=True)
class PeerRates:
    key: Hashable
    interested: bool  # the peer is interested in us
    download_rate: float  # bytes/s we receive from it
    upload_rate: float  # bytes/s we send to it
    connected_at: float = 0.0
    snubbed: bool = False  # no block from it for a long time while unchoked


@dataclass(frozen=True, slots=True)
class ChokeDecision:
    unchoked: frozenset[Hashable]
    optimistic: Hashable | None


class Choker:
    def __init__(
        self,
        slots: int = 4,
        rechoke_every: float = 10.0,
        optimistic_every: float = 30.0,
        new_peer_window: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError("need at least one upload slot")
        self.slots = slots
        self.rechoke_every = rechoke_every
        self.optimistic_every = optimistic_every
        self.new_peer_window = new_peer_window
        self.rng = rng or random.Random()
        self.optimistic: Hashable | None = None
        self._optimistic_at = float("-inf")
        self._last = float("-inf")
        self._unchoked_at: dict[Hashable, float] = {}
        self.unchoked: frozenset[Hashable] = frozenset()

    def next_deadline(self) -> float:
        return self._last + self.rechoke_every

    def rechoke(self, now: float, peers: Sequence[PeerRates], seeding: bool) -> ChokeDecision:
        self._last = now
        present = {p.key for p in peers}
        for gone in [k for k in self._unchoked_at if k not in present]:
            del self._unchoked_at[gone]
        interested = [p for p in peers if p.interested]
        if seeding:
            ranked = sorted(
                interested,
                key=lambda p: (-p.upload_rate, self._unchoked_at.get(p.key, float("-inf"))),
            )
        else:
            ranked = sorted(interested, key=lambda p: (p.snubbed, -p.download_rate))
        regular = [p.key for p in ranked[: self.slots - 1]]
        rest = [p for p in interested if p.key not in regular]
        keep = (
            self.optimistic is not None
            and now < self._optimistic_at + self.optimistic_every
            and any(p.key == self.optimistic for p in rest)
        )
        if not keep:
            self.optimistic = self._pick_optimistic(rest, now)
            self._optimistic_at = now
        unchoked = set(regular)
        if self.optimistic is not None:
            unchoked.add(self.optimistic)
        # Fill slots left free (few interested peers) from the rest.
        for p in rest:
            if len(unchoked) >= self.slots:
                break
            unchoked.add(p.key)
        for key in unchoked - self.unchoked:
            self._unchoked_at[key] = now
        self.unchoked = frozenset(unchoked)
        return ChokeDecision(self.unchoked, self.optimistic)

    def _pick_optimistic(self, candidates: Sequence[PeerRates], now: float) -> Hashable | None:
        if not candidates:
            return None
        weights = [3 if now - p.connected_at < self.new_peer_window else 1 for p in candidates]
        return self.rng.choices(candidates, weights=weights)[0].key


class SuperSeeder:
    """BEP 16 piece offering for an initial seed."""

    def __init__(self, num_pieces: int, rng: random.Random | None = None) -> None:
        self.num_pieces = num_pieces
        self.rng = rng or random.Random()
        self.availability = [0] * num_pieces
        self.times_offered = [0] * num_pieces
        self.peer_pieces: dict[Hashable, bytearray] = {}
        self.offered: dict[Hashable, int | None] = {}  # the current offer of each peer
        self.history: dict[Hashable, set[int]] = {}

    def peer_connected(self, peer: Hashable, pieces: Sequence[int] | None = None) -> int | None:
        """Register a peer; returns the piece to advertise to it (Have)."""
        bits = (
            bytearray(self.num_pieces)
            if pieces is None
            else bytearray(1 if p else 0 for p in pieces)
        )
        self.peer_pieces[peer] = bits
        for i, b in enumerate(bits):
            if b:
                self.availability[i] += 1
        self.history[peer] = set()
        self.offered[peer] = None
        return self._offer(peer)

    def peer_gone(self, peer: Hashable) -> dict[Hashable, int]:
        """Forget a peer; returns new offers for peers that were waiting."""
        bits = self.peer_pieces.pop(peer, None)
        if bits is not None:
            for i, b in enumerate(bits):
                if b:
                    self.availability[i] -= 1
        offered = self.offered.pop(peer, None)
        if offered is not None and not self.availability[offered]:
            self.times_offered[offered] -= 1  # it never spread: no longer in flight
        self.history.pop(peer, None)
        return self._wake()

    def _wake(
        self, skip: Hashable = None, new: dict[Hashable, int] | None = None
    ) -> dict[Hashable, int]:
        new = {} if new is None else new
        for other, offered in list(self.offered.items()):
            if offered is None and other not in new and other != skip:
                nxt = self._offer(other)
                if nxt is not None:
                    new[other] = nxt
        return new

    def _offer(self, peer: Hashable) -> int | None:
        bits = self.peer_pieces[peer]
        candidates = [
            i for i in range(self.num_pieces) if not bits[i] and i not in self.history[peer]
        ]
        if not candidates:
            self.offered[peer] = None
            return None
        self.rng.shuffle(candidates)
        avail, offered = self.availability, self.times_offered
        index = min(candidates, key=lambda i: (offered[i] + avail[i], avail[i]))
        if offered[index] + avail[index] > 0 and self._in_flight():
            # Every piece is out already: wait until one spreads rather than
            # upload a piece twice (the peer trades with the others meanwhile).
            self.offered[peer] = None
            return None
        self.offered[peer] = index
        self.history[peer].add(index)
        self.times_offered[index] += 1
        return index

    def have(self, peer: Hashable, index: int) -> dict[Hashable, int]:
        """*peer* announced *index*; returns new offers: peer -> piece."""
        bits = self.peer_pieces.get(peer)
        if bits is None or not 0 <= index < self.num_pieces or bits[index]:
            return {}
        bits[index] = 1
        self.availability[index] += 1
        new: dict[Hashable, int] = {}
        # Peers whose offered piece now shows up at *another* peer go on.
        for other, offered in list(self.offered.items()):
            if offered == index and other != peer and self.peer_pieces[other][index]:
                nxt = self._offer(other)
                if nxt is not None:
                    new[other] = nxt
        # The peer completed its own offer: alone in the swarm, it may go on.
        if self.offered.get(peer) == index and (
            len(self.peer_pieces) == 1 or self._seen_elsewhere(peer, index)
        ):
            nxt = self._offer(peer)
            if nxt is not None:
                new[peer] = nxt
        # Peers left waiting may get an offer now that a piece spread.
        return self._wake(new=new)

    def _in_flight(self) -> bool:
        """Some piece was offered but nobody has announced it yet."""
        return any(o and not a for o, a in zip(self.times_offered, self.availability, strict=True))

    def _seen_elsewhere(self, peer: Hashable, index: int) -> bool:
        return any(bits[index] for other, bits in self.peer_pieces.items() if other != peer)

    def may_serve(self, peer: Hashable, index: int) -> bool:
        return index in self.history.get(peer, ())
