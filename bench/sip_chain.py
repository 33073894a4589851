"""Benchmark: authenticated registrations and MESSAGE transactions through
P-CSCF → I-CSCF/S-CSCF (with the HSS over Diameter) on loopback, beside
sipp's own ceiling (sipp UAC → sipp UAS) and a stateful Kamailio relay, all
measured in the same run.

Starts the daemon (``twistd -n imsp2p --role=hss,pcscf,icscf,scscf``) in
another process with N provisioned users, then:

1. registrations/s: sipp registers the N users (REGISTER → 401 → REGISTER
   with MD5 digest → 200, with MAR and SAR at the HSS each time);
2. MESSAGE/s: one registered UE (sipp) sends MESSAGEs to the content PSI;
   the S-CSCF's iFC routes them to a sipp UAS standing in for the AS;
3. the same MESSAGE load from sipp straight to the sipp UAS, and through
   Kamailio (``t_relay``) when the Debian package is installed.

Each MESSAGE figure is the calls per second sipp completed at the highest
offered rate with zero failed calls (the rate starts at ``--rate`` and is
raised by a quarter while runs pass, with a pause between runs so that one
run's backlog does not fail the next), and the p99 response time sipp
measured; a figure whose last offered rate still passed is a lower bound.
Registrations cost two SIP round trips through three proxies, four Cx round
trips and the durable writes (the store commits concurrent transactions
together), all in the one daemon process, and the third-party REGISTER the
S-CSCF then sends to the AS (a sipp UAS answers those during that phase).
Every hop between the daemon's roles crosses a loopback socket, as between
hosts; the receiving role takes the message its sender left under those
bytes instead of decoding them again (imsp2pd/local_hops.py), and the bench
prints how many hops went so.

The daemon (every thread of it) and Kamailio each run on one core; sipp
runs on the others.  Targets (the issue): 2,000 MESSAGE/s through the
chain, 500 authenticated registrations/s, with the daemon on one core.

    .venv/bin/python bench/sip_chain.py [--users 1000] [--seconds 5] [--rate 600]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

TARGET_MESSAGE = 2000
TARGET_REGISTER = 500
BIN = Path(sys.executable).parent
SIPP = shutil.which("sipp")
KAMAILIO = shutil.which("kamailio")

REGISTER_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:ims.example.org SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field0]@ims.example.org>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field0]@ims.example.org>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: 3600
      Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:ims.example.org SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field0]@ims.example.org>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field0]@ims.example.org>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      [field1]
      Max-Forwards: 70
      Expires: 3600
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""

MESSAGE_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="message">
  <send retrans="500" start_rtd="true">
    <![CDATA[
      MESSAGE sip:content@ims.example.org SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:user0@ims.example.org>;tag=[pid]SIPpTag00[call_number]
      To: <sip:content@ims.example.org>
      Call-ID: [call_id]
      CSeq: 1 MESSAGE
      Max-Forwards: 70
      Content-Type: application/vnd.imsp2p.purchase+json
      Content-Length: [len]

      {"purchase_id": "[call_id]", "doi": "10.5555/bench", "offer": "o1"}
    ]]>
  </send>
  <recv response="200" rtd="true"/>
</scenario>
"""

UAS_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="as">
  <recv request="MESSAGE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""

KAMAILIO_CFG = """#!KAMAILIO
listen=udp:127.0.0.1:{port}
children=1
log_stderror=yes
debug=0
mpath="{mpath}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "maxfwd.so"
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    $du = "sip:127.0.0.1:{target}";
    if (!t_relay()) {{ sl_reply_error(); }}
    exit;
}}
"""


CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
#: the system under test (our daemon, or Kamailio) on one core, the load
#: generators (sipp) on the others, so that neither steals the other's CPU
SUT_CORES = set(CORES[:1])
LOAD_CORES = set(CORES[1:]) or SUT_CORES


def pinned(cores: set[int]) -> Any:
    """A preexec_fn putting the child (and every thread it makes) on ``cores``."""

    def pin() -> None:
        if cores:
            os.sched_setaffinity(0, cores)

    return pin


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


#: sipp's socket buffers (its default is 64 KiB, which drops responses the
#: daemon sends back to back after a busy reactor turn: one sipp stands for
#: every UE): as large as the daemon's own, for every sipp of every path
SIPP_BUFFER = str(4 << 20)


def sipp(
    workdir: Path, scenario: str, target: str, *extra: str, timeout: float = 60
) -> tuple[float, int, int, list[float]]:
    """Run sipp; (elapsed seconds, successful, failed, response times in ms)."""
    xml = workdir / scenario
    if "-p" not in extra:  # never sipp's default 5060, which a lab may be using
        extra = ("-p", str(free_port()), *extra)
    for f in workdir.glob("*_rtt.csv"):
        f.unlink()
    start = time.perf_counter()
    proc = subprocess.run(
        [SIPP or "sipp", "-sf", str(xml), "-i", "127.0.0.1", "-nostdin", "-timeout", str(int(timeout)),
         "-buff_size", SIPP_BUFFER,
         "-recv_timeout", "4000", "-default_behaviors", "all,-bye",
         "-trace_stat", "-stf", str(workdir / "stat.csv"), "-trace_rtt", "-rtt_freq", "1",
         *extra, target],
        cwd=workdir, capture_output=True, timeout=timeout + 30, preexec_fn=pinned(LOAD_CORES),
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    ok = failed = 0
    for line in proc.stdout.decode(errors="replace").splitlines():
        cells = [c.strip() for c in line.split("|")]
        if cells and cells[0] == "Successful call":
            ok = int(cells[-1])
        if cells and cells[0] == "Failed call":
            failed = int(cells[-1])
    rtts: list[float] = []
    for f in workdir.glob("*_rtt.csv"):
        for row in f.read_text().splitlines()[1:]:
            parts = row.split(";")  # date_ms;response_time_ms;rtd_no
            if len(parts) >= 2:
                try:
                    rtts.append(float(parts[1]))
                except ValueError:
                    pass
    return elapsed, ok, failed, rtts


def uas(work: Path, scenario: str, port: int) -> subprocess.Popen[bytes]:
    """A sipp UAS on ``port`` (the AS, or the target of the direct and
    Kamailio runs), in the foreground of its own process, on the load cores."""
    return subprocess.Popen(
        [SIPP or "sipp", "-sf", str(work / scenario), "-i", "127.0.0.1", "-p", str(port), "-nostdin",
         "-buff_size", SIPP_BUFFER],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=pinned(LOAD_CORES),
    )  # fmt: skip


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(0.99 * len(values)))]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def message_run(
    workdir: Path, target: str, rate: int, seconds: float, *extra: str
) -> dict[str, Any]:
    calls = int(rate * seconds)
    elapsed, ok, failed, rtts = sipp(
        workdir,
        "message.xml",
        target,
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-l",
        "2000",
        *extra,
        timeout=seconds + 20,
    )
    result = {
        "offered": rate,
        "calls": ok,
        "failed": failed,
        "per_s": ok / elapsed,
        "p99_ms": p99(rtts),
    }
    print(
        f"  {target}: offered {rate}/s, {ok} done at {result['per_s']:.0f}/s, {failed} failed,"
        f" p99 {result['p99_ms']} ms",
        file=sys.stderr,
    )
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=int, default=600, help="first offered MESSAGE rate")
    ap.add_argument("--reg-rate", type=int, default=1500, help="offered REGISTER rate")
    args = ap.parse_args()
    if SIPP is None:
        print("sipp is not installed (Debian package sip-tester)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-sip-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        return run(args, work, procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(work, ignore_errors=True)


def run(args: Any, work: Path, procs: list[subprocess.Popen[bytes]]) -> int:
    admin, cx, pport, iport, sport, as_port, direct_as, kam = (free_port() for _ in range(8))
    (work / "etc").mkdir()
    users = [f"user{i}" for i in range(args.users)]
    subs = [
        f'[[psi]]\nidentity = "sip:content@ims.example.org"\napplication_server = "sip:127.0.0.1:{as_port}"\n'
    ]
    for u in users:
        subs.append(
            f'[[subscriber]]\nimpi = "{u}@ims.example.org"\nimpus = ["sip:{u}@ims.example.org"]\npassword = "pw-{u}"\n'
        )
    write(work / "etc" / "subscribers.toml", "\n".join(subs))
    config = write(
        work / "etc" / "imsp2pd.toml",
        '[daemon]\nstate_dir = "../var"\n'
        f'[admin]\nlisten = "tcp:{admin}:interface=127.0.0.1"\nurl = "http://127.0.0.1:{admin}"\ntoken = "t"\n'
        '[ims]\ndomain = "ims.example.org"\n'
        f'[hss]\nlisten = "127.0.0.1:{cx}"\nscscf_names = ["sip:127.0.0.1:{sport}"]\n'
        f'[pcscf]\nlisten = "127.0.0.1:{pport}"\ntls_listen = ""\nicscf = "127.0.0.1:{iport}"\n'
        f'[icscf]\nlisten = "127.0.0.1:{iport}"\nhss = "127.0.0.1:{cx}"\n'
        f'[scscf]\nlisten = "127.0.0.1:{sport}"\nhss = "127.0.0.1:{cx}"\nicscf = "127.0.0.1:{iport}"\nas_transport = "udp"\n',
    )
    env = dict(os.environ, IMSP2P_CONFIG=str(config))
    daemon = subprocess.Popen(
        [str(BIN / "twistd"), "-n", "--pidfile=", "imsp2p", "--role=hss,pcscf,icscf,scscf"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=pinned(SUT_CORES),
    )  # fmt: skip
    procs.append(daemon)
    deadline = time.monotonic() + 60
    while True:
        if daemon.poll() is not None or time.monotonic() > deadline:
            print(
                "daemon did not start:",
                (daemon.stderr.read() if daemon.stderr else b"").decode()[-2000:],
            )
            return 1
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/health", timeout=2) as r:
                health = json.loads(r.read())
                if all(c.get("ok") for c in health.get("checks", {}).values()):
                    break
        except OSError:
            pass
        time.sleep(0.2)
    write(work / "register.xml", REGISTER_XML)
    write(work / "message.xml", MESSAGE_XML)
    write(work / "as.xml", UAS_XML)
    write(work / "as_register.xml", UAS_XML.replace('request="MESSAGE"', 'request="REGISTER"'))
    # every subscriber's iFCs send a third-party REGISTER to the AS after
    # each registration (TS 24.229 §5.4.1.7): an AS that answers them, as in
    # the lab (one that did not would leave 2,000 client transactions
    # retransmitting for 32 s into the MESSAGE runs)
    as_register = uas(work, "as_register.xml", as_port)
    procs.append(as_register)
    time.sleep(0.5)
    # sipp expands an [authentication] keyword given whole in an injection field
    auth = "[authentication username={0}@ims.example.org password=pw-{0}]"
    write(work / "users.csv", "SEQUENTIAL\n" + "".join(f"{u};{auth.format(u)}\n" for u in users))

    # 1. authenticated registrations
    elapsed, ok, failed, _ = sipp(
        work, "register.xml", f"127.0.0.1:{pport}",
        "-inf", str(work / "users.csv"), "-m", str(len(users)), "-r", str(args.reg_rate), "-l", "100",
        "-auth_uri", "ims.example.org", "-trace_err",
    )  # fmt: skip
    reg_rate = ok / elapsed
    if failed:
        for f in work.glob("*errors.log"):
            print(f.read_text(errors="replace")[-1500:], file=sys.stderr)

    # 2. MESSAGE through the chain to a sipp AS; the UE registers first from its port
    ue_port = free_port()
    write(work / "one.csv", f"SEQUENTIAL\nuser0;{auth.format('user0')}\n")
    sipp(
        work,
        "register.xml",
        f"127.0.0.1:{pport}",
        "-inf",
        str(work / "one.csv"),
        "-m",
        "1",
        "-p",
        str(ue_port),
        "-auth_uri",
        "ims.example.org",
    )
    time.sleep(1.0)  # the last third-party REGISTERs answered
    as_register.terminate()
    as_register.wait(10)
    as_message = uas(work, "as.xml", as_port)
    procs.append(as_message)
    direct = uas(work, "as.xml", direct_as)
    procs.append(direct)
    time.sleep(0.5)
    chain = best_zero_failure(
        work, f"127.0.0.1:{pport}", args.rate, args.seconds, "-p", str(ue_port)
    )
    hops = local_hops(admin)
    ceiling = best_zero_failure(work, f"127.0.0.1:{direct_as}", args.rate * 2, args.seconds)
    kamailio = None
    if KAMAILIO:
        mpath = next(
            (str(p) for p in Path("/usr/lib").glob("*/kamailio/modules") if p.is_dir()),
            "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        )
        cfg = write(
            work / "kamailio.cfg", KAMAILIO_CFG.format(port=kam, target=direct_as, mpath=mpath)
        )
        kp = subprocess.Popen(
            [KAMAILIO, "-f", str(cfg), "-DD", "-E", "-m", "512", "-w", str(work), "-P", str(work / "kam.pid")],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=pinned(SUT_CORES),
        )  # fmt: skip
        procs.append(kp)
        time.sleep(1.0)
        if kp.poll() is None:
            kamailio = best_zero_failure(work, f"127.0.0.1:{kam}", args.rate * 2, args.seconds)
        else:
            print(
                "kamailio did not start:", (kp.stderr.read() if kp.stderr else b"").decode()[-500:]
            )

    print(
        "hops between the daemon's roles taken as sent, not decoded again (each still "
        f"crossed a loopback socket): SIP {hops.get('sip', 0):,.0f}, "
        f"Diameter {hops.get('diameter', 0):,.0f}"
    )
    print(
        f"authenticated registrations: {reg_rate:8.0f}/s  ({ok} ok, {failed} failed of {len(users)}; target {TARGET_REGISTER}/s)"
    )
    print(
        f"MESSAGE via P-CSCF → S-CSCF → AS: {_rate(chain)}/s  p99 {chain['p99_ms']:.1f} ms  (offered {chain['offered']}/s; target {TARGET_MESSAGE}/s)"
    )
    print(f"MESSAGE sipp → sipp (ceiling):    {_rate(ceiling)}/s  p99 {ceiling['p99_ms']:.1f} ms")
    if kamailio is not None:
        print(
            f"MESSAGE sipp → Kamailio → sipp:   {_rate(kamailio)}/s  p99 {kamailio['p99_ms']:.1f} ms"
        )
    else:
        print("MESSAGE sipp → Kamailio → sipp:   (kamailio not installed)")
    print(f"chain / sipp ceiling: {chain['per_s'] / max(1.0, ceiling['per_s']):.2f}")
    if kamailio is not None:
        print(f"chain / Kamailio:     {chain['per_s'] / max(1.0, kamailio['per_s']):.2f}")
    return 0


def local_hops(admin: int) -> dict[str, float]:
    """The daemon's messages taken from imsp2pd.local_hops, by protocol."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("imsp2p_local_hops_total{") and 'kind="taken"' in line:
            protocol = line.split('protocol="', 1)[1].split('"', 1)[0]
            found[protocol] = float(line.rsplit(" ", 1)[1])
    return found


def _rate(result: dict[str, Any]) -> str:
    """The rate, marked ≥ when it is a lower bound (the last run passed)."""
    mark = "≥" if result.get("lower_bound") else " "
    return f"{mark}{result['per_s']:7.0f}"


def best_zero_failure(
    work: Path, target: str, rate: int, seconds: float, *extra: str, refine: int = 2
) -> dict[str, Any]:
    """The highest offered rate that completes with no failure: raised by a
    quarter from ``rate`` until a run fails (or falls below 90% of what was
    offered), then ``refine`` halvings between the last rate passed and the
    first failed (``best["lower_bound"]``: no run failed)."""
    best: dict[str, Any] | None = None
    offered = rate
    failed_at: int | None = None
    for _ in range(10):
        result = message_run(work, target, offered, seconds, *extra)
        if _passed(result, offered):
            if best is None or result["per_s"] > best["per_s"]:
                best = result
        else:
            failed_at = offered
            break
        offered = int(offered * 1.25)
        time.sleep(2.0)
    else:
        if best is not None:
            best["lower_bound"] = True
    if best is None and rate > 50:
        time.sleep(2.0)
        return best_zero_failure(work, target, rate // 3, seconds, *extra, refine=refine)
    if best is not None and failed_at is not None:
        lo, hi = best["offered"], failed_at
        for _ in range(refine):
            mid = (lo + hi) // 2
            if hi - lo < max(20, lo // 30):
                break
            time.sleep(2.0)
            result = message_run(work, target, mid, seconds, *extra)
            if _passed(result, mid):
                lo = mid
                if result["per_s"] > best["per_s"]:
                    best = result
            else:
                hi = mid
    return best or {
        "offered": offered,
        "calls": 0,
        "failed": -1,
        "per_s": 0.0,
        "p99_ms": float("nan"),
    }


def _passed(result: dict[str, Any], offered: int) -> bool:
    """No call failed, and the run kept up with what was offered."""
    return bool(result["failed"] == 0 and result["calls"] > 0 and result["per_s"] >= 0.9 * offered)


if __name__ == "__main__":
    sys.exit(main())
