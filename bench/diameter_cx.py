"""Benchmark: Cx MAR+SAR and Ro CCR EVENT request/answer pairs per second over loopback TCP.

Starts the real daemon (``twistd -n imsp2p --role=hss,ocs``) in another
process with a fresh state directory, connects one client Diameter node (this
process) to the HSS and the OCS, and keeps WINDOW requests in flight for
SECONDS each: alternating MAR (SIP Digest) and SAR (re-registration) for the
Cx figure; alternating DIRECT_DEBITING and REFUND_ACCOUNT CCR EVENTs of 0.01
for the Ro figure (every CCR is a new Session-Id, so each one is a durable
charging record). Beside them, from the same run, how many of those messages
the codec alone encodes and decodes per second on one core (the ceiling).

Target (the issue): at least 5,000 Cx request/answer pairs per second with the
HSS on one core.

    .venv/bin/python bench/diameter_cx.py [--seconds 5] [--window 64]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

TARGET_CX = 5000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def codec_ceiling(messages: list[Any], seconds: float = 1.5) -> float:
    """Messages encoded+decoded per second, round robin over ``messages``."""
    from imsp2pd.diameter.dictionary import default_dictionary
    from imsp2pd.diameter.message import decode_message

    d = default_dictionary()
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for m in messages:
            decode_message(m.encode(), d)
        n += len(messages)
    return n / (time.perf_counter() - start)


def start_daemon(workdir: Path) -> tuple[subprocess.Popen[bytes], int, int, int]:
    admin, hss, ocs = free_port(), free_port(), free_port()
    etc = workdir / "etc"
    etc.mkdir()
    root = Path(__file__).resolve().parents[1]
    (etc / "subscribers.toml").write_text((root / "etc" / "subscribers.toml").read_text())
    (etc / "imsp2pd.toml").write_text(
        '[daemon]\nstate_dir = "../var"\n'
        f'[admin]\nlisten = "tcp:{admin}:interface=127.0.0.1"\nurl = "http://127.0.0.1:{admin}"\n'
        'token = "bench"\n[ims]\ndomain = "ims.example.org"\n'
        f'[hss]\nlisten = "127.0.0.1:{hss}"\n[ocs]\nlisten = "127.0.0.1:{ocs}"\n'
        '[ocs.accounts]\n"sip:alice@ims.example.org" = "1000000.00"\n'
    )
    env = dict(os.environ, IMSP2P_CONFIG=str(etc / "imsp2pd.toml"))
    twistd = Path(sys.executable).parent / "twistd"
    proc = subprocess.Popen(
        [str(twistd), "-n", "--pidfile=", "imsp2p", "--role=hss,ocs"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/health", timeout=2) as r:
                if json.loads(r.read())["status"] == "ok":
                    return proc, hss, ocs, admin
        except OSError:
            time.sleep(0.1)
    raise SystemExit("daemon did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--window", type=int, default=64)
    args = parser.parse_args()

    from twisted.internet import defer, reactor, task

    from imsp2pd.diameter import cx
    from imsp2pd.diameter.codes import Application, ServerAssignmentType, Vendor
    from imsp2pd.diameter.node import DiameterNode, PeerConfig
    from imsp2pd.diameter.peer import LocalConfig
    from imsp2pd.ims.ro import CURRENCIES, RequestedAction, build_ccr

    realm = "ims.example.org"
    me = cx.Origin("bench.ims.example.org", realm)
    scscf_uri = "sip:127.0.0.1:6060"
    alice, alice_impu = "alice@ims.example.org", "sip:alice@ims.example.org"
    sessions = cx.SessionIds(me.host, time.time())

    def make_mar() -> Any:
        return cx.mar(me, sessions.next(), realm, alice, alice_impu, scscf_uri, cx.SCHEME_DIGEST)

    def make_sar() -> Any:
        return cx.sar(
            me, sessions.next(), realm, [alice_impu], scscf_uri, ServerAssignmentType.RE_REGISTRATION,
            data_available=True,
        )  # fmt: skip

    flip = [0]

    def make_ccr() -> Any:
        flip[0] ^= 1
        action = RequestedAction.DIRECT_DEBITING if flip[0] else RequestedAction.REFUND_ACCOUNT
        return build_ccr(
            session_id=sessions.next(), origin_host=me.host, origin_realm=realm,
            destination_realm=realm, destination_host="ocs.ims.example.org", impu=alice_impu,
            action=action, amount=Decimal("0.01"), currency=CURRENCIES["EUR"], icid="bench",
        )  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="bench-diameter-") as tmp:
        proc, hss_port, ocs_port, _ = start_daemon(Path(tmp))
        try:
            node = DiameterNode(
                reactor,
                LocalConfig(
                    me.host,
                    realm,
                    vendor_applications=((Vendor.TGPP, Application.CX),),
                    auth_applications=(Application.CREDIT_CONTROL,),
                ),
                peers=[
                    PeerConfig("hss.ims.example.org", realm, "127.0.0.1", hss_port),
                    PeerConfig("ocs.ims.example.org", realm, "127.0.0.1", ocs_port),
                ],
            )
            results: dict[str, Any] = {}

            @defer.inlineCallbacks
            def load(name: str, makers: list[Any], seconds: float) -> Any:
                done = [0]
                errors = [0]
                latencies: list[float] = []
                # Built beforehand: making requests is the client's cost, not the server's.
                count = int(seconds * 12_000) + args.window
                prepared = iter([makers[k % len(makers)]() for k in range(count)])
                stop_at = time.perf_counter() + seconds

                @defer.inlineCallbacks
                def worker() -> Any:
                    while time.perf_counter() < stop_at:
                        req = next(prepared, None)
                        if req is None:
                            break
                        t0 = time.perf_counter()
                        try:
                            ans = yield node.request(req, timeout=10.0)
                            if cx.outcome(ans).success:
                                done[0] += 1
                                latencies.append(time.perf_counter() - t0)
                            else:
                                errors[0] += 1
                        except Exception:
                            errors[0] += 1

                start = time.perf_counter()
                yield defer.gatherResults([worker() for _ in range(args.window)])
                elapsed = time.perf_counter() - start
                latencies.sort()
                results[name] = {
                    "pairs_per_s": done[0] / elapsed,
                    "errors": errors[0],
                    "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
                    "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
                }

            @defer.inlineCallbacks
            def run() -> Any:
                node.start()
                while not (
                    node.is_available("hss.ims.example.org")
                    and node.is_available("ocs.ims.example.org")
                ):
                    yield task.deferLater(reactor, 0.05, lambda: None)
                # Register once, then warm up.
                yield node.request(
                    cx.sar(
                        me,
                        sessions.next(),
                        realm,
                        [alice_impu],
                        scscf_uri,
                        ServerAssignmentType.REGISTRATION,
                    )
                )
                yield load("warmup", [make_mar, make_sar], 1.0)
                yield load("cx", [make_mar, make_sar], args.seconds)
                yield load("ro", [make_ccr], args.seconds)
                yield node.stop()

            def finish(result: Any) -> None:
                if hasattr(result, "printTraceback"):
                    result.printTraceback()
                reactor.stop()

            reactor.callWhenRunning(lambda: run().addBoth(finish))
            reactor.run()
        finally:
            proc.terminate()
            proc.wait(10)

    samples = [make_mar(), make_sar(), make_ccr()]
    from imsp2pd.diameter.message import answer

    samples += [answer(m, "hss.ims.example.org", realm) for m in samples]
    ceiling = codec_ceiling(samples)
    cx_rate = results["cx"]["pairs_per_s"]
    print(f"codec alone (encode+decode, one core): {ceiling:,.0f} messages/s"
          f" = {ceiling / 4:,.0f} request/answer pairs/s (each pair is encoded and decoded at both ends)")  # fmt: skip
    for name in ("cx", "ro"):
        r = results[name]
        print(
            f"{name.upper()} over loopback TCP: {r['pairs_per_s']:,.0f} pairs/s"
            f" (window {args.window}, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms,"
            f" {r['errors']} errors)"
        )
    print(f"Cx ratio to the codec ceiling: {cx_rate / (ceiling / 4):.2f}")
    print(
        f"Cx target {TARGET_CX:,} pairs/s: {'met' if cx_rate >= TARGET_CX else 'NOT met'} ({cx_rate / TARGET_CX:.2f}x)"
    )


if __name__ == "__main__":
    main()
