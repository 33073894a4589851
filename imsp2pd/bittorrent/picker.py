"""Which blocks to request from which peer (pure; BEP 3 conventions).

Policy, in order, for each peer that has free request slots:

1. finish pieces already started (fewest blocks left first), so few pieces
   are partial at a time;
2. then a new piece the peer has: in **sequential** mode the lowest missing
   index (to play while downloading); otherwise **random** while fewer than
   ``random_first`` pieces are complete (to have something to trade soon),
   then **rarest first** (lowest availability among connected peers, random
   among equals);
3. **endgame**: when every missing block is already requested, blocks in
   flight from other peers are requested again (at most ``endgame_dup``
   copies); when one copy arrives, :meth:`PiecePicker.block_received` says
   which other peers to send a cancel to.

A block is ``(index, begin, length)`` with 16 KiB blocks (the last one of
the last piece shorter). Peers are identified by any hashable key (the
engine uses peer id + address:port). When a piece is complete the caller
checks its SHA-1 and reports :meth:`piece_verified` or :meth:`piece_failed`;
the latter returns the peers that sent data for it, for the ban logic.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

from imsp2pd.bittorrent.peerwire import BLOCK_SIZE

__all__ = ["Block", "BlockResult", "PiecePicker"]

Block = tuple[int, int, int]


@dataclass(slots=True)
class _Partial:
    nblocks: int
    requested: list[set[Hashable]]  # per block: peers it is in flight from
    received: bytearray  # per block: 1 when received
    remaining: int
    sources: set[Hashable] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class BlockResult:
    accepted: bool  # False: not wanted (duplicate or not requested)
    piece_complete: bool  # all blocks of the piece are in: check its hash now
    cancel: tuple[Hashable, ...] = ()  # other peers the same block was requested from


class PiecePicker:
    def __init__(
        self,
        num_pieces: int,
        piece_length: int,
        total_length: int,
        *,
        have: Sequence[int] | None = None,
        rng: random.Random | None = None,
        random_first: int = 4,
        endgame_dup: int = 2,
        sequential: bool = False,
    ) -> None:
        self.num_pieces = num_pieces
        self.piece_length = piece_length
        self.total_length = total_length
        self.have = (
            bytearray(num_pieces) if have is None else bytearray(1 if h else 0 for h in have)
        )
        if len(self.have) != num_pieces:
            raise ValueError("one have entry per piece")
        self.have_count = sum(self.have)
        self.availability = [0] * num_pieces
        self.partial: dict[int, _Partial] = {}
        self.by_peer: dict[Hashable, set[Block]] = {}
        self.rng = rng or random.Random()
        self.random_first = random_first
        self.endgame_dup = endgame_dup
        self.sequential = sequential

    # -- geometry --------------------------------------------------------

    def piece_size(self, index: int) -> int:
        if index == self.num_pieces - 1:
            return self.total_length - index * self.piece_length
        return self.piece_length

    def _blocks_in(self, index: int) -> int:
        return -(-self.piece_size(index) // BLOCK_SIZE)

    def _block(self, index: int, b: int) -> Block:
        begin = b * BLOCK_SIZE
        return index, begin, min(BLOCK_SIZE, self.piece_size(index) - begin)

    @property
    def complete(self) -> bool:
        return self.have_count == self.num_pieces

    def wanted_from(self, peer_pieces: Sequence[int]) -> bool:
        """Whether the peer has a piece we lack (are we interested?)."""
        return any(p and not h for p, h in zip(peer_pieces, self.have, strict=False))

    # -- availability ----------------------------------------------------

    def add_peer_pieces(self, peer_pieces: Iterable[int]) -> None:
        avail = self.availability
        for i, p in enumerate(peer_pieces):
            if p:
                avail[i] += 1

    def remove_peer_pieces(self, peer_pieces: Iterable[int]) -> None:
        avail = self.availability
        for i, p in enumerate(peer_pieces):
            if p and avail[i] > 0:
                avail[i] -= 1

    def add_have(self, index: int) -> None:
        self.availability[index] += 1

    # -- picking ---------------------------------------------------------

    def _start(self, index: int) -> _Partial:
        n = self._blocks_in(index)
        part = _Partial(n, [set() for _ in range(n)], bytearray(n), n)
        self.partial[index] = part
        return part

    def _take(
        self, peer: Hashable, index: int, part: _Partial, out: list[Block], count: int, dup: bool
    ) -> None:
        mine = self.by_peer.setdefault(peer, set())
        for b in range(part.nblocks):
            if len(out) >= count:
                return
            if part.received[b]:
                continue
            req = part.requested[b]
            if peer in req:
                continue
            if req and (not dup or len(req) >= self.endgame_dup):
                continue
            block = self._block(index, b)
            req.add(peer)
            mine.add(block)
            out.append(block)

    def _new_piece_order(self, peer_pieces: Sequence[int], allowed: set[int] | None) -> list[int]:
        have = self.have
        partial = self.partial
        if allowed is not None:
            candidates = [
                i
                for i in allowed
                if i < self.num_pieces and peer_pieces[i] and not have[i] and i not in partial
            ]
        else:
            candidates = [
                i for i, p in enumerate(peer_pieces) if p and not have[i] and i not in partial
            ]
        if self.sequential:
            candidates.sort()
        elif self.have_count < self.random_first:
            self.rng.shuffle(candidates)
        else:
            avail = self.availability
            self.rng.shuffle(candidates)
            candidates.sort(key=lambda i: avail[i])
        return candidates

    def pick(
        self,
        peer: Hashable,
        peer_pieces: Sequence[int],
        count: int,
        allowed: set[int] | None = None,
    ) -> list[Block]:
        """Up to *count* blocks to request from *peer* now. *allowed*
        restricts the choice to those pieces (BEP 6 allowed-fast while
        choked)."""
        out: list[Block] = []
        if count <= 0 or self.complete:
            return out
        started = [i for i in self.partial if peer_pieces[i] and (allowed is None or i in allowed)]
        if self.sequential:
            started.sort()
        else:
            started.sort(key=lambda i: self.partial[i].remaining)
        for index in started:
            self._take(peer, index, self.partial[index], out, count, dup=False)
            if len(out) >= count:
                return out
        for index in self._new_piece_order(peer_pieces, allowed):
            self._take(peer, index, self._start(index), out, count, dup=False)
            if len(out) >= count:
                return out
        if not out and self.in_endgame():
            for index in started:
                self._take(peer, index, self.partial[index], out, count, dup=True)
                if len(out) >= count:
                    break
        return out

    def in_endgame(self) -> bool:
        """True when every missing block is already requested or received."""
        missing = self.num_pieces - self.have_count
        if missing == 0 or len(self.partial) < missing:
            return False
        for part in self.partial.values():
            for b in range(part.nblocks):
                if not part.received[b] and not part.requested[b]:
                    return False
        return True

    # -- results ---------------------------------------------------------

    def _locate(self, block: Block) -> tuple[_Partial, int] | None:
        index, begin, length = block
        part = self.partial.get(index)
        if part is None or begin % BLOCK_SIZE:
            return None
        b = begin // BLOCK_SIZE
        if b >= part.nblocks or self._block(index, b) != block:
            return None
        return part, b

    def block_received(self, peer: Hashable, block: Block) -> BlockResult:
        self.by_peer.get(peer, set()).discard(block)
        found = self._locate(block)
        if found is None:
            return BlockResult(False, False)
        part, b = found
        if part.received[b]:
            part.requested[b].discard(peer)
            return BlockResult(False, False)
        others = tuple(p for p in part.requested[b] if p != peer)
        for other in others:
            self.by_peer.get(other, set()).discard(block)
        part.requested[b].clear()
        part.received[b] = 1
        part.remaining -= 1
        part.sources.add(peer)
        return BlockResult(True, part.remaining == 0, others)

    def request_dropped(self, peer: Hashable, block: Block) -> None:
        """A request will not be served (choke, reject, timeout)."""
        self.by_peer.get(peer, set()).discard(block)
        found = self._locate(block)
        if found is not None:
            found[0].requested[found[1]].discard(peer)

    def peer_gone(self, peer: Hashable, peer_pieces: Iterable[int] | None = None) -> None:
        for block in self.by_peer.pop(peer, set()):
            found = self._locate(block)
            if found is not None:
                found[0].requested[found[1]].discard(peer)
        if peer_pieces is not None:
            self.remove_peer_pieces(peer_pieces)

    def piece_verified(self, index: int) -> None:
        self.partial.pop(index, None)
        if not self.have[index]:
            self.have[index] = 1
            self.have_count += 1

    def piece_failed(self, index: int) -> set[Hashable]:
        """The piece's hash was wrong: start it over; returns who sent it."""
        part = self.partial.pop(index, None)
        if part is None:
            return set()
        for b in range(part.nblocks):
            for peer in part.requested[b]:
                self.by_peer.get(peer, set()).discard(self._block(index, b))
        return part.sources

    def outstanding(self, peer: Hashable) -> int:
        return len(self.by_peer.get(peer, ()))
