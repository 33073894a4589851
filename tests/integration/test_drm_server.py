"""The drm role over real loopback HTTPS: lab certificate at first start, a whole flow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import treq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks, succeed
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed

from imsp2pd import entitlement, tlslab
from imsp2pd.client.cli import main
from imsp2pd.config import load_config
from imsp2pd.drm import files
from imsp2pd.drm import license as lic
from imsp2pd.metrics import Registry
from imsp2pd.roles import Hub, discover_roles, role_schemas
from imsp2pd.store import SQLiteStore
from imsp2pd.web import Router

ALICE = "sip:alice@ims.example.org"
CAROL = "sip:carol@ims.example.org"


class DrmOverHttpsTests(TestCase):
    def setUp(self) -> None:
        base = Path(self.mktemp()).resolve()
        (base / "etc").mkdir(parents=True)
        cfg = base / "etc" / "imsp2pd.toml"
        cfg.write_text(
            '[daemon]\nstate_dir = "../var"\n[admin]\ntoken = "adm"\n'
            '[drm]\nlisten = "127.0.0.1:0"\nservice_token = "svc-Q7xK2"\n'
        )
        known = discover_roles()
        self.config = load_config(cfg, role_schemas(known))
        self.role = known["drm"]
        self.store = SQLiteStore(self.config.state_path("db.sqlite"), reactor)
        self.store.migrate(self.role.migrations())
        self.addCleanup(self.store.close)
        self.hub = Hub(reactor, self.config, self.store, Registry(), Router(token="adm"))
        self.service = self.role.build(self.config, self.store, reactor, self.hub)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.var = base / "var"
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(self.pool.closeCachedConnections)
        agent = Agent(
            reactor,
            contextFactory=tlslab.client_policy(self.var / "tls" / "ca.pem"),
            pool=self.pool,
        )
        self.http = treq.client.HTTPClient(agent)

    def url(self):
        return succeed(f"https://127.0.0.1:{self.service.port.getHost().port}")

    @inlineCallbacks
    def call(self, method, path, body=None, auth=True):
        base = yield self.url()
        headers = {"Authorization": "Bearer svc-Q7xK2"} if auth else {}
        data = None if body is None else json.dumps(body).encode()
        response = yield self.http.request(method, base + path, data=data, headers=headers)
        content = yield response.content()
        return response.code, json.loads(content)

    def test_first_start_made_keys_and_certificates(self) -> None:
        for name in (
            "keys/drm_ed25519.pem",
            "keys/drm_master.key",
            "keys/as_ed25519.pem",
            "tls/ca.pem",
            "tls/drm.pem",
            "tls/drm.key",
        ):
            self.assertTrue((self.var / name).exists(), name)
        self.assertEqual(os.stat(self.var / "keys" / "drm_master.key").st_mode & 0o777, 0o600)
        self.assertTrue(self.hub.health_checks["drm"]()["ok"])

    @inlineCallbacks
    def test_whole_flow_over_https(self):
        from twisted.logger import formatEvent, globalLogPublisher

        lines: list[str] = []

        def observer(event: dict) -> None:
            lines.append(formatEvent(event) + repr(event))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        answer, token = yield self._flow()
        # The access log saw the requests, and no key, token or license.
        text = "\n".join(lines)
        self.assertIn("POST /license", text)
        for secret in ("ab" * 16, token.split(".")[0][:24], answer["license"][:24], "svc-Q7xK2"):
            self.assertNotIn(secret, text)

    @inlineCallbacks
    def _flow(self):
        issuer = entitlement.Issuer(
            entitlement.load_or_create_private_key(self.var / "keys")
        )  # the lab AS key
        now = int(reactor.seconds())
        status, content = yield self.call(
            "POST",
            "/content",
            {"publisher_token": issuer.issue_publisher(CAROL, now + 60), "content_key": "ab" * 16},
            auth=False,
        )
        self.assertEqual(status, 201, content)
        doi = content["doi"]
        status, _ = yield self.call(
            "POST",
            "/rights",
            {
                "impu": ALICE,
                "doi": doi,
                "purchase_id": "p1",
                "offer": {"id": "o", "rights": {"plays": 3}, "devices": 1},
            },
        )
        self.assertEqual(status, 200)
        device = lic.DeviceKeys.generate()
        nonce = os.urandom(16)
        token = issuer.issue_license(ALICE, doi, "o", now + 60)
        status, answer = yield self.call(
            "POST", "/license", {"request": lic.make_request(device, token, nonce)}, auth=False
        )
        self.assertEqual(status, 200, answer)
        _, key_answer = yield self.call("GET", "/key", auth=False)
        guard = lic.LicenseGuard(entitlement.load_public_key(key_answer["ed25519"]), device)
        _, key, _ = guard.accept(answer["license"], lic.PlayerState(), reactor.seconds(), nonce)
        self.assertEqual(key, bytes.fromhex("ab" * 16))
        return answer, token

    @inlineCallbacks
    def test_client_without_the_lab_ca_refuses_the_server(self):
        base = yield self.url()
        other = Path(self.mktemp())
        tlslab.ensure_ca(other)
        agent = Agent(
            reactor, contextFactory=tlslab.client_policy(other / "ca.pem"), pool=self.pool
        )
        with self.assertRaises(ResponseFailed):
            yield agent.request(b"GET", (base + "/key").encode())

    @inlineCallbacks
    def test_errors_are_json_4xx(self):
        status, answer = yield self.call("POST", "/license", {"request": "x.y"}, auth=False)
        self.assertEqual(status, 400)
        self.assertEqual(set(answer), {"error", "message"})
        status, answer = yield self.call("GET", "/content/10.5555/none", auth=False)
        self.assertEqual(status, 401)
        forged = entitlement.Issuer(Ed25519PrivateKey.generate())
        status, answer = yield self.call(
            "POST",
            "/content",
            {"publisher_token": forged.issue_publisher(CAROL, 2**40), "content_key": "ab" * 16},
            auth=False,
        )
        self.assertEqual((status, answer["error"]), (403, "bad_token"))

    @inlineCallbacks
    def test_cli_protect_license_play(self):
        """The provider's and the consumer's commands against the running server."""
        issuer = entitlement.Issuer(entitlement.load_or_create_private_key(self.var / "keys"))
        now = int(reactor.seconds())
        work = Path(self.mktemp()).resolve()
        work.mkdir()
        (work / "movie").write_bytes(os.urandom(200_000))
        (work / "pass").write_text("secret\n")
        base = yield self.url()
        ca = str(self.var / "tls" / "ca.pem")
        (work / "ptoken").write_text(issuer.issue_publisher(CAROL, now + 60))
        register = ["drm", "register", "--publisher-token", "@" + str(work / "ptoken")]
        rc = yield deferToThread(
            main, [*register, "--key-file", str(work / "k"), "--server", base, "--ca", ca]
        )
        self.assertEqual(rc, 0)
        self.assertEqual(os.stat(work / "k").st_mode & 0o777, 0o600)
        docs = yield self.store.transact(lambda t: list(t.scan("drm_content")))
        self.assertEqual([doc["owner"] for _, doc in docs], [CAROL])
        content = docs[0][1]
        rc = yield deferToThread(
            main,
            [
                "drm",
                "protect",
                str(work / "movie"),
                "--doi",
                content["doi"],
                "--key-id",
                content["key_id"],
                "--key-file",
                str(work / "k"),
                "--piece-length",
                "16K",
                "-o",
                str(work / "movie.c"),
            ],
        )
        self.assertEqual(rc, 0)
        yield self.call(
            "POST",
            "/rights",
            {
                "impu": ALICE,
                "doi": content["doi"],
                "purchase_id": "p1",
                "offer": {"id": "o", "rights": {"plays": 1}},
            },
        )
        base = yield self.url()
        keystore = ["--keystore", str(work / "ks.json"), "--passphrase-file", str(work / "pass")]
        (work / "token").write_text(issuer.issue_license(ALICE, content["doi"], "o", now + 60))
        rc = yield deferToThread(
            main,
            [
                "drm",
                "license",
                "--token",
                "@" + str(work / "token"),
                "--server",
                base,
                "--ca",
                str(self.var / "tls" / "ca.pem"),
                "-o",
                str(work / "lic"),
                *keystore,
            ],
        )
        self.assertEqual(rc, 0)
        play = ["drm", "play", str(work / "lic"), str(work / "movie.c"), *keystore]
        rc = yield deferToThread(main, [*play, "-o", str(work / "out")])
        self.assertEqual(rc, 0)
        self.assertEqual((work / "out").read_bytes(), (work / "movie").read_bytes())
        rc = yield deferToThread(main, [*play, "-o", str(work / "out2")])
        self.assertEqual(rc, 1)  # the one play is used
        self.assertFalse((work / "out2").exists())
        self.assertEqual(len(files.read_key_file(work / "k")), 16)
