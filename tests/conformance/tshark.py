"""tshark (Debian package ``tshark``) for the conformance tests, in one place.

* :data:`TSHARK` (None when not installed) and :data:`MISSING`, the reason
  a test skips without it;
* :func:`decode_as`: the ``-d`` options that decode ports as a protocol;
* :data:`PROBLEMS`: the display filter for a malformed packet or an expert
  warning or error; :func:`problems` lists what it matches and
  :func:`assert_clean` fails with the detail (``-V``) when anything does;
* :func:`fields`: ``-T fields`` output, one line a packet;
* :func:`run`: any other reading of a capture;
* :func:`problems_async`, :func:`fields_async`, :func:`run_async`: the
  same from a test that runs in the reactor (trial), without blocking it;
* :class:`LiveCapture`: ``tshark -i lo`` writing a pcap of some ports.

Every reading runs ``tshark -n -r PCAP``; tshark failing (a non-zero exit)
fails the test with its standard error.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.utils import getProcessOutputAndValue

TSHARK = shutil.which("tshark")
MISSING = "tshark is not installed (Debian package tshark)"
PROBLEMS = "_ws.malformed || _ws.expert.severity >= warning"


class TsharkFailed(AssertionError):
    """tshark exited with an error (a test failure, not an error of the test)."""


def decode_as(ports: Iterable[int], proto: str, transports: Sequence[str] = ("udp",)) -> list[str]:
    """``-d udp.port==P,proto`` (for each transport) for every port."""
    return [a for p in ports for t in transports for a in ("-d", f"{t}.port=={p},{proto}")]


def _argv(pcap: Path, decode: Sequence[str], args: Sequence[str]) -> list[str]:
    if TSHARK is None:
        raise TsharkFailed(MISSING)
    return [TSHARK, "-n", "-r", str(pcap), *decode, *args]


def _fields_args(names: Sequence[str], display_filter: str | None) -> list[str]:
    args = ["-Y", display_filter] if display_filter else []
    args += ["-T", "fields"]
    for name in names:
        args += ["-e", name]
    return args


# Blocking -------------------------------------------------------------------------


def run(pcap: Path, decode: Sequence[str], *args: str, timeout: float = 120) -> str:
    """``tshark -n -r PCAP DECODE ARGS``: its standard output."""
    r = subprocess.run(_argv(pcap, decode, args), capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise TsharkFailed(f"tshark exited {r.returncode}: {r.stderr[-2000:]}")
    return r.stdout


def problems(pcap: Path, decode: Sequence[str], timeout: float = 120) -> str:
    """The packets tshark finds malformed or warns about, one line each ('' for none)."""
    return run(pcap, decode, "-Y", PROBLEMS, timeout=timeout).strip()


def assert_clean(pcap: Path, decode: Sequence[str], timeout: float = 120) -> None:
    """Fail, with tshark's detail of the packets, if any is malformed or warned about."""
    flagged = problems(pcap, decode, timeout)
    if flagged:
        detail = run(pcap, decode, "-Y", PROBLEMS, "-V", timeout=timeout)
        raise AssertionError(f"tshark flagged:\n{flagged}\n{detail[-4000:]}")


def fields(
    pcap: Path,
    decode: Sequence[str],
    *names: str,
    display_filter: str | None = None,
    timeout: float = 120,
) -> str:
    """``-T fields -e NAME...`` (of the packets ``display_filter`` matches)."""
    return run(pcap, decode, *_fields_args(names, display_filter), timeout=timeout)


# In the reactor ----------------------------------------------------------------------


def run_async(pcap: Path, decode: Sequence[str], *args: str) -> defer.Deferred[str]:
    """:func:`run` as a process of the reactor."""
    argv = _argv(pcap, decode, args)

    def done(result: tuple[bytes, bytes, int]) -> str:
        out, err, code = result
        if code != 0:
            raise TsharkFailed(f"tshark exited {code}: {err.decode(errors='replace')[-2000:]}")
        return out.decode()

    d: defer.Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
        argv[0], argv[1:], env=os.environ.copy()
    )
    return d.addCallback(done)


def problems_async(pcap: Path, decode: Sequence[str]) -> defer.Deferred[str]:
    """:func:`problems` as a process of the reactor."""
    return run_async(pcap, decode, "-Y", PROBLEMS).addCallback(str.strip)


def fields_async(
    pcap: Path, decode: Sequence[str], *names: str, display_filter: str | None = None
) -> defer.Deferred[str]:
    """:func:`fields` as a process of the reactor."""
    return run_async(pcap, decode, *_fields_args(names, display_filter))


class LiveCapture(protocol.ProcessProtocol):
    """``tshark -i lo -f "port A or port B" -w PCAP`` as a process of the reactor.

    :meth:`start` fires once tshark says it is capturing; :meth:`stop`
    (SIGTERM) fires when it has ended, its pcap complete.
    """

    def __init__(self) -> None:
        self.started: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.err = b""
        self._process: Any = None

    def start(self, pcap: Path, ports: Iterable[int]) -> defer.Deferred[None]:
        from twisted.internet import reactor

        if TSHARK is None:
            raise TsharkFailed(MISSING)
        flt = " or ".join(f"port {p}" for p in ports)
        spawn: Any = reactor.spawnProcess  # type: ignore[attr-defined,unused-ignore]
        self._process = spawn(
            self, TSHARK, [TSHARK, "-i", "lo", "-f", flt, "-w", str(pcap)], env=os.environ.copy()
        )
        return self.started

    def stop(self) -> defer.Deferred[None]:
        if self._process is not None and not self.ended.called:
            self._process.signalProcess(signal.SIGTERM)
        return self.ended

    def errReceived(self, data: bytes) -> None:
        self.err += data
        if b"Capturing on" in self.err and not self.started.called:
            self.started.callback(None)

    def processEnded(self, reason: Any) -> None:
        if not self.started.called:
            self.started.errback(RuntimeError(self.err.decode(errors="replace")))
        self.ended.callback(None)


__all__ = [
    "MISSING",
    "PROBLEMS",
    "TSHARK",
    "LiveCapture",
    "TsharkFailed",
    "assert_clean",
    "decode_as",
    "fields",
    "fields_async",
    "problems",
    "problems_async",
    "run",
    "run_async",
]
