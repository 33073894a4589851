"""A lab for integration tests: every role's config on free loopback ports, and daemons.

:func:`write_lab` writes ``etc/imsp2pd.toml`` and ``etc/subscribers.toml``
under a folder; :class:`Daemon` runs ``twistd -n imsp2p`` with it in a
subprocess and waits until its control port says healthy; :func:`admin_request`
and :func:`admin_json` speak to a control port with its bearer token.
:func:`wait_until` polls a condition from inside the reactor, for trial tests;
:func:`listen_sip` puts a SIP node on a free loopback port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from subprocess import CompletedProcess

    from twisted.internet.defer import Deferred

    from imsp2pd.sip.proxy import SipCore
    from imsp2pd.sip.transport import SipNode

BIN = Path(sys.executable).parent
PSI = "sip:content@ims.example.org"
PORTS = (
    "ctl",
    "ctl2",
    "hss",
    "pcscf",
    "pcscf_tls",
    "icscf",
    "scscf",
    "ocs",
    "drm",
    "trk",
    "as",
    "idx",
)
USERS = ("alice", "bob", "carol", "dave")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in socks]
    for s in socks:
        s.close()
    return ports


def free_port() -> int:
    """A loopback port free for both TCP and UDP (a SIP listener takes both)."""
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


def write_lab(
    directory: Path,
    *,
    balances: dict[str, str] | None = None,
    listing: str = "provider",
    seeder_upload_kib: int = 0,
    extra: str = "",
) -> tuple[Path, dict[str, int]]:
    """The lab's config on free ports; (config path, ports by name)."""
    p = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
    etc = directory / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "subscribers.toml").write_text(
        f'[[psi]]\nidentity = "{PSI}"\napplication_server = "sip:127.0.0.1:{p["as"]}"\n'
        + "".join(
            f'[[subscriber]]\nimpi = "{u}@ims.example.org"\nimpus = ["sip:{u}@ims.example.org"]\n'
            f'password = "{u}-pass"\n'
            for u in USERS
        )
    )
    balances = balances or {"alice": "10.00", "bob": "10.00", "dave": "0.00"}
    accounts = "".join(f'"sip:{u}@ims.example.org" = "{v}"\n' for u, v in balances.items())
    config = etc / "imsp2pd.toml"
    config.write_text(f"""
[daemon]
state_dir = "../var"
[admin]
listen = "tcp:{p["ctl"]}:interface=127.0.0.1"
url = "http://127.0.0.1:{p["ctl"]}"
token = "adm"
[client]
pcscf = "127.0.0.1:{p["pcscf"]}"
index_url = "http://127.0.0.1:{p["idx"]}"
[hss]
listen = "127.0.0.1:{p["hss"]}"
scscf_names = ["sip:127.0.0.1:{p["scscf"]}"]
[pcscf]
listen = "127.0.0.1:{p["pcscf"]}"
tls_listen = "127.0.0.1:{p["pcscf_tls"]}"
icscf = "127.0.0.1:{p["icscf"]}"
[icscf]
listen = "127.0.0.1:{p["icscf"]}"
hss = "127.0.0.1:{p["hss"]}"
[scscf]
listen = "127.0.0.1:{p["scscf"]}"
hss = "127.0.0.1:{p["hss"]}"
icscf = "127.0.0.1:{p["icscf"]}"
[ocs]
listen = "127.0.0.1:{p["ocs"]}"
[ocs.accounts]
{accounts}
[drm]
listen = "127.0.0.1:{p["drm"]}"
url = "https://127.0.0.1:{p["drm"]}"
[tracker]
listen = "127.0.0.1:{p["trk"]}"
[index]
listen = "127.0.0.1:{p["idx"]}"
url = "http://127.0.0.1:{p["idx"]}"
scrape_interval = 2.0
scrape_timeout = 0.5
[index.tracker_admin]
"http://127.0.0.1:{p["trk"]}" = "http://127.0.0.1:{p["ctl"]}"
[as]
listen = "127.0.0.1:{p["as"]}"
scscf = "127.0.0.1:{p["scscf"]}"
ocs = "127.0.0.1:{p["ocs"]}"
trackers = ["http://127.0.0.1:{p["trk"]}"]
index_url = "http://127.0.0.1:{p["idx"]}"
listing = "{listing}"
completion_poll = 0.3
[as.tracker_admin]
"http://127.0.0.1:{p["trk"]}" = "http://127.0.0.1:{p["ctl"]}"
[seeder]
poll = 0.3
upload_kib = {seeder_upload_kib}
{extra}
""")
    return config, p


def twistd_to_the_end(directory: Path, env: dict[str, str], roles: str) -> CompletedProcess[str]:
    """``twistd -n imsp2p --role=ROLES`` in ``directory``, run until it exits (60 s
    at most), its output captured: for a daemon that must refuse to start."""
    return subprocess.run(
        [str(BIN / "twistd"), "-n", "--pidfile=", "imsp2p", f"--role={roles}"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return None


def admin_request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None,
    timeout: float = 20.0,
) -> tuple[int, bytes]:
    """``method path`` at the control port on loopback ``port``, ``body`` (if not
    None) as JSON, ``token`` (if any) as the bearer; (status, raw body), error
    statuses included. An unreachable port raises :class:`OSError`."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
    )
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


def admin_json(port: int, method: str, path: str, body: Any = None, **how: Any) -> tuple[int, Any]:
    """:func:`admin_request` (``token`` and ``timeout`` as there) with the answer
    decoded as JSON (an empty one as None)."""
    status, raw = admin_request(port, method, path, body, **how)
    return status, json.loads(raw or b"null")


class Daemon:
    """``twistd -n imsp2p`` with a lab config, its output in ``name``.log beside it."""

    def __init__(
        self,
        config: Path,
        roles: str,
        control_port: int,
        name: str = "daemon",
        control: str | None = None,
    ) -> None:
        self.log_path = config.parent.parent / f"{name}.log"
        self.control_port = control_port
        env = {k: v for k, v in os.environ.items() if k not in ("IMSP2P_CONFIG", "PYTHONPATH")}
        cmd = [
            str(BIN / "twistd"),
            "-n",
            "--pidfile=",
            "imsp2p",
            f"--role={roles}",
            "--config",
            str(config),
        ]
        if control:
            cmd.append(f"--control={control}")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=config.parent.parent, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("daemon exited: " + self.log())
            if health(self.control_port) == 200:
                return
            time.sleep(0.1)
        raise AssertionError("daemon not healthy: " + self.log())

    def stop(self, sig: int | None = None) -> None:
        end_process(self.proc, sig, grace=15)


def end_process(proc: subprocess.Popen[Any], sig: int | None = None, grace: float = 10) -> None:
    """Ends ``proc`` if it runs: SIGTERM (or ``sig``), then SIGKILL after ``grace``
    seconds; returns once it has exited."""
    if proc.poll() is None:
        if sig is None:
            proc.terminate()
        else:
            proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(
    condition: Callable[[], object],
    timeout: float = 10.0,
    *,
    interval: float = 0.05,
    describe: Callable[[], str] | None = None,
    clock: Any = None,
) -> Deferred[None]:
    """Fires once ``condition()`` is true, asking now and then every ``interval``
    seconds; fails with a :class:`~twisted.trial.unittest.FailTest` (the text of
    ``describe()``, if given) once ``timeout`` seconds have passed on ``clock``
    (the global reactor by default) without it. An exception from ``condition``
    fails the Deferred too."""
    from twisted.internet.defer import Deferred
    from twisted.trial.unittest import FailTest

    if clock is None:
        from twisted.internet import reactor as clock
    done: Deferred[None] = Deferred()
    start = clock.seconds()

    def poll() -> None:
        try:
            met = condition()
        except BaseException:
            done.errback()
            return
        if met:
            done.callback(None)
        elif clock.seconds() - start >= timeout:
            text = describe() if describe else f"condition not met within {timeout}s"
            done.errback(FailTest(text))
        else:
            clock.callLater(interval, poll)

    poll()
    return done


def listen_sip(node: SipNode, core: SipCore) -> int:
    """Listens ``node`` on UDP and TCP on one free loopback port and makes that
    port ``core``'s addresses; the port."""
    from twisted.internet.error import CannotListenError

    from imsp2pd.sip.proxy import LocalAddress

    for _ in range(20):
        udp = node.listen_udp(0)
        port = int(udp.getHost().port)
        try:
            node.listen_tcp(port)
            break
        except CannotListenError:
            # the kernel's free UDP port is some TCP connection's local port
            # (both come from the one ephemeral range): try another
            node._ports.remove(udp)
            udp.stopListening()
    else:
        raise RuntimeError("no port free for both UDP and TCP")
    core.addresses[:] = [
        LocalAddress("UDP", "127.0.0.1", port),
        LocalAddress("TCP", "127.0.0.1", port),
    ]
    return port


def announce(reactor: object, announce_url: str, info_hash: str, left: int) -> object:
    """One BEP 3 announce (event started) with the token of ``announce_url``; the
    decoded answer. Every byte of the binary fields is %XX-escaped, as clients do."""
    import urllib.parse

    from twisted.internet.defer import inlineCallbacks

    from imsp2pd.bittorrent.bencoding import bdecode
    from imsp2pd.httpclient import JsonClient

    fields = {
        "info_hash": bytes.fromhex(info_hash),
        "peer_id": os.urandom(20),
        "port": 6881,
        "uploaded": 0,
        "downloaded": 0,
        "left": left,
        "event": "started",
        "compact": 1,
    }
    query = urllib.parse.urlencode(fields, quote_via=urllib.parse.quote)
    base, _, token_query = announce_url.partition("/announce?")

    @inlineCallbacks
    def run():  # type: ignore[no-untyped-def]
        client = JsonClient(reactor, base, timeout=5)
        try:
            reply = yield client.get(f"/announce?{token_query}&{query}")
        finally:
            yield client.close()
        return bdecode(reply.body)

    return run()
