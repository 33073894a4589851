"""The JSON router and the control port, in memory (twisted.web's DummyRequest)."""

import io
import json

from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.test.requesthelper import DummyRequest

from imsp2pd.control import ControlPort, admin_router
from imsp2pd.metrics import Registry
from imsp2pd.web import HttpError, Response, Router, _log_formatter, redact


def request(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> DummyRequest:
    path_only, _, query = path.partition("?")
    req = DummyRequest([s.encode() for s in path_only.strip("/").split("/")])
    req.method = method.encode()
    req.uri = path.encode()
    req.path = path_only.encode()
    req.content = io.BytesIO(body)
    for k, v in (headers or {}).items():
        req.requestHeaders.setRawHeaders(k.encode(), [v.encode()])
    return req


class RouterTests(TestCase):
    def setUp(self) -> None:
        self.router = Router(token="secret", max_body=64, auth_prefix="/admin/")
        self.router.route("GET", "/things/{id}", lambda r: {"id": r.params["id"], "q": r.arg("q")})
        self.router.route("POST", "/echo", lambda r: r.json_object())
        self.router.route("GET", "/content/{doi}", lambda r: {"doi": r.params["doi"]})
        self.router.route("GET", "/admin/x", lambda r: {"ok": True})
        self.router.route("GET", "/deferred", lambda r: succeed(Response(201, b"hi", "text/plain")))
        self.router.route("GET", "/teapot", self._teapot)
        self.router.route("GET", "/boom", lambda r: fail(ZeroDivisionError()))

    def _teapot(self, r):
        raise HttpError(418, "teapot", "short and stout")

    def answer(self, req: DummyRequest) -> tuple[int, bytes]:
        d = self.router.dispatch(req)
        results = []
        d.addCallback(results.append)
        self.assertEqual(len(results), 1)
        resp = results[0]
        return resp.status, resp.body

    def test_params_and_query(self) -> None:
        status, body = self.answer(request("GET", "/things/42?q=x"))
        self.assertEqual((status, json.loads(body)), (200, {"id": "42", "q": "x"}))

    def test_last_parameter_takes_slashes(self) -> None:
        status, body = self.answer(request("GET", "/content/10.5555/abc"))
        self.assertEqual(json.loads(body), {"doi": "10.5555/abc"})

    def test_json_body(self) -> None:
        status, body = self.answer(request("POST", "/echo", b'{"a":1}'))
        self.assertEqual((status, json.loads(body)), (200, {"a": 1}))
        status, body = self.answer(request("POST", "/echo", b"{nope"))
        self.assertEqual((status, json.loads(body)["error"]), (400, "bad_json"))
        status, body = self.answer(request("POST", "/echo", b"[1]"))
        self.assertEqual(status, 400)
        status, body = self.answer(request("POST", "/echo", b"1" * 65))
        self.assertEqual(status, 413)
        self.router.max_body = 1 << 20
        status, body = self.answer(request("POST", "/echo", b"[" * 100_000))
        self.assertEqual((status, json.loads(body)["error"]), (400, "bad_json"))

    def test_not_found_and_method(self) -> None:
        self.assertEqual(self.answer(request("GET", "/nothing"))[0], 404)
        self.assertEqual(self.answer(request("DELETE", "/echo"))[0], 405)

    def test_admin_needs_the_token(self) -> None:
        self.assertEqual(self.answer(request("GET", "/admin/x"))[0], 401)
        bad = {"Authorization": "Bearer wrong"}
        self.assertEqual(self.answer(request("GET", "/admin/x", headers=bad))[0], 401)
        good = {"Authorization": "Bearer secret"}
        self.assertEqual(self.answer(request("GET", "/admin/x", headers=good))[0], 200)

    def test_errors_never_show_a_traceback(self) -> None:
        status, body = self.answer(request("GET", "/teapot"))
        self.assertEqual(
            (status, json.loads(body)), (418, {"error": "teapot", "message": "short and stout"})
        )
        status, body = self.answer(request("GET", "/boom"))
        self.assertEqual((status, json.loads(body)["error"]), (500, "internal"))
        self.assertNotIn(b"Traceback", body)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_raw_response_via_render(self) -> None:
        req = request("GET", "/deferred")
        self.router.render(req)
        self.assertEqual(req.responseCode, 201)
        self.assertEqual(b"".join(req.written), b"hi")
        self.assertEqual(req.finished, 1)

    def test_logs_never_show_the_query(self) -> None:
        self.assertEqual(redact(b"/announce?token=abc.def&x=1"), "/announce?…")
        req = request(
            "GET", "/announce?token=SECRET", headers={"Referer": "http://x/?token=SECRET2"}
        )
        req.clientproto = b"HTTP/1.1"
        req.code = 200
        req.sentLength = 10
        line = _log_formatter("[ts]", req)
        self.assertNotIn("SECRET", line)
        self.assertIn("/announce?…", line)


class ControlPortTests(TestCase):
    def test_health_metrics_and_roles(self) -> None:
        clock = Clock()
        router = admin_router("tok")
        metrics = Registry()
        checks = {}
        control = ControlPort(router, metrics, clock.seconds, ("hss", "ocs"), checks)
        clock.advance(5)

        def get(path: str, **h):
            results = []
            router.dispatch(request("GET", path, headers=h)).addCallback(results.append)
            return results[0]

        r = get("/health")
        self.assertEqual(r.status, 503)
        self.assertEqual(json.loads(r.body)["roles"], {"hss": "down", "ocs": "down"})
        control.roles_up |= {"hss", "ocs"}
        r = get("/health")
        self.assertEqual((r.status, json.loads(r.body)["status"]), (200, "ok"))
        checks["peer"] = lambda: {"ok": False, "why": "down"}
        self.assertEqual(get("/health").status, 503)
        checks["peer"] = lambda: {"ok": True}
        m = get("/metrics")
        self.assertTrue(m.content_type.startswith("text/plain; version=0.0.4"))
        self.assertIn(b'imsp2pd_role_up{role="hss"} 1', m.body)
        self.assertIn(b"imsp2pd_uptime_seconds 5", m.body)
        self.assertEqual(get("/admin/roles").status, 401)
        roles = json.loads(get("/admin/roles", Authorization="Bearer tok").body)
        self.assertEqual(roles["roles"], ["hss", "ocs"])
