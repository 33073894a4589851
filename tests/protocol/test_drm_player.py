"""The player against the DRM server's routes in memory: fetch a license, play content."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from imsp2pd.drm import container, files, player
from imsp2pd.drm.http import make_router
from imsp2pd.drm.keystore import MIN_SCRYPT_N, Keystore
from imsp2pd.drm.server import MIGRATIONS, DrmCore, MasterKey
from imsp2pd.entitlement import Issuer, Verifier
from imsp2pd.store import SQLiteStore

NOW = 1_800_000_000
ALICE = "sip:alice@ims.example.org"
CAROL = "sip:carol@ims.example.org"
KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
P = container.MIN_PIECE_LENGTH


class PlayerTests(TestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        store = SQLiteStore(self.dir / "db")
        store.migrate(MIGRATIONS)
        self.addCleanup(store.close)
        self.issuer = Issuer(Ed25519PrivateKey.generate())
        core = DrmCore(
            signing_key=Ed25519PrivateKey.generate(),
            as_verifier=Verifier(self.issuer.public_key),
            master_key=MasterKey(os.urandom(32)),
        )
        self.clock = Clock()
        self.clock.advance(NOW)
        self.http = StubTreq(make_router(core, store, self.clock, "svc", None))
        # register content, protect a file with its key, grant 2 plays to alice
        status, reg = self.transport(
            "POST",
            "https://drm/content",
            {
                "publisher_token": self.issuer.issue_publisher(CAROL, NOW + 60),
                "content_key": KEY.hex(),
            },
        )
        self.assertEqual(status, 201)
        self.doi, self.key_id = reg["doi"], reg["key_id"]
        self.plain = os.urandom(3 * P + 5)
        (self.dir / "movie").write_bytes(self.plain)
        files.protect_file(
            self.dir / "movie",
            self.dir / "movie.c",
            doi=self.doi,
            key_id=self.key_id,
            key=KEY,
            piece_length=P,
        )
        self.transport(
            "POST",
            "https://drm/rights",
            {
                "impu": ALICE,
                "doi": self.doi,
                "purchase_id": "p",
                "offer": {"id": "o", "rights": {"plays": 2, "play_seconds_from_first_use": 3600}},
            },
            auth=True,
        )
        self.keystore = Keystore.open_or_create(self.dir / "ks", "pw", scrypt_n=MIN_SCRYPT_N)
        self.time = float(NOW)

    def transport(self, method: str, url: str, body: Any, auth: bool = False) -> tuple[int, Any]:
        headers = {"Authorization": "Bearer svc"} if auth else {}
        d = self.http.request(
            method, url, data=None if body is None else json.dumps(body).encode(), headers=headers
        )
        self.http.flush()
        response = self.successResultOf(d)
        return response.code, json.loads(self.successResultOf(response.content()))

    def now(self) -> float:
        return self.time

    def fetch(self, keystore: Keystore | None = None, offer: str = "o") -> player.Fetched:
        token = self.issuer.issue_license(ALICE, self.doi, offer, NOW + 600)
        return player.fetch_license(
            "https://drm",
            token,
            keystore or Keystore.open(self.dir / "ks", "pw"),  # fresh, as every command
            "pw",
            self.dir / "lic",
            transport=self.transport,
            now=self.now,
        )

    def play(self, out: Any = None, content: Path | None = None) -> Any:
        ks = Keystore.open(self.dir / "ks", "pw")
        return player.play(
            self.dir / "lic",
            content or self.dir / "movie.c",
            out if out is not None else self.dir / "out",
            ks,
            "pw",
            now=self.now,
        )

    def test_fetch_and_play_counts_plays(self) -> None:
        fetched = self.fetch()
        self.assertEqual(fetched.license.doi, self.doi)
        self.assertEqual(len(Keystore.open(self.dir / "ks", "pw").state.trusted_keys), 1)
        self.play()
        self.assertEqual((self.dir / "out").read_bytes(), self.plain)
        sink = io.BytesIO()
        self.play(sink)
        self.assertEqual(sink.getvalue(), self.plain)
        with self.assertRaisesRegex(player.PlayerError, "all 2 plays have been used"):
            self.play(self.dir / "out3")
        self.assertFalse((self.dir / "out3").exists())

    def test_refetching_does_not_reset_the_play_count(self) -> None:
        self.fetch()
        self.play()
        self.play()
        self.time += 10
        self.clock.advance(10)
        self.fetch()
        with self.assertRaisesRegex(player.PlayerError, "plays have been used"):
            self.play()

    def test_expired_license_and_rolled_back_clock(self) -> None:
        self.fetch()
        self.time = NOW + 3601
        with self.assertRaisesRegex(player.PlayerError, "expired"):
            self.play()
        self.time = NOW + 5  # set back to inside the window
        with self.assertRaisesRegex(player.PlayerError, "set back"):
            self.play()

    def test_server_refusals_are_named(self) -> None:
        with self.assertRaisesRegex(player.PlayerError, "403 no_rights"):
            self.fetch(offer="nope")

    def test_another_device_cannot_play(self) -> None:
        self.fetch()
        other = Keystore.open_or_create(self.dir / "ks2", "pw", scrypt_n=MIN_SCRYPT_N)
        other = other.with_state(Keystore.open(self.dir / "ks", "pw").state)  # even knowing keys
        other.save("pw")
        with self.assertRaisesRegex(player.PlayerError, "another device"):
            player.play(
                self.dir / "lic", self.dir / "movie.c", self.dir / "out", other, "pw", now=self.now
            )
        self.assertFalse((self.dir / "out").exists())

    def test_tampered_license_or_content_refused_without_counting(self) -> None:
        self.fetch()
        blob = (self.dir / "lic").read_text().strip()
        head, sig = blob.split(".")
        (self.dir / "lic.bad").write_text(
            head[:-2] + ("AA" if head[-2:] != "AA" else "BA") + "." + sig
        )
        ks = Keystore.open(self.dir / "ks", "pw")
        with self.assertRaises(player.PlayerError):
            player.play(
                self.dir / "lic.bad", self.dir / "movie.c", self.dir / "out", ks, "pw", now=self.now
            )
        data = bytearray((self.dir / "movie.c").read_bytes())
        data[2 * P + 3] ^= 1
        (self.dir / "bad.c").write_bytes(data)
        sink = io.BytesIO()
        with self.assertRaises(container.SegmentCorruptError):
            self.play(sink, self.dir / "bad.c")
        self.assertEqual(sink.getvalue(), b"")
        license_id = self.play().license_id
        state = Keystore.open(self.dir / "ks", "pw").state
        self.assertEqual(state.seen[license_id][1], 1)  # the failed attempt did not count

    def test_license_for_other_content_refused(self) -> None:
        self.fetch()
        files.protect_file(
            self.dir / "movie",
            self.dir / "other.c",
            doi="10.5555/other",
            key_id="k",
            key=KEY,
            piece_length=P,
        )
        with self.assertRaisesRegex(player.PlayerError, "the license is for"):
            self.play(content=self.dir / "other.c")

    def test_play_before_any_fetch(self) -> None:
        (self.dir / "lic").write_text("x.y\n")
        with self.assertRaisesRegex(player.PlayerError, "fetch a license first"):
            self.play()

    def test_register_content(self) -> None:
        token = self.issuer.issue_publisher(CAROL, NOW + 60)
        doi, key_id = player.register_content("https://drm/", token, KEY, transport=self.transport)
        self.assertTrue(doi.startswith("10.5555/") and key_id.startswith("k-"))
        self.assertNotEqual(doi, self.doi)
        with self.assertRaisesRegex(player.PlayerError, "POST /content: 403 token_expired"):
            player.register_content(
                "https://drm",
                self.issuer.issue_publisher(CAROL, NOW - 1),
                KEY,
                transport=self.transport,
            )
