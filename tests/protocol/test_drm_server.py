"""The DRM server's web services in memory (treq's StubTreq over the router).

Security tests of the issue live here too: a token without the device
signature gets nothing, revoked users/devices/DOIs/tokens get no license,
fuzzed bodies never give a 5xx, the content key is not in the database in clear.
"""

from __future__ import annotations

import json
import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from imsp2pd.drm import license as lic
from imsp2pd.drm.http import make_router
from imsp2pd.drm.server import MIGRATIONS, DrmCore, MasterKey
from imsp2pd.entitlement import Issuer, Verifier, b64url_decode, load_public_key
from imsp2pd.metrics import Registry
from imsp2pd.store import SQLiteStore

NOW = 1_800_000_000
SERVICE = "svc-secret"
BASE = "https://drm.test"
CAROL = "sip:carol@ims.example.org"
ALICE = "sip:alice@ims.example.org"
KEY_HEX = "00112233445566778899aabbccddeeff"
OFFER = {
    "id": "rent-2d",
    "price": "2.50",
    "currency": "EUR",
    "rights": {"play_seconds_from_first_use": 172800},
    "devices": 1,
}

any_text = st.text(alphabet=st.characters(blacklist_categories=()), max_size=30)  # surrogates too
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=12,
)


class DrmWebTests(TestCase):
    def setUp(self) -> None:
        self.db = self.mktemp()
        self.store = SQLiteStore(self.db)  # no reactor: transactions run synchronously
        self.store.migrate(MIGRATIONS)
        self.addCleanup(self.store.close)
        self.issuer = Issuer(Ed25519PrivateKey.generate())
        self.server_key = Ed25519PrivateKey.generate()
        self.core = DrmCore(
            signing_key=self.server_key,
            as_verifier=Verifier(self.issuer.public_key),
            master_key=MasterKey(os.urandom(32)),
        )
        self.clock = Clock()
        self.clock.advance(NOW)
        self.metrics = Registry()
        self.router = make_router(self.core, self.store, self.clock, SERVICE, self.metrics)
        self.http = StubTreq(self.router)

    # -- helpers ----------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: bool = True,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {SERVICE}"} if auth else {}
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        d = self.http.request(method, BASE + path, data=data, headers=headers)
        self.http.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(response.content())
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        return response.code, json.loads(content)

    def register(self, owner: str = CAROL) -> dict[str, Any]:
        token = self.issuer.issue_publisher(owner, NOW + 3600)
        status, answer = self.call(
            "POST", "/content", {"publisher_token": token, "content_key": KEY_HEX}, auth=False
        )
        self.assertEqual(status, 201, answer)
        return answer

    def grant(
        self, doi: str, impu: str = ALICE, offer: dict | None = None, purchase: str = "p1"
    ) -> dict[str, Any]:
        status, answer = self.call(
            "POST",
            "/rights",
            {"impu": impu, "doi": doi, "offer": offer or OFFER, "purchase_id": purchase},
        )
        self.assertEqual(status, 200, answer)
        return answer

    def ask(
        self,
        doi: str,
        device: lic.DeviceKeys,
        impu: str = ALICE,
        offer: str = "rent-2d",
        not_after: int = NOW + 600,
        token_id: str | None = None,
    ) -> tuple[int, Any, bytes]:
        token = self.issuer.issue_license(impu, doi, offer, not_after, token_id)
        nonce = os.urandom(16)
        status, answer = self.call(
            "POST", "/license", {"request": lic.make_request(device, token, nonce)}, auth=False
        )
        return status, answer, nonce

    def licensed(self) -> tuple[str, lic.DeviceKeys]:
        doi = self.register()["doi"]
        self.grant(doi)
        return doi, lic.DeviceKeys.generate()

    # -- content ----------------------------------------------------------------

    def test_register_and_look_up(self) -> None:
        answer = self.register()
        self.assertTrue(answer["doi"].startswith("10.5555/imsp2p."))
        status, info = self.call("GET", "/content/" + answer["doi"])
        self.assertEqual(status, 200)
        self.assertEqual(
            info,
            {
                "doi": answer["doi"],
                "owner": CAROL,
                "key_id": answer["key_id"],
                "info_hash": None,
                "state": "registered",
            },
        )

    def test_register_needs_a_valid_publisher_token(self) -> None:
        license_token = self.issuer.issue_license(CAROL, "10.5555/x", "o", NOW + 60)
        expired = self.issuer.issue_publisher(CAROL, NOW - 1)
        forged = Issuer(Ed25519PrivateKey.generate()).issue_publisher(CAROL, NOW + 60)
        for token, status, code in [
            (license_token, 403, "wrong_token"),
            (expired, 403, "token_expired"),
            (forged, 403, "bad_token"),
            ("garbage", 400, "bad_token"),
        ]:
            got = self.call(
                "POST", "/content", {"publisher_token": token, "content_key": KEY_HEX}, auth=False
            )
            self.assertEqual(got[0], status, got)
            self.assertEqual(got[1]["error"], code)
        bad_key = self.call(
            "POST",
            "/content",
            {"publisher_token": self.issuer.issue_publisher(CAROL, NOW + 60), "content_key": "00"},
        )
        self.assertEqual(bad_key[0], 400)

    def test_content_key_not_in_the_database_in_clear(self) -> None:
        doi = self.register()["doi"]
        self.store.close()
        data = b""
        for suffix in ("", "-wal"):
            if os.path.exists(self.db + suffix):
                with open(self.db + suffix, "rb") as f:
                    data += f.read()
        self.assertIn(doi.encode(), data)  # the right file was read
        self.assertNotIn(bytes.fromhex(KEY_HEX), data)
        self.assertNotIn(KEY_HEX.encode(), data)
        self.assertNotIn(KEY_HEX.upper().encode(), data)

    def test_service_routes_need_the_credential(self) -> None:
        doi = self.register()["doi"]
        for method, path, body in [
            ("GET", "/content/" + doi, None),
            ("PUT", f"/content/{doi}/infohash", {"info_hash": "ab" * 20}),
            ("POST", "/rights", {}),
            ("POST", "/revocations", {}),
            ("GET", "/revocations", None),
        ]:
            status, answer = self.call(method, path, body, auth=False)
            self.assertEqual((status, answer["error"]), (401, "unauthorized"), path)

    def test_bind_infohash(self) -> None:
        doi = self.register()["doi"]
        path = f"/content/{doi}/infohash"
        status, info = self.call("PUT", path, {"info_hash": "ab" * 20})
        self.assertEqual((status, info["state"], info["info_hash"]), (200, "bound", "ab" * 20))
        self.assertEqual(self.call("PUT", path, {"info_hash": "ab" * 20})[0], 200)
        self.assertEqual(
            self.call("PUT", path, {"info_hash": "cd" * 20})[1]["error"], "already_bound"
        )
        other = self.register()["doi"]
        self.assertEqual(
            self.call("PUT", f"/content/{other}/infohash", {"info_hash": "ab" * 20})[0], 409
        )
        self.assertEqual(self.call("PUT", path, {"info_hash": "AB" * 20})[0], 400)
        self.assertEqual(
            self.call("PUT", "/content/10.5555/nope/infohash", {"info_hash": "ab" * 20})[0], 404
        )
        self.assertEqual(self.call("GET", "/content/10.5555/nope")[0], 404)

    # -- rights -------------------------------------------------------------------

    def test_rights_are_idempotent_per_purchase(self) -> None:
        doi = self.register()["doi"]
        first = self.grant(doi)
        self.assertEqual(first["rights"], {"play_seconds_from_first_use": 172800})
        self.assertEqual(self.grant(doi), first)
        self.assertEqual(
            self.call(
                "POST",
                "/rights",
                {"impu": ALICE, "doi": "10.5555/none", "offer": OFFER, "purchase_id": "p"},
            )[0],
            404,
        )
        for offer in [
            {"id": "x"},
            {"id": "x", "rights": {"plays": 0}},
            {"rights": {"plays": 1}},
            {"id": "x", "rights": {"plays": 1}, "devices": "2"},
        ]:
            status, answer = self.call(
                "POST", "/rights", {"impu": ALICE, "doi": doi, "offer": offer, "purchase_id": "p"}
            )
            self.assertEqual((status, answer["error"]), (400, "bad_request"), offer)

    # -- licenses -------------------------------------------------------------------

    def test_license_flow(self) -> None:
        doi, device = self.licensed()
        status, answer, nonce = self.ask(doi, device)
        self.assertEqual(status, 200, answer)
        self.assertEqual(answer["server_time"], NOW)
        guard = lic.LicenseGuard(load_public_key(self.call("GET", "/key")[1]["ed25519"]), device)
        parsed, key, state = guard.accept(answer["license"], lic.PlayerState(), NOW, nonce)
        self.assertEqual(key, bytes.fromhex(KEY_HEX))
        self.assertEqual((parsed.doi, parsed.impu, parsed.first_use), (doi, ALICE, NOW))
        self.assertEqual(parsed.not_after, NOW + 172800)
        self.assertEqual(self.metrics.get("drm_licenses_issued_total").value(), 1)

    def test_same_device_gets_a_consistent_answer(self) -> None:
        doi, device = self.licensed()
        _, first, _ = self.ask(doi, device)
        self.clock.advance(100)
        status, again, nonce = self.ask(doi, device)
        self.assertEqual(status, 200)
        self.assertEqual(again["license_id"], first["license_id"])
        parsed = lic.License.parse(again["license"], self.server_key.public_key())
        self.assertEqual((parsed.first_use, parsed.server_time), (NOW, NOW + 100))

    def test_device_limit(self) -> None:
        doi, device = self.licensed()
        self.assertEqual(self.ask(doi, device)[0], 200)
        status, answer, _ = self.ask(doi, lic.DeviceKeys.generate())
        self.assertEqual((status, answer["error"]), (403, "device_limit"))
        self.grant(doi, offer={**OFFER, "id": "two", "devices": 2})
        for _ in range(2):
            self.assertEqual(self.ask(doi, lic.DeviceKeys.generate(), offer="two")[0], 200)
        self.assertEqual(self.ask(doi, lic.DeviceKeys.generate(), offer="two")[0], 403)

    def test_new_purchase_starts_the_grant_afresh(self) -> None:
        doi, device = self.licensed()
        _, first, _ = self.ask(doi, device)
        self.grant(doi, purchase="p2")
        _, second, _ = self.ask(doi, lic.DeviceKeys.generate())
        self.assertNotEqual(second["license_id"], first["license_id"])

    def test_token_without_the_device_signature_gets_nothing(self) -> None:
        doi, device = self.licensed()
        token = self.issuer.issue_license(ALICE, doi, "rent-2d", NOW + 600)
        request = lic.make_request(device, token, os.urandom(16))
        head = request.split(".")[0]
        other_sig = lic.make_request(lic.DeviceKeys.generate(), token, os.urandom(16)).split(".")[1]
        for body, status in [
            ({"token": token}, 400),
            ({"request": token}, 400),
            ({"request": head}, 400),
            ({"request": head + "." + other_sig}, 403),
            ({"request": request, "token": token}, 400),
        ]:
            got = self.call("POST", "/license", body, auth=False)
            self.assertEqual(got[0], status, body)
            self.assertNotIn("license", got[1])

    def test_token_checks(self) -> None:
        doi, device = self.licensed()
        self.assertEqual(self.ask(doi, device, not_after=NOW - 1)[1]["error"], "token_expired")
        self.assertEqual(self.ask(doi, device, offer="other")[1]["error"], "no_rights")
        self.assertEqual(
            self.ask(doi, device, impu="sip:bob@ims.example.org")[1]["error"], "no_rights"
        )
        self.assertEqual(self.ask("10.5555/none", device)[1]["error"], "unknown_doi")
        tracker = self.issuer.issue_tracker(ALICE, b"\x01" * 20, "consumer", NOW + 60)
        got = self.call(
            "POST",
            "/license",
            {"request": lic.make_request(device, tracker, os.urandom(16))},
            auth=False,
        )
        self.assertEqual((got[0], got[1]["error"]), (403, "wrong_token"))

    def test_expired_rights_get_no_license(self) -> None:
        doi, device = self.licensed()
        self.assertEqual(self.ask(doi, device)[0], 200)
        self.clock.advance(172801)
        status, answer, _ = self.ask(doi, device, not_after=NOW + 10**6)
        self.assertEqual((status, answer["error"]), (403, "rights_expired"))
        self.grant(doi, offer={"id": "until", "rights": {"play_until": NOW}}, purchase="u")
        self.assertEqual(
            self.ask(doi, device, offer="until", not_after=NOW + 10**6)[1]["error"],
            "rights_expired",
        )

    def test_revoked_user_device_doi_and_token_get_no_license(self) -> None:
        doi, device = self.licensed()
        cases = [
            ("impu", ALICE, {}),
            ("device", device.fingerprint, {}),
            ("doi", doi, {}),
            ("token", "tok-1", {"token_id": "tok-1"}),
        ]
        for kind, value, extra in cases:
            with self.subTest(kind=kind):
                self.assertEqual(self.ask(doi, device, **extra)[0], 200)
                status, entry = self.call(
                    "POST", "/revocations", {"kind": kind, "value": value, "reason": "test"}
                )
                self.assertEqual(status, 200, entry)
                status, answer, _ = self.ask(doi, device, **extra)
                self.assertEqual((status, answer["error"]), (403, "revoked"))
                key = f"{kind}:{value}"
                self.store.transact_now(lambda t, key=key: t.delete("drm_revocations", key))
        # a revoked publisher cannot register content
        self.call("POST", "/revocations", {"kind": "impu", "value": CAROL})
        token = self.issuer.issue_publisher(CAROL, NOW + 60)
        got = self.call(
            "POST", "/content", {"publisher_token": token, "content_key": KEY_HEX}, auth=False
        )
        self.assertEqual((got[0], got[1]["error"]), (403, "revoked"))

    def test_revocation_list(self) -> None:
        self.call("POST", "/revocations", {"kind": "impu", "value": ALICE})
        self.clock.advance(10)
        self.call("POST", "/revocations", {"kind": "doi", "value": "10.5555/x"})
        self.call("POST", "/revocations", {"kind": "doi", "value": "10.5555/x"})  # no-op
        status, listing = self.call("GET", "/revocations")
        self.assertEqual(status, 200)
        self.assertEqual(
            [(e["kind"], e["time"]) for e in listing["revocations"]],
            [("impu", NOW), ("doi", NOW + 10)],
        )
        self.assertEqual(listing["server_time"], NOW + 10)
        _, later = self.call("GET", f"/revocations?since={NOW + 5}")
        self.assertEqual([e["value"] for e in later["revocations"]], ["10.5555/x"])
        for bad in ["x", "-1", "nan", "1e99"]:
            self.assertEqual(self.call("GET", f"/revocations?since={bad}")[0], 400, bad)
        for body in [
            {"kind": "user", "value": "x"},
            {"kind": "device", "value": "abc"},
            {"kind": "impu", "value": "alice"},
            {"kind": "token", "value": "a b"},
        ]:
            self.assertEqual(self.call("POST", "/revocations", body)[0], 400, body)

    def test_admin_routes_on_the_control_port(self) -> None:
        from imsp2pd.web import Router

        admin = Router(token="adm", auth_prefix="/admin/")
        make_router(self.core, self.store, self.clock, SERVICE, None, admin)
        stub = StubTreq(admin)

        def call(method: str, path: str, body: Any = None, token: str = "adm") -> tuple[int, Any]:
            d = stub.request(
                method,
                BASE + path,
                headers={"Authorization": f"Bearer {token}"},
                data=None if body is None else json.dumps(body).encode(),
            )
            stub.flush()
            response = self.successResultOf(d)
            return response.code, json.loads(self.successResultOf(response.content()))

        doi = self.register()["doi"]
        self.assertEqual(call("GET", "/admin/drm/content/" + doi)[1]["owner"], CAROL)
        self.assertEqual(call("GET", "/admin/drm/content/" + doi, token=SERVICE)[0], 401)
        self.assertEqual(
            call("POST", "/admin/drm/revocations", {"kind": "doi", "value": doi})[0], 200
        )
        status, listing = call("GET", "/admin/drm/revocations?since=0")
        self.assertEqual([e["value"] for e in listing["revocations"]], [doi])
        # the same list the DRM server itself serves and obeys
        self.assertEqual(self.call("GET", "/revocations")[1]["revocations"], listing["revocations"])

    def test_key_route(self) -> None:
        status, answer = self.call("GET", "/key", auth=False)
        self.assertEqual(status, 200)
        self.assertEqual(len(b64url_decode(answer["ed25519"])), 32)

    # -- robustness -------------------------------------------------------------------

    def test_not_json_and_too_large(self) -> None:
        for path in ("/content", "/license"):
            self.assertEqual(self.call("POST", path, raw=b"{not json", auth=False)[0], 400)
            self.assertEqual(self.call("POST", path, raw=b"\xff\xfe", auth=False)[0], 400)
            self.assertEqual(self.call("POST", path, raw=b"[]", auth=False)[0], 400)
            self.assertEqual(self.call("POST", path, raw=b"", auth=False)[0], 400)
            self.assertEqual(self.call("POST", path, raw=b" " * (65 * 1024), auth=False)[0], 413)

    def test_deep_nesting_and_lone_surrogates_are_4xx(self) -> None:
        for path in ("/content", "/license", "/rights", "/revocations"):
            status, _ = self.call("POST", path, raw=b"[" * 30000 + b"]" * 30000)
            self.assertEqual(status, 400, path)
        doi = self.register()["doi"]
        for body in [
            {"impu": "sip:\ud800@x", "doi": doi, "offer": OFFER, "purchase_id": "p"},
            {"impu": ALICE, "doi": doi, "offer": {**OFFER, "id": "\udfff"}, "purchase_id": "p"},
            {"impu": ALICE, "doi": doi, "offer": OFFER, "purchase_id": "\ud800"},
        ]:
            status, answer = self.call("POST", "/rights", raw=json.dumps(body).encode())
            self.assertEqual(status, 400, answer)
        for body in [
            {"kind": "doi", "value": "\ud800"},
            {"kind": "doi", "value": "x", "reason": "\udc00"},
        ]:
            status, answer = self.call("POST", "/revocations", raw=json.dumps(body).encode())
            self.assertEqual(status, 400, answer)

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        route=st.sampled_from(
            [
                ("POST", "/content"),
                ("POST", "/license"),
                ("POST", "/rights"),
                ("POST", "/revocations"),
                ("PUT", "/content/10.5555/x/infohash"),
            ]
        ),
        body=json_values,
    )
    def test_fuzzed_bodies_never_give_5xx(self, route: tuple[str, str], body: Any) -> None:
        status, answer = self.call(route[0], route[1], body)
        self.assertLess(status, 500, (route, body, answer))
        self.assertGreaterEqual(status, 400)
        self.assertEqual(set(answer), {"error", "message"})

    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        members=st.dictionaries(
            st.sampled_from(
                [
                    "publisher_token",
                    "content_key",
                    "request",
                    "impu",
                    "doi",
                    "offer",
                    "purchase_id",
                    "kind",
                    "value",
                    "reason",
                    "info_hash",
                ]
            ),
            json_values,
            max_size=5,
        ),
        route=st.sampled_from(["/content", "/license", "/rights", "/revocations"]),
    )
    def test_fuzzed_members_never_give_5xx(self, members: dict, route: str) -> None:
        status, answer = self.call("POST", route, members)
        self.assertLess(status, 500, (route, members, answer))

    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(path=st.text(max_size=40))
    def test_fuzzed_dois_never_give_5xx(self, path: str) -> None:
        from urllib.parse import quote

        status, _ = self.call("GET", "/content/" + quote(path, safe=""))
        self.assertLess(status, 500)
