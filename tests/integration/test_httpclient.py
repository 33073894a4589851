"""The inter-service HTTP client against real loopback servers (HTTP and lab HTTPS)."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from imsp2pd import tlslab
from imsp2pd.httpclient import JsonClient, Unreachable
from imsp2pd.web import HttpError, Router, make_site


class ClientTests(TestCase):
    def setUp(self) -> None:
        self.router = Router(token="s3cret")
        self.router.route(
            "POST",
            "/echo",
            lambda r: {"got": r.json_object(), "auth": r.headers.get("authorization")},
        )
        self.router.route("GET", "/private", lambda r: {"ok": True}, auth=True)
        self.router.route("GET", "/big", lambda r: {"x": "y" * 5000})
        self.router.route("GET", "/never", lambda r: Deferred())
        self.router.route("GET", "/gone", self._gone)
        self.port = reactor.listenTCP(0, make_site(self.router, reactor), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    def _gone(self, r):
        raise HttpError(404, "no_such", "nothing here")

    def client(self, url: str | None = None, **kw) -> JsonClient:
        c = JsonClient(reactor, url or self.url, **kw)
        self.addCleanup(c.close)
        return c

    @inlineCallbacks
    def test_json_round_trip_token_and_errors(self):
        c = self.client(token="s3cret")
        reply = yield c.post("/echo", {"a": [1, "é"]})
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.json(), {"got": {"a": [1, "é"]}, "auth": "Bearer s3cret"})
        self.assertTrue((yield c.get("/private")).ok)
        reply = yield self.client().get("/private")
        self.assertEqual(reply.status, 401)
        reply = yield c.get("/gone")
        self.assertEqual((reply.status, reply.json()["error"]), (404, "no_such"))

    @inlineCallbacks
    def test_failures_are_unreachable(self):
        with self.assertRaises(Unreachable):
            yield self.client(max_body=1000).get("/big")
        with self.assertRaises(Unreachable):
            yield self.client(timeout=0.3).get("/never")
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        with self.assertRaises(Unreachable) as e:
            yield self.client(f"http://127.0.0.1:{dead}").get("/x?token=SECRET")
        self.assertNotIn("SECRET", str(e.exception))

    @inlineCallbacks
    def test_https_trusts_only_the_lab_ca(self):
        tls = Path(self.mktemp()).resolve()
        lab = tlslab.ensure_server_cert(tls, "svc")
        port = reactor.listenSSL(
            0, make_site(self.router, reactor), tlslab.server_options(lab), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        url = f"https://127.0.0.1:{port.getHost().port}"
        reply = yield self.client(url, ca_path=str(lab.ca)).post("/echo", {"x": 1})
        self.assertEqual(reply.json()["got"], {"x": 1})
        other = Path(self.mktemp()).resolve()
        tlslab.ensure_ca(other)
        with self.assertRaises(Unreachable):
            yield self.client(url, ca_path=str(other / "ca.pem"), persistent=False).get("/private")
