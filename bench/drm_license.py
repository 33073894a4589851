"""Benchmark: licenses issued per second over HTTPS by the DRM server, with latency.

Starts the real daemon (``twistd -n imsp2p --role=drm``) on loopback with a
fresh state directory, registers one content, authorises rights for USERS
users, then runs client processes that each keep HTTPS connections alive (the
lab CA trusted) and ask for licenses: every request is a new device-signed
request with a fresh nonce; each user has DEVICES devices (the first request
of a device adds it to the grant, later ones get the consistent answer).

Prints licenses/s and p50/p99 latency. The server is one process (one core);
the clients run in the other processes. Target (the issue): at least 500
licenses/s.

    .venv/bin/python bench/drm_license.py [--seconds 10] [--clients 2] [--threads 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TARGET = 500


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(conn: http.client.HTTPSConnection, path: str, body: dict, token: str | None = None):  # type: ignore[no-untyped-def]
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("POST", path, json.dumps(body), headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def worker(args: tuple) -> tuple[int, int, list[float]]:  # type: ignore[type-arg]
    """One client process: THREADS threads asking for licenses until the deadline."""
    port, ca, jobs, threads, deadline = args
    from imsp2pd.drm.license import DeviceKeys, make_request

    context = ssl.create_default_context(cafile=ca)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def run(my_jobs: list[tuple[str, int]]) -> None:
        devices = {i: DeviceKeys.generate() for _, i in my_jobs}
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context)
        local: list[float] = []
        bad = 0
        n = 0
        while time.time() < deadline:
            token, dev = my_jobs[n % len(my_jobs)]
            n += 1
            body = {"request": make_request(devices[dev], token, os.urandom(16))}
            t0 = time.perf_counter()
            try:
                status, _ = post(conn, "/license", body)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=context)
                bad += 1
                continue
            local.append(time.perf_counter() - t0)
            if status != 200:
                bad += 1
        conn.close()
        with lock:
            latencies.extend(local)
            errors[0] += bad

    per = [jobs[i::threads] for i in range(threads)]
    ts = [threading.Thread(target=run, args=(p,)) for p in per if p]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return len(latencies), errors[0], latencies


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--clients", type=int, default=2, help="client processes")
    p.add_argument("--threads", type=int, default=4, help="connections per client process")
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--devices", type=int, default=2, help="devices per user")
    args = p.parse_args(argv)

    from imsp2pd import entitlement

    work = Path(tempfile.mkdtemp(prefix="drm-bench-"))
    (work / "etc").mkdir()
    port = free_port()
    cfg = work / "etc" / "imsp2pd.toml"
    cfg.write_text(
        '[daemon]\nstate_dir = "../var"\n[admin]\ntoken = "adm"\n'
        f'[drm]\nlisten = "127.0.0.1:{port}"\nservice_token = "svc"\n'
    )
    twistd = [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        "-l",
        str(work / "twistd.log"),
    ]
    server = subprocess.Popen(
        [
            *twistd,
            "imsp2p",
            "--role=drm",
            f"--config={cfg}",
            f"--control=tcp:{free_port()}:interface=127.0.0.1",
        ],
        cwd=work,
    )
    try:
        ca = work / "var" / "tls" / "ca.pem"
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                if ca.exists():
                    break
            except OSError:
                time.sleep(0.05)
        else:
            print("the DRM server did not start; see", work / "twistd.log")
            return 2
        issuer = entitlement.Issuer(entitlement.load_or_create_private_key(work / "var" / "keys"))
        context = ssl.create_default_context(cafile=str(ca))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context)
        now = int(time.time())
        status, content = post(
            conn,
            "/content",
            {
                "publisher_token": issuer.issue_publisher("sip:carol@ims.example.org", now + 600),
                "content_key": os.urandom(16).hex(),
            },
        )
        assert status == 201, content
        jobs: list[tuple[str, int]] = []
        for u in range(args.users):
            impu = f"sip:user{u}@ims.example.org"
            status, answer = post(
                conn,
                "/rights",
                {
                    "impu": impu,
                    "doi": content["doi"],
                    "purchase_id": f"p{u}",
                    "offer": {
                        "id": "o",
                        "rights": {"play_seconds_from_first_use": 86400},
                        "devices": args.devices,
                    },
                },
                token="svc",
            )
            assert status == 200, answer
            token = issuer.issue_license(impu, content["doi"], "o", now + 3600)
            jobs += [(token, u * args.devices + d) for d in range(args.devices)]
        conn.close()
        start = time.time() + 0.5
        deadline = start + args.seconds
        shards = [jobs[i :: args.clients] for i in range(args.clients)]
        with multiprocessing.Pool(args.clients) as pool:
            t0 = time.time()
            results = pool.map(worker, [(port, str(ca), s, args.threads, deadline) for s in shards])
            elapsed = time.time() - t0
        done = sum(r[0] for r in results)
        errors = sum(r[1] for r in results)
        latencies = sorted(x for r in results for x in r[2])
    finally:
        server.terminate()
        server.wait(10)
    rate = (done - errors) / min(elapsed, args.seconds)

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0
        )

    print(
        f"DRM licenses over HTTPS: {args.clients} client processes x {args.threads} "
        f"connections, {len(jobs)} devices, {args.seconds:.0f} s"
    )
    print(
        f"licenses issued: {done - errors} ({errors} errors)  rate: {rate:.0f}/s  "
        f"latency p50 {pct(0.50):.1f} ms  p99 {pct(0.99):.1f} ms"
    )
    print(
        f"target: >= {TARGET} licenses/s: {'met' if rate >= TARGET else 'NOT met'} "
        f"(ratio {rate / TARGET:.2f})"
    )
    if errors == 0:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("server log:", work / "twistd.log")
    return 0 if rate >= TARGET and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
