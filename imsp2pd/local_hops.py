"""Messages a process sends to itself, kept decoded by their bytes.

When several roles share a process (``--role=all``), what one role sends to
another still travels over a loopback socket, so every hop is on the wire and
in a capture as it would be between hosts. But the receiving role need not
decode bytes that this process encoded a moment earlier from an immutable
message: the sender leaves the message under its bytes, and the receiver,
given exactly those bytes, takes it instead of decoding them. A message that
goes anywhere else (a UE, a remote peer) is not kept, nor are bytes that
arrive without having been sent from here: those are decoded as always.

One :class:`LocalHops` per process and protocol, shared by that process's
nodes (the daemon's :class:`~imsp2pd.roles.Hub` holds them). It keeps at
most ``limit`` messages, dropping the oldest: a message is normally taken
within the reactor turn after it was sent, and one that is never taken (its
datagram lost, its connection gone) only waits to be pushed out.

With ``check`` (a decoder; the test suite sets ``IMSP2P_CHECK_LOCAL_HOPS``)
every message taken is also decoded from its bytes and compared: a
difference is counted in :attr:`mismatches` and the decoded one is used, so
the tests prove on every flow they drive that taking a message is the same
as decoding it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Generic, TypeVar

M = TypeVar("M")

#: the environment variable that turns the check on (tests)
CHECK_ENV = "IMSP2P_CHECK_LOCAL_HOPS"


class LocalHops(Generic[M]):
    def __init__(self, limit: int = 256, check: Callable[[bytes], M] | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.check = check
        #: addresses (host, port) of this process's own endpoints
        self._local: set[tuple[str, int]] = set()
        self._sent: dict[bytes, M] = {}
        self.taken = 0
        self.mismatches = 0

    def add_address(self, host: str, port: int) -> None:
        """An endpoint of this process: what is sent to it may be kept."""
        self._local.add((host, port))

    def remove_address(self, host: str, port: int) -> None:
        self._local.discard((host, port))

    def is_local(self, host: str, port: int) -> bool:
        return (host, port) in self._local

    def put(self, data: bytes, message: M, host: str, port: int) -> None:
        """``message``, encoded as ``data``, is being sent to ``(host, port)``."""
        if (host, port) not in self._local:
            return
        sent = self._sent
        if len(sent) >= self.limit and data not in sent:
            del sent[next(iter(sent))]
        sent[data] = message

    def take(self, data: bytes) -> M | None:
        """The message sent from here as ``data`` (once), or None: decode it."""
        message = self._sent.pop(data, None)
        if message is None:
            return None
        self.taken += 1
        if self.check is not None:
            try:
                decoded = self.check(data)
            except Exception:
                self.mismatches += 1
                return None  # the caller decodes it, and meets the error
            if decoded != message:
                self.mismatches += 1
                return decoded
        return message

    def __len__(self) -> int:
        return len(self._sent)


def checking(decoder: Callable[[bytes], Any]) -> Callable[[bytes], Any] | None:
    """``decoder`` when the environment asks for the check, else None."""
    return decoder if os.environ.get(CHECK_ENV) else None


def for_process(hub: Any, protocol: str, decoder: Callable[[bytes], M]) -> LocalHops[M]:
    """The process's :class:`LocalHops` for ``protocol`` ("sip", "diameter"),
    made by the first role that asks (``hub`` is the process's
    :class:`~imsp2pd.roles.Hub`); the first one made also puts their counts
    on the process's ``/metrics``."""
    every: dict[str, LocalHops[Any]] | None = hub.lookup("local_hops")
    if every is None:
        every = {}
        hub.provide("local_hops", every)
        registry = getattr(hub, "metrics", None)
        if registry is not None:
            registry.counter(
                "imsp2p_local_hops_total",
                "messages this process sent to itself, by protocol: taken without "
                "decoding (taken), and found different from their decoding (mismatch: "
                "counted only while IMSP2P_CHECK_LOCAL_HOPS is set)",
                ("protocol", "kind"),
                fn=lambda: {
                    key: float(n)
                    for proto, hops in every.items()
                    for key, n in (
                        ((proto, "taken"), hops.taken),
                        ((proto, "mismatch"), hops.mismatches),
                    )
                },
            )
    found = every.get(protocol)
    if found is None:
        found = every[protocol] = LocalHops(check=checking(decoder))
    return found
