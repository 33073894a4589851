"""The tracker's view of the DRM server's revocation list (DESIGN.md §3).

:class:`RevocationSet` is a pure in-memory set of revoked users (IMPU),
token ids and DOIs, fed with revocation entries as the DRM server publishes
them (``{"kind": "impu"|"device"|"doi"|"token", "value", "time", …}``;
device entries do not concern the tracker and are skipped). It is the
:class:`~imsp2pd.bittorrent.tracker.RevocationChecker` of the tracker core,
so a check costs three set lookups.

Where entries come from is the adapter's business
(:mod:`imsp2pd.bittorrent.tracker_http`): the shared store in one process,
``GET /revocations?since=T`` on the DRM server across processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["RevocationSet"]


class RevocationSet:
    def __init__(self) -> None:
        self.impus: set[str] = set()
        self.tokens: set[str] = set()
        self.dois: set[str] = set()
        self.since = 0.0  # pass back to the source as the next ``since``

    def __len__(self) -> int:
        return len(self.impus) + len(self.tokens) + len(self.dois)

    def apply(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Add entries; returns how many were new. Malformed entries are skipped."""
        added = 0
        for entry in entries:
            if not isinstance(entry, Mapping):
                continue
            kind, value = entry.get("kind"), entry.get("value")
            if not isinstance(value, str) or not value:
                continue
            target = {"impu": self.impus, "token": self.tokens, "doi": self.dois}.get(str(kind))
            if target is None or value in target:
                continue
            target.add(value)
            added += 1
        return added

    def is_revoked(self, impu: str, token_id: str, doi: str | None) -> bool:
        return (
            impu in self.impus or token_id in self.tokens or (doi is not None and doi in self.dois)
        )
