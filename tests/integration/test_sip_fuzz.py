"""A running SIP node under mutated and malformed traffic on real
loopback sockets: it stays up, answers 400/513 or drops, keeps serving
good requests, and its buffers and tables stay bounded."""

from __future__ import annotations

import random
import socket
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from imsp2pd.sip.proxy import IncomingRequest, LocalAddress, Output, SipCore
from imsp2pd.sip.transport import SipNode
from tests.integration.labkit import listen_sip

GOOD = (
    "MESSAGE sip:content@ims.example.org SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{n};rport\r\n"
    "From: <sip:alice@ims.example.org>;tag=a{n}\r\nTo: <sip:content@ims.example.org>\r\n"
    "Call-ID: fuzz-{n}\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\n"
    "Content-Length: 5\r\n\r\nhello"
)

NASTY = [
    b"",
    b"\r\n",
    b"\x00" * 100,
    bytes(range(256)),
    b"MESSAGE sip:a@b SIP/2.0\r\n" + b"X-Huge: " + b"y" * 60000 + b"\r\n\r\n",
    GOOD.format(port=1, n=0).replace("Content-Length: 5", "Content-Length: 99999").encode(),
    GOOD.format(port=1, n=0).replace("Content-Length: 5", "Content-Length: -1").encode(),
    GOOD.format(port=1, n=0).replace("Content-Length: 5", "Content-Length: 5, 6").encode(),
    GOOD.format(port=1, n=0).encode()[:40],
    GOOD.format(port=1, n=0).replace("SIP/2.0\r\n", "SIP/2.0\n", 1).encode(),
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKnothing\r\n\r\n",
    b"INVITE sip:a@b SIP/2.0\r\n" + b"Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n" * 600 + b"\r\n",
    ("MESSAGE sip:\u00e9@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK\u00ff\r\n\r\n").encode(),
]


class Sink:
    def __init__(self, core: SipCore) -> None:
        self.core = core
        self.count = 0

    def on_event(self, event: Output, now: float) -> list[Output]:
        if isinstance(event, IncomingRequest):
            self.count += 1
            return self.core.reply(event.ctx, 200, now)
        return []


def mutate(data: bytes, rng: random.Random) -> bytes:
    raw = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        pos = rng.randrange(len(raw)) if raw else 0
        if op < 0.3 and raw:
            raw[pos] = rng.choice(b'\x00\r\n :;,<>"\\@[]%/\xff\t')
        elif op < 0.6:
            del raw[pos : pos + rng.randint(1, 30)]
        elif op < 0.8:
            raw[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        else:
            raw[pos:pos] = raw[pos : pos + rng.randint(1, 200)]  # duplicate a slice
    return bytes(raw)


class FuzzTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 0)])
        self.sink = Sink(self.core)
        self.node = SipNode(reactor, self.core, self.sink, max_message=1 << 16)
        self.port = listen_sip(self.node, self.core)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setblocking(False)

    def tearDown(self) -> defer.Deferred[Any]:
        self.udp.close()
        return self.node.stop()

    def drain(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.udp.recv(65535))
            except BlockingIOError:
                return out

    @defer.inlineCallbacks
    def test_udp_fuzz_keeps_serving(self) -> Any:
        rng = random.Random(4475)
        me = self.udp.getsockname()[1]
        sent = 0
        for i in range(1500):
            base = GOOD.format(port=me, n=i).encode()
            data = rng.choice(NASTY) if i % 10 == 0 else mutate(base, rng)
            if data:
                self.udp.sendto(data[:65000], ("127.0.0.1", self.port))
                sent += 1
            if i % 50 == 0:
                yield task.deferLater(reactor, 0.01, lambda: None)
        yield task.deferLater(reactor, 0.3, lambda: None)
        answers = self.drain()
        for a in answers:
            self.assertTrue(a.startswith(b"SIP/2.0 "), a[:80])
            status = int(a[8:11])
            self.assertIn(status, (200, 400, 416, 481, 482, 483, 487, 505, 513), a[:120])
        self.assertGreater(self.node.stats["bad"], 100)
        # still serving a good request
        good = GOOD.format(port=me, n=999999).encode()
        self.udp.sendto(good, ("127.0.0.1", self.port))
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertTrue(
            any(b"fuzz-999999" in a and a.startswith(b"SIP/2.0 200") for a in self.drain())
        )
        # bounded: transactions only live for their timers
        self.assertLess(self.core.pending, sent)

    @defer.inlineCallbacks
    def test_tcp_garbage_and_oversize_keep_buffers_bounded(self) -> Any:
        rng = random.Random(3261)
        socks = []
        for j in range(20):
            s = socket.create_connection(("127.0.0.1", self.port))
            s.setblocking(False)
            socks.append(s)
            chunk = rng.choice(NASTY) + mutate(GOOD.format(port=1, n=j).encode(), rng)
            try:
                s.sendall(chunk * 3)
                s.sendall(b"X" * 70000)  # a header block that never ends: 513 and close
            except OSError:
                pass
        yield task.deferLater(reactor, 0.5, lambda: None)
        for stream in list(self.node._flows.values()):
            self.assertLessEqual(stream.framer.buffered, 1 << 16)
        for s in socks:
            s.close()
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(self.node._flows, {})
