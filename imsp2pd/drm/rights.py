"""The rights model: what an offer lets a buyer do, and whether a play is allowed now.

An offer's ``rights`` (DESIGN.md §3) is a JSON object with one or more of:

``play_seconds_from_first_use``
    a positive integer: playing is allowed for that many seconds from the
    first use. The first use is the first license the DRM server issues for
    the grant (content cannot be played before a license exists), so the
    server and every device agree on it and a device cannot restart the clock.
``play_until``
    an absolute end: Unix seconds (integer) or an RFC 3339 date-time text
    (``2027-01-01T00:00:00Z``); normalised to Unix seconds.
``plays``
    a positive integer: how many times the content may be played (counted by
    the player, per license).

Beside them the offer says ``devices``, how many distinct devices may get a
license for the grant (a positive integer, default 1). All limits given are
enforced together. Everything here is pure; ``now`` is always an argument.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

__all__ = [
    "MAX_DEVICES",
    "PlayRefused",
    "RefusalReason",
    "Rights",
    "RightsError",
    "Usage",
    "parse_time",
]

MAX_DEVICES = 100
MAX_PLAYS = 1_000_000
MAX_SECONDS = 100 * 365 * 24 * 3600
_KEYS = ("play_seconds_from_first_use", "play_until", "plays")


class RightsError(ValueError):
    """Rights (or an offer) that are not well formed; one line of text."""


class RefusalReason(enum.StrEnum):
    EXPIRED = "expired"
    PLAYS_EXHAUSTED = "plays-exhausted"


class PlayRefused(Exception):
    """A play is not allowed by the rights; ``reason`` says why."""

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _positive_int(name: str, value: Any, limit: int) -> int:
    if type(value) is not int or not 0 < value <= limit:
        raise RightsError(f"{name} must be an integer from 1 to {limit}")
    return value


def parse_time(value: Any, name: str = "play_until") -> int:
    """Unix seconds from an integer or an RFC 3339 date-time with a zone."""
    if type(value) is int:
        if not 0 <= value <= 2**53 - 1:
            raise RightsError(f"{name} is out of range")
        return value
    if isinstance(value, str) and 0 < len(value) <= 64:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if when.tzinfo is not None and "T" in text.upper():
                return int(when.timestamp())
    raise RightsError(f"{name} must be Unix seconds or an RFC 3339 date-time with a time zone")


@dataclass(frozen=True, slots=True)
class Rights:
    """The rights of one grant. ``None`` means no limit of that kind."""

    play_seconds_from_first_use: int | None = None
    play_until: int | None = None
    plays: int | None = None
    devices: int = 1

    def __post_init__(self) -> None:
        if (
            self.play_seconds_from_first_use is None
            and self.play_until is None
            and (self.plays is None)
        ):
            raise RightsError("rights need play_seconds_from_first_use, play_until or plays")
        if self.play_seconds_from_first_use is not None:
            _positive_int(
                "play_seconds_from_first_use", self.play_seconds_from_first_use, MAX_SECONDS
            )
        if self.play_until is not None:
            parse_time(self.play_until)
        if self.plays is not None:
            _positive_int("plays", self.plays, MAX_PLAYS)
        _positive_int("devices", self.devices, MAX_DEVICES)

    @classmethod
    def from_json(cls, rights: Any, devices: Any = 1) -> Rights:
        """From an offer's ``rights`` object and its ``devices`` value."""
        if not isinstance(rights, dict):
            raise RightsError("rights must be a JSON object")
        unknown = sorted(set(rights) - set(_KEYS))
        if unknown:
            raise RightsError(f"unknown rights {unknown}")
        until = rights.get("play_until")
        return cls(
            play_seconds_from_first_use=rights.get("play_seconds_from_first_use"),
            play_until=None if until is None else parse_time(until),
            plays=rights.get("plays"),
            devices=devices,
        )

    @classmethod
    def from_offer(cls, offer: Any) -> Rights:
        if not isinstance(offer, dict):
            raise RightsError("an offer must be a JSON object")
        return cls.from_json(offer.get("rights"), offer.get("devices", 1))

    def to_json(self) -> dict[str, int]:
        """The rights object (without ``devices``), play_until as Unix seconds."""
        out: dict[str, int] = {}
        if self.play_seconds_from_first_use is not None:
            out["play_seconds_from_first_use"] = self.play_seconds_from_first_use
        if self.play_until is not None:
            out["play_until"] = self.play_until
        if self.plays is not None:
            out["plays"] = self.plays
        return out

    def not_after(self, first_use: int) -> int | None:
        """The last second of the play window for a grant first used at ``first_use``."""
        ends = []
        if self.play_seconds_from_first_use is not None:
            ends.append(first_use + self.play_seconds_from_first_use)
        if self.play_until is not None:
            ends.append(self.play_until)
        return min(ends) if ends else None

    def expired(self, first_use: int | None, now: float) -> bool:
        """Has the play window closed at ``now``? (Plays are the player's count.)"""
        end = self.not_after(int(now) if first_use is None else first_use)
        return end is not None and now > end


@dataclass(frozen=True, slots=True)
class Usage:
    """What a player has used of one license."""

    plays_used: int = 0

    def check(self, rights: Rights, not_after: int | None, now: float) -> None:
        """Raise :class:`PlayRefused` unless one more play is allowed at ``now``."""
        if not_after is not None and now > not_after:
            raise PlayRefused(RefusalReason.EXPIRED, f"the rights ended at {not_after}")
        if rights.plays is not None and self.plays_used >= rights.plays:
            raise PlayRefused(
                RefusalReason.PLAYS_EXHAUSTED, f"all {rights.plays} plays have been used"
            )

    def consume(self, rights: Rights, not_after: int | None, now: float) -> Usage:
        """Check, then count one play."""
        self.check(rights, not_after, now)
        return replace(self, plays_used=self.plays_used + 1)
