"""Benchmark: Cx MAR+SAR and Ro CCR EVENT request/answer pairs per second over loopback TCP.

Starts the real daemon (``twistd -n imsp2p --role=hss,ocs``, one process, so
one core) with a fresh state directory, then CLIENTS client processes, each a
Diameter node with its own Origin-Host and one connection to the HSS and one
to the OCS, keeping WINDOW requests in flight for SECONDS: alternating MAR
(SIP Digest) and SAR (re-registration) for the Cx figure, then alternating
DIRECT_DEBITING and REFUND_ACCOUNT CCR EVENTs of 0.01 for the Ro figure (each
CCR a new Session-Id, so each one is a durable charging record, fsync
included). Requests are built before the clock starts. Beside them, from the
same run: how many of those messages the codec alone encodes and decodes per
second on one core (the ceiling), and the daemon's CPU use.

Target (the issue): at least 5,000 Cx request/answer pairs per second with the
HSS on one core. On a 2-core machine the clients share the second core, so
the figure is a floor for the server.

    .venv/bin/python bench/diameter_cx.py [--seconds 5] [--window 64] [--clients 2]
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
REALM = "ims.example.org"
SCSCF_URI = "sip:127.0.0.1:6060"
ALICE, ALICE_IMPU = "alice@ims.example.org", "sip:alice@ims.example.org"
#: The lab users: each client registers its own, as one S-CSCF per user would.
USERS = ("alice", "bob", "carol", "dave")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def makers(host: str, user: str = "alice") -> tuple[Any, Any, Any]:
    from imsp2pd.diameter import cx
    from imsp2pd.diameter.codes import ServerAssignmentType
    from imsp2pd.ims.ro import CURRENCIES, RequestedAction, build_ccr

    me = cx.Origin(host, REALM)
    sessions = cx.SessionIds(host, time.time())
    flip = [0]
    impi, impu = f"{user}@{REALM}", f"sip:{user}@{REALM}"

    def mar() -> Any:
        return cx.mar(me, sessions.next(), REALM, impi, impu, SCSCF_URI, cx.SCHEME_DIGEST)

    def sar() -> Any:
        return cx.sar(
            me, sessions.next(), REALM, [impu], SCSCF_URI,
            ServerAssignmentType.RE_REGISTRATION, data_available=True,
        )  # fmt: skip

    def ccr() -> Any:
        flip[0] ^= 1
        action = RequestedAction.DIRECT_DEBITING if flip[0] else RequestedAction.REFUND_ACCOUNT
        return build_ccr(
            session_id=sessions.next(), origin_host=host, origin_realm=REALM,
            destination_realm=REALM, destination_host="ocs.ims.example.org", impu=ALICE_IMPU,
            action=action, amount=Decimal("0.01"), currency=CURRENCIES["EUR"], icid="bench",
        )  # fmt: skip

    return mar, sar, ccr


def codec_ceiling(seconds: float = 1.5) -> float:
    """Messages encoded+decoded per second, round robin over requests and answers."""
    from imsp2pd.diameter.dictionary import default_dictionary
    from imsp2pd.diameter.message import answer, decode_message

    d = default_dictionary()
    messages = [m() for m in makers("bench.ims.example.org")]
    messages += [answer(m, "hss.ims.example.org", REALM) for m in messages]
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for m in messages:
            decode_message(m.encode(), d)
        n += len(messages)
    return n / (time.perf_counter() - start)


def start_daemon(workdir: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    admin, hss, ocs = free_port(), free_port(), free_port()
    etc = workdir / "etc"
    etc.mkdir()
    root = Path(__file__).resolve().parents[1]
    (etc / "subscribers.toml").write_text((root / "etc" / "subscribers.toml").read_text())
    (etc / "imsp2pd.toml").write_text(
        '[daemon]\nstate_dir = "../var"\n'
        f'[admin]\nlisten = "tcp:{admin}:interface=127.0.0.1"\nurl = "http://127.0.0.1:{admin}"\n'
        f'token = "bench"\n[ims]\ndomain = "{REALM}"\n'
        f'[hss]\nlisten = "127.0.0.1:{hss}"\n[ocs]\nlisten = "127.0.0.1:{ocs}"\n'
        f'[ocs.accounts]\n"{ALICE_IMPU}" = "1000000.00"\n'
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
                    return proc, hss, ocs
        except OSError:
            time.sleep(0.1)
    raise SystemExit("daemon did not come up")


def worker(args: argparse.Namespace) -> None:
    """One client process: READY, then the start time on stdin, the Cx and Ro phases, JSON."""
    from twisted.internet import defer, reactor, task, threads

    from imsp2pd.diameter import cx
    from imsp2pd.diameter.codes import Application, ServerAssignmentType, Vendor
    from imsp2pd.diameter.node import DiameterNode, PeerConfig
    from imsp2pd.diameter.peer import LocalConfig

    mar, sar, ccr = makers(args.name, args.user)
    node = DiameterNode(
        reactor,
        LocalConfig(
            args.name,
            REALM,
            vendor_applications=((Vendor.TGPP, Application.CX),),
            auth_applications=(Application.CREDIT_CONTROL,),
        ),
        peers=[
            PeerConfig("hss.ims.example.org", REALM, "127.0.0.1", args.hss_port),
            PeerConfig("ocs.ims.example.org", REALM, "127.0.0.1", args.ocs_port),
        ],
    )
    results: dict[str, Any] = {}
    phases = [("cx", [mar, sar]), ("ro", [ccr])]
    prepared = {
        name: [ms[k % len(ms)]() for k in range(int(args.seconds * args.per_client) + args.window)]
        for name, ms in phases
    }

    @defer.inlineCallbacks
    def load(name: str, start_at: float) -> Any:
        requests = iter(prepared[name])
        done, errors, latencies = [0], [0], []
        while time.time() < start_at:
            yield task.deferLater(reactor, min(0.01, start_at - time.time()), lambda: None)
        stop_at = time.perf_counter() + args.seconds

        @defer.inlineCallbacks
        def one_slot() -> Any:
            while time.perf_counter() < stop_at:
                req = next(requests, None)
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
        yield defer.gatherResults([one_slot() for _ in range(args.window)])
        latencies.sort()
        results[name] = {
            "done": done[0],
            "elapsed": time.perf_counter() - start,
            "errors": errors[0],
            "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else 0.0,
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
        }

    @defer.inlineCallbacks
    def run() -> Any:
        node.start()
        while not (
            node.is_available("hss.ims.example.org") and node.is_available("ocs.ims.example.org")
        ):
            yield task.deferLater(reactor, 0.05, lambda: None)
        me = cx.Origin(args.name, REALM)
        yield node.request(
            cx.sar(
                me,
                "warm;1",
                REALM,
                [f"sip:{args.user}@{REALM}"],
                SCSCF_URI,
                ServerAssignmentType.REGISTRATION,
            )  # fmt: skip
        )
        # Ready (requests built, connected): the parent answers with the common start time.
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        line = yield threads.deferToThread(sys.stdin.readline)
        start_at = float(line)
        yield load("cx", start_at)
        yield load("ro", start_at + args.seconds + 1.0)
        yield node.stop()

    def finish(result: Any) -> None:
        if hasattr(result, "printTraceback"):
            result.printTraceback()
        reactor.stop()

    reactor.callWhenRunning(lambda: run().addBoth(finish))
    reactor.run()
    print(json.dumps(results))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--window", type=int, default=64, help="requests in flight per client")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--hss-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ocs-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--per-client", type=int, default=12_000, help=argparse.SUPPRESS)
    parser.add_argument("--user", default="alice", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    with tempfile.TemporaryDirectory(prefix="bench-diameter-") as tmp:
        proc, hss_port, ocs_port = start_daemon(Path(tmp))
        try:
            clients = [
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        "--name",
                        f"bench{i}.ims.example.org",
                        "--hss-port",
                        str(hss_port),
                        "--ocs-port",
                        str(ocs_port),
                        "--seconds",
                        str(args.seconds),
                        "--window",
                        str(args.window),
                        "--per-client",
                        str(12_000 // args.clients + 1000),
                        # Its own user: two S-CSCFs re-registering one user would move
                        # the assignment back and forth (a store write per SAR).
                        "--user",
                        USERS[i % len(USERS)],
                    ],
                    stdout=subprocess.PIPE,
                    stdin=subprocess.PIPE,
                    text=True,
                )  # fmt: skip
                for i in range(args.clients)
            ]
            for c in clients:
                assert c.stdout is not None
                if c.stdout.readline().strip() != "READY":
                    raise SystemExit("a client failed to start")
            start_at = time.time() + 0.5
            for c in clients:
                assert c.stdin is not None
                c.stdin.write(f"{start_at}\n")
                c.stdin.flush()
            time.sleep(max(0.0, start_at - time.time()) + 0.2 * args.seconds)
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(0.6 * args.seconds)
            server_cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
            outputs = [json.loads(c.communicate(timeout=120)[0].splitlines()[-1]) for c in clients]
        finally:
            proc.terminate()
            proc.wait(10)

    ceiling = codec_ceiling()
    print(
        f"codec alone (encode+decode, one core): {ceiling:,.0f} messages/s"
        f" = {ceiling / 4:,.0f} request/answer pairs/s (each pair is encoded and decoded at both ends)"
    )
    rates = {}
    for name in ("cx", "ro"):
        runs = [o[name] for o in outputs]
        rate = sum(r["done"] / r["elapsed"] for r in runs)
        rates[name] = rate
        print(
            f"{name.upper()} over loopback TCP: {rate:,.0f} pairs/s ({args.clients} clients x window"
            f" {args.window}; p50 {max(r['p50_ms'] for r in runs):.2f} ms, p99"
            f" {max(r['p99_ms'] for r in runs):.2f} ms; {sum(r['errors'] for r in runs)} errors)"
        )
    print(f"daemon CPU during the Cx phase: {100 * server_cpu:.0f}% of one core")
    print(f"Cx ratio to the codec ceiling: {rates['cx'] / (ceiling / 4):.2f}")
    verdict = "met" if rates["cx"] >= TARGET_CX else "NOT met"
    print(f"Cx target {TARGET_CX:,} pairs/s: {verdict} ({rates['cx'] / TARGET_CX:.2f}x)")


if __name__ == "__main__":
    main()
