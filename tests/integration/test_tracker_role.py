"""The tracker role over loopback HTTP: built from a config, restarted, admin API via StubTreq."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from imsp2pd import entitlement
from imsp2pd.bittorrent.bencoding import bdecode
from imsp2pd.bittorrent.tracker import SwarmState
from imsp2pd.config import ConfigError, load_config
from imsp2pd.control import admin_router
from imsp2pd.metrics import Registry
from imsp2pd.roles import Hub
from imsp2pd.store import SQLiteStore
from imsp2pd_roles.tracker import TrackerRole

IH = bytes(range(20))


class TrackerRoleTests(TestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).resolve()
        (self.dir / "etc").mkdir(parents=True)
        self.write_config('[tracker]\nlisten = "127.0.0.1:0"\nrevocations = "off"\ninterval = 60\n')

    def write_config(self, text: str) -> None:
        (self.dir / "etc" / "c.toml").write_text(
            '[admin]\ntoken = "t"\n[daemon]\nstate_dir = "../var"\n' + text
        )

    def start(self) -> Any:
        role = TrackerRole()
        config = load_config(self.dir / "etc" / "c.toml", {"tracker": role.schema})
        role.check(config)
        store = SQLiteStore(self.dir / "var" / "s.sqlite", reactor)
        store.start()
        store.migrate(role.migrations())
        self.admin = admin_router("t")
        hub = Hub(reactor, config, store, Registry(), self.admin, ("tracker",))
        service: Any = role.build(config, store, reactor, hub)
        service.startService()
        self.hub = hub

        def stop() -> Any:
            d = service.stopService()
            d.addBoth(lambda _: store.close())
            return d

        return service, stop

    @inlineCallbacks
    def test_announce_over_loopback_and_registration_survives_restart(self) -> Any:
        service, stop = self.start()
        port = service.port.getHost().port
        yield self.hub.lookup("tracker.swarms").register(IH, "10.5555/t", SwarmState.ACTIVE)
        self.assertIn(("POST", "/admin/swarms/{infohash}/{action}"), self.admin.routes())
        # The AS key was made at first start; sign a token with it as the AS would.
        key = entitlement.load_or_create_private_key(self.dir / "var" / "keys")
        token = entitlement.Issuer(key).issue_tracker(
            "sip:alice@ims.example.org", IH, "consumer", 2**40
        )
        url = (
            f"http://127.0.0.1:{port}/announce?info_hash={quote_from_bytes(IH)}"
            f"&peer_id=-IM0001-abcdefghijkl&port=6881&uploaded=0&downloaded=0&left=5&token={token}"
        )
        response = yield treq.get(url, persistent=False)
        body = bdecode((yield response.content()))
        self.assertEqual((body[b"interval"], body[b"incomplete"]), (60, 1))
        self.assertEqual(self.hub.lookup("tracker").peer_count, 1)
        self.assertTrue(self.hub.health_checks["tracker"]()["ok"])
        yield stop()
        service, stop = self.start()
        self.assertEqual(self.hub.lookup("tracker").stats(IH)[0].doi, "10.5555/t")
        yield stop()

    def test_config_checks(self) -> None:
        role = TrackerRole()
        for text, words in [
            ("[tracker]\ninterval = 60\nmin_interval = 120\n", "min_interval"),
            ("[tracker]\ninterval = 60\npeer_expiry = 60\n", "peer_expiry"),
            ("[tracker]\nnumwant = 500\n", "numwant"),
            ('[tracker]\nlisten = "nowhere"\n', "listen"),
            ('[tracker]\nrevocations = "maybe"\n', "revocations"),
        ]:
            self.write_config(text)
            with self.assertRaises(ConfigError) as ctx:
                config = load_config(self.dir / "etc" / "c.toml", {"tracker": role.schema})
                role.check(config)
            self.assertIn(words, str(ctx.exception))

    def test_bad_public_key_is_one_line(self) -> None:
        self.write_config('[tracker]\nlisten = "127.0.0.1:0"\nas_public_key = "nope"\n')
        role = TrackerRole()
        config = load_config(self.dir / "etc" / "c.toml", {"tracker": role.schema})
        store = SQLiteStore(self.dir / "var" / "s.sqlite")
        store.migrate(role.migrations())
        self.addCleanup(store.close)
        hub = Hub(reactor, config, store, Registry(), admin_router("t"), ("tracker",))
        with self.assertRaises(ConfigError) as ctx:
            role.build(config, store, reactor, hub)
        self.assertIn("as_public_key", str(ctx.exception))
