"""Micro-benchmark: parsing SIP messages, Via headers and URIs in one process.

The messages are the ones the P-CSCF → S-CSCF → AS chain handles: a MESSAGE
after the P-CSCF (three Vias, Route, Record-Route, P-Asserted-Identity,
P-Charging-Vector, a JSON body), its 200 OK, and a REGISTER with digest
credentials.  Every copy parsed has its own branch, tags and Call-ID (as on
the wire, so the parsers' caches of repeated values do not hide the work);
the caches are cleared before each figure.

The anchor, measured in the same run, is the least any parser written in
Python has to do: split the head into lines and each line at its colon.
Each figure is printed as microseconds per call and as a ratio to the
anchor (lower is better); the last line is the messages/s of
``parse_message`` over the mix.

    .venv/bin/python bench/sip_parse.py [--copies 2000] [--repeat 5]

Measured (ratios to the anchor, two runs, before → after the fast paths of
issue 4): MESSAGE x47-49 → x16, 200 OK x41-43 → x14, REGISTER x30-31 →
x10-12, the mix x34 → x12-14 (17,000 → 41,000-47,000 messages/s);
parse_via x5.6 → x1.3, parse_uri x2.3 → x0.84, parse_name_addr x2.8 → x1.2.
Then (compiled, same run, before → after the one-pass parse of plain heads
and the header lines kept): MESSAGE x19.0-19.2 → x12.2-12.3, 200 OK
x16.4-18.1 → x11.5-12.1, REGISTER x12.6-13.5 → x6.6-6.8, the mix x15.3-16.4
→ x9.8-10.1 (30,000-31,000 → 45,000-46,000 messages/s).  Every line of a
copy here is new but the constant ones; in the daemon a response's lines
are its request's and are found kept.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Sequence

from imsp2pd.sip import headers as sip_headers
from imsp2pd.sip import parser as sip_parser
from imsp2pd.sip import uri as sip_uri
from imsp2pd.sip.headers import parse_name_addr, parse_via
from imsp2pd.sip.parser import parse_message
from imsp2pd.sip.uri import SipURI, parse_uri

BODY = '{"purchase_id": "%(cid)s", "doi": "10.5555/bench", "offer": "o1"}'

MESSAGE = (
    "MESSAGE sip:content@ims.example.org SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK%(b1)s\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5060;received=127.0.0.1;branch=z9hG4bK%(b2)s\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:40001;received=127.0.0.1;rport=40001;branch=z9hG4bK%(b3)s\r\n"
    "Route: <sip:127.0.0.1:5062;lr>\r\n"
    "Record-Route: <sip:127.0.0.1:5060;lr>\r\n"
    "From: <sip:user0@ims.example.org>;tag=%(tag)sSIPpTag001\r\n"
    "To: <sip:content@ims.example.org>\r\n"
    "Call-ID: %(cid)s@127.0.0.1\r\n"
    "CSeq: 1 MESSAGE\r\n"
    "Max-Forwards: 68\r\n"
    "P-Asserted-Identity: <sip:user0@ims.example.org>\r\n"
    'P-Charging-Vector: icid-value="%(cid)s";icid-generated-at=127.0.0.1\r\n'
    "Content-Type: application/vnd.imsp2p.purchase+json\r\n"
    "Content-Length: %(len)d\r\n"
    "\r\n"
    "%(body)s"
)

OK = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK%(b1)s\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5060;received=127.0.0.1;branch=z9hG4bK%(b2)s\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:40001;received=127.0.0.1;rport=40001;branch=z9hG4bK%(b3)s\r\n"
    "Record-Route: <sip:127.0.0.1:5060;lr>\r\n"
    "From: <sip:user0@ims.example.org>;tag=%(tag)sSIPpTag001\r\n"
    "To: <sip:content@ims.example.org>;tag=%(tag)sSIPpTag011\r\n"
    "Call-ID: %(cid)s@127.0.0.1\r\n"
    "CSeq: 1 MESSAGE\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)

REGISTER = (
    "REGISTER sip:ims.example.org SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:40001;rport;branch=z9hG4bK%(b1)s\r\n"
    "From: <sip:user7@ims.example.org>;tag=%(tag)sSIPpTag002\r\n"
    "To: <sip:user7@ims.example.org>\r\n"
    "Call-ID: %(cid)s@127.0.0.1\r\n"
    "CSeq: 2 REGISTER\r\n"
    "Contact: <sip:user7@127.0.0.1:40001>;expires=3600\r\n"
    'Authorization: Digest username="user7@ims.example.org", realm="ims.example.org", '
    'nonce="%(b2)s", uri="sip:ims.example.org", response="%(b3)s", algorithm=MD5\r\n'
    "Max-Forwards: 70\r\n"
    "Expires: 3600\r\n"
    "Supported: path, gruu\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


def variant(template: str, i: int) -> bytes:
    cid = f"{i:08x}-{i * 7919 % 100003:05x}"
    body = BODY % {"cid": cid}
    fields = {
        "b1": f"{i:012x}a",
        "b2": f"{i:012x}b",
        "b3": f"{i:012x}c",
        "tag": f"{i * 31 % 99991}",
        "cid": cid,
        "body": body,
        "len": len(body.encode()),
    }
    return (template % fields).encode()


def clear_caches() -> None:
    for module in (sip_headers, sip_uri):
        for value in vars(module).values():
            clear = getattr(value, "cache_clear", None)
            if callable(clear):
                clear()
    sip_parser._LINES.clear()  # the header lines met lately


def timed(fn: Callable[[], object], calls: int, repeat: int) -> float:
    """Microseconds per call: the best of ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        clear_caches()
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best / calls * 1e6


def anchor(messages: Sequence[bytes]) -> None:
    for data in messages:
        head, _, _body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        for line in lines[1:]:
            line.partition(b":")


def parse_all(messages: Sequence[bytes]) -> None:
    for data in messages:
        parse_message(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=2000, help="distinct copies of each message")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each figure (best kept)")
    args = ap.parse_args()
    n, r = args.copies, args.repeat

    kinds = {"MESSAGE": MESSAGE, "200 OK": OK, "REGISTER": REGISTER}
    sets = {name: [variant(t, i) for i in range(n)] for name, t in kinds.items()}
    mix = [m for trio in zip(*sets.values(), strict=True) for m in trio]
    # every message parses before anything is timed
    for data in mix:
        parse_message(data)

    vias = [
        f"SIP/2.0/UDP 127.0.0.1:{5060 + i % 3};received=127.0.0.1;rport=40001;branch=z9hG4bK{i:012x}"
        for i in range(n)
    ]
    uris = [f"sip:user{i}@ims.example.org;transport=udp" for i in range(n)]
    routes = [f"<sip:127.0.0.1:{5000 + i % 1000};lr>;tag={i}" for i in range(n)]
    parsed_uris = [u for u in map(parse_uri, uris) if isinstance(u, SipURI)]

    base = timed(lambda: anchor(mix), len(mix), r)
    rows: list[tuple[str, float]] = []
    for name, msgs in sets.items():
        rows.append((f"parse_message {name}", timed(lambda m=msgs: parse_all(m), n, r)))  # type: ignore[misc]
    rows.append(
        ("parse_via (distinct branches)", timed(lambda: [parse_via(v) for v in vias], n, r))
    )
    rows.append(("parse_uri (distinct users)", timed(lambda: [parse_uri(u) for u in uris], n, r)))
    rows.append(
        ("parse_name_addr (distinct)", timed(lambda: [parse_name_addr(t) for t in routes], n, r))
    )
    rows.append(
        ("str(uri) (same objects again)", timed(lambda: [str(u) for u in parsed_uris], n, r))
    )
    rows.append(
        ("parse_uri + str(uri) (fresh)", timed(lambda: [str(parse_uri(u)) for u in uris], n, r))
    )
    rows.append(
        (
            "uri.has_param + param",
            timed(lambda: [(u.has_param("lr"), u.param("transport")) for u in parsed_uris], n, r),
        )
    )
    mix_us = timed(lambda: parse_all(mix), len(mix), r)
    rows.append(("parse_message mix", mix_us))

    print(f"{'anchor: split lines + partition(:)':40s} {base:8.2f} us/msg  x1.00")
    for name, us in rows:
        print(f"{name:40s} {us:8.2f} us      x{us / base:.2f}")
    print(f"parse_message: {1e6 / mix_us:,.0f} messages/s (mix of {len(kinds)} kinds)")


if __name__ == "__main__":
    main()
