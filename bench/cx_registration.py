"""Benchmark: the Cx side of one authenticated registration, without sockets.

Per registration the daemon's Cx traffic is UAR (I-CSCF) → UAA, MAR (S-CSCF)
→ MAA, UAR → UAA, SAR → SAA. Here an I-CSCF and an S-CSCF
:class:`~imsp2pd.diameter.node.DiameterNode` talk to the HSS's node over
in-memory pipes (one reactor turn is one delivery of what was written), the
HSS is :class:`~imsp2pd.ims.hss.Hss` on an in-memory store whose
transactions commit at once, and each side reads its answers as the CSCFs do
(outcome, Server-Name and Server-Capabilities with the S-CSCF choice,
SIP-Auth-Data-Item, User-Data). Printed: µs of CPU per registration for a
first registration of every user (MAR and SAR write) and for a
re-registration (nothing changes), beside an anchor measured in the same run
(a pure-Python loop of fixed work) and their ratio to it.

Each is measured without and with the process's local hops (see
:mod:`imsp2pd.local_hops`: the HSS's address an endpoint of the process, so
a node takes what another sent it instead of decoding it).

    .venv/bin/python bench/cx_registration.py [--users 2000] [--rounds 3] [--profile]
        [--hops both|off|on]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from imsp2pd.diameter import cx
from imsp2pd.diameter.codes import Application, ServerAssignmentType, Vendor
from imsp2pd.diameter.message import Message
from imsp2pd.diameter.node import DiameterNode, PeerConfig, _decode, _ServerFactory
from imsp2pd.diameter.peer import LocalConfig
from imsp2pd.ims.hss import Hss, HssConfig, MemoryTxn, load_provisioning
from imsp2pd.ims.icscf import choose_scscf, server_capabilities
from imsp2pd.local_hops import CHECK_ENV, LocalHops, checking

T = TypeVar("T")
REALM = "ims.example.org"
SCSCF = "sip:127.0.0.1:6060"
CX = ((Vendor.TGPP, Application.CX),)
HSS_PORT = 3868


class IndexedTxn(MemoryTxn):
    """MemoryTxn with its ``find`` on one field served by an index, as SQLite's is."""

    def __init__(self) -> None:
        super().__init__()
        self.index: dict[tuple[str, str, Any], set[str]] = {}

    def put(self, collection: str, key: str, doc: dict[str, Any]) -> None:
        old = self.data.get(collection, {}).get(key)
        for f, v in (old or {}).items():
            if isinstance(v, str):
                self.index.get((collection, f, v), set()).discard(key)
        super().put(collection, key, doc)
        for f, v in doc.items():
            if isinstance(v, str):
                self.index.setdefault((collection, f, v), set()).add(key)

    def find(
        self, collection: str, limit: int | None = None, **eq: Any
    ) -> list[tuple[str, dict[str, Any]]]:
        ((field, value),) = eq.items()
        docs = self.data.get(collection, {})
        keys = sorted(self.index.get((collection, field, value), ()))
        return [(k, dict(docs[k])) for k in keys][:limit]


class MemoryStore:
    """Transactions on one IndexedTxn that commit at once (a fired Deferred)."""

    def __init__(self) -> None:
        self.txn = IndexedTxn()
        self.count = 0

    def transact(self, fn: Callable[[Any], T]) -> defer.Deferred[T]:
        self.count += 1
        return defer.succeed(fn(self.txn))


class Pipe:
    """A transport that queues what is written for :meth:`Wire.pump`; its
    own address (host, port) and its other end's (``peer``)."""

    def __init__(self, wire: Wire, host: str, port: int) -> None:
        self.wire, self.host, self.port = wire, host, port
        self.peer_proto: Any = None
        self.peer: Pipe = self

    def write(self, data: bytes) -> None:
        self.wire.queue.append((self.peer_proto, data))

    def setTcpNoDelay(self, on: bool) -> None:
        pass

    def getHost(self) -> Any:
        return self

    def getPeer(self) -> Any:
        return self.peer

    def loseConnection(self) -> None:
        pass


class Wire:
    def __init__(self) -> None:
        self.queue: list[tuple[Any, bytes]] = []
        self.ports = 40000

    def pump(self) -> None:
        while self.queue:
            batch, self.queue = self.queue, []
            for proto, data in batch:
                proto.dataReceived(data)

    def connect(self, client: DiameterNode, server: DiameterNode) -> None:
        client.start()
        reactor = client.reactor
        while reactor.tcpClients:
            _, _, factory, _, _ = reactor.tcpClients.pop(0)
            cproto = factory.buildProtocol(None)
            sproto = _ServerFactory(server).buildProtocol(None)
            self.ports += 1
            ct, st = Pipe(self, "127.0.0.1", self.ports), Pipe(self, "127.0.0.1", HSS_PORT)
            ct.peer_proto, st.peer_proto = sproto, cproto
            ct.peer, st.peer = st, ct
            sproto.makeConnection(st)
            cproto.makeConnection(ct)
        self.pump()


def build(
    users: int, hops: LocalHops[Message] | None = None
) -> tuple[Wire, DiameterNode, DiameterNode, Hss, MemoryReactorClock]:
    """The nodes; with ``hops`` they share it (as a daemon's roles do): the
    HSS's address is an endpoint of the process, as its listening port is."""
    reactor = MemoryReactorClock()
    hss = Hss(HssConfig(origin_host="hss." + REALM, realm=REALM, scscf_names=(SCSCF,)))
    store = MemoryStore()
    hss.store = store  # type: ignore[assignment]
    data = {
        "psi": [{"identity": "sip:content@" + REALM, "application_server": "sip:127.0.0.1:7070"}],
        "subscriber": [
            {"impi": f"u{i}@{REALM}", "impus": [f"sip:u{i}@{REALM}"], "password": f"pw{i}"}
            for i in range(users)
        ],
    }
    load_provisioning(hss, store.txn, data)
    server = DiameterNode(
        reactor,
        LocalConfig("hss." + REALM, REALM, vendor_applications=CX),
        handler=hss.handle,
        local_hops=hops,
    )
    if hops is not None:
        hops.add_address("127.0.0.1", HSS_PORT)
    wire = Wire()
    clients = []
    for name in ("icscf", "scscf"):
        node = DiameterNode(
            reactor,
            LocalConfig(f"{name}.{REALM}", REALM, vendor_applications=CX),
            peers=[PeerConfig("hss." + REALM, REALM)],
            local_hops=hops,
        )
        wire.connect(node, server)
        clients.append(node)
    return wire, clients[0], clients[1], hss, reactor


def run(users: int, wire: Wire, icscf: DiameterNode, scscf: DiameterNode) -> int:
    """Register every user once; the number of answers that were as expected."""
    iorigin, sorigin = cx.Origin("icscf." + REALM, REALM), cx.Origin("scscf." + REALM, REALM)
    isess, ssess = cx.SessionIds(iorigin.host, 1.0), cx.SessionIds(sorigin.host, 1.0)
    ok = 0
    answers: list[Message] = []
    add = answers.append

    def ask(node: DiameterNode, msg: Message) -> Message:
        node.request(msg).addCallback(add)
        wire.pump()
        return answers.pop()

    for i in range(users):
        impi, impu = f"u{i}@{REALM}", f"sip:u{i}@{REALM}"
        for step in range(2):
            uaa = ask(icscf, cx.uar(iorigin, isess.next(), REALM, impi, impu, REALM))
            chosen = choose_scscf(cx.server_name(uaa), server_capabilities(uaa))
            ok += cx.outcome(uaa).success and chosen == SCSCF
            if step == 0:
                maa = ask(
                    scscf,
                    cx.mar(
                        sorigin, ssess.next(), REALM, impi, impu, SCSCF, scheme=cx.SCHEME_UNKNOWN
                    ),
                )
                items = cx.auth_items(maa)
                ok += cx.outcome(maa).success and bool(items and items[0].digest_ha1)
            else:
                saa = ask(
                    scscf,
                    cx.sar(
                        sorigin, ssess.next(), REALM, [impu], SCSCF,
                        ServerAssignmentType.REGISTRATION, impi=impi,
                    ),
                )  # fmt: skip
                ok += cx.outcome(saa).success and bool(cx.user_data(saa))
    return ok


def anchor(n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        total = 0
        for j in range(1000):
            total += j * j
    return time.process_time() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile the re-registrations")
    ap.add_argument(
        "--hops",
        choices=("both", "off", "on"),
        default="both",
        help="without and/or with the process's local hops (on: answers and requests"
        f" not decoded again; {CHECK_ENV}=1 checks each against its decoding)",
    )
    args = ap.parse_args()
    modes = {"both": (False, True), "off": (False,), "on": (True,)}[args.hops]
    best: dict[str, float] = {}
    transactions: dict[str, float] = {}
    hops_used: dict[bool, LocalHops[Message]] = {}
    for _ in range(args.rounds):
        for with_hops in modes:
            hops = LocalHops(check=checking(_decode)) if with_hops else None
            wire, icscf, scscf, hss, _ = build(args.users, hops)
            store: Any = hss.store
            for label in ("first registration", "re-registration"):
                key = label + (", local hops" if with_hops else "")
                count = store.count
                start = time.process_time()
                ok = run(args.users, wire, icscf, scscf)
                us = 1e6 * (time.process_time() - start) / args.users
                if ok != 4 * args.users:
                    print(f"{key}: only {ok} of {4 * args.users} answers as expected")
                    return 1
                best[key] = min(best.get(key, us), us)
                transactions[key] = (store.count - count) / args.users
            if hops is not None:
                hops_used[with_hops] = hops
        best["anchor"] = min(best.get("anchor", 1e9), 1e6 * anchor(args.users) / args.users)
    for key, us in best.items():
        if key != "anchor":
            print(
                f"Cx of one {key}: {us:7.1f} us  ({us / best['anchor']:.2f} x anchor,"
                f" {transactions[key]:.2f} store transactions)"
            )
    print(f"anchor (1000 multiply-adds in Python): {best['anchor']:.1f} us")
    for hops in hops_used.values():
        print(
            f"local hops (last round): {hops.taken} taken, {hops.mismatches} mismatches"
            f" (checked: {hops.check is not None})"
        )
        if hops.mismatches:
            return 1
    if args.profile:
        hops = LocalHops(check=checking(_decode)) if modes[-1] else None
        wire, icscf, scscf, hss, _ = build(args.users, hops)
        run(args.users, wire, icscf, scscf)
        prof = cProfile.Profile()
        prof.runcall(run, args.users, wire, icscf, scscf)
        pstats.Stats(prof).sort_stats("tottime").print_stats(35)
    return 0


if __name__ == "__main__":
    sys.exit(main())
