"""libtorrent announces to our tracker: admitted with a token, refused without."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from imsp2pd.bittorrent.metainfo import make_metainfo
from imsp2pd.bittorrent.tracker import SwarmState, Tracker, TrackerConfig
from imsp2pd.bittorrent.tracker_http import TrackerResource
from imsp2pd.entitlement import Issuer, Verifier
from imsp2pd.web import make_site

reactor: Any = _reactor
lt: Any
try:
    import libtorrent as lt
except ImportError:  # pragma: no cover
    lt = None


def lt_session() -> Any:
    settings = {
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "alert_mask": lt.alert.category_t.tracker_notification
        | lt.alert.category_t.error_notification,
    }
    return lt.session(settings)


class LibtorrentTrackerTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        if lt is None:
            raise SkipTest("libtorrent Python bindings are not installed (pip install libtorrent)")
        self.issuer = Issuer(Ed25519PrivateKey.generate())
        self.tracker = Tracker(
            Verifier(self.issuer.public_key),
            TrackerConfig(interval=60, min_interval=10, peer_expiry=120),
        )
        site = make_site(TrackerResource(self.tracker, reactor.seconds), reactor=reactor)
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir(parents=True)
        (self.dir / "content.bin").write_bytes(os.urandom(300_000))

    def torrent(self, token: str | None) -> Any:
        url = f"http://127.0.0.1:{self.port.getHost().port}/announce"
        if token is not None:
            url += f"?token={token}"
        meta = make_metainfo(self.dir / "content.bin", url, piece_length=64 * 1024)
        self.tracker.register(meta.info_hash, "10.5555/lt", SwarmState.ACTIVE)
        return meta

    @inlineCallbacks
    def wait_tracker_alert(self, session: Any) -> Any:
        for _ in range(400):
            for alert in session.pop_alerts():
                if isinstance(alert, (lt.tracker_reply_alert, lt.tracker_error_alert)):
                    return alert
            yield deferLater(reactor, 0.05, lambda: None)
        self.fail("libtorrent never heard from the tracker")

    def add(self, session: Any, meta: Any) -> Any:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(meta.to_bytes())
        params.save_path = str(self.dir)
        return session.add_torrent(params)

    @inlineCallbacks
    def test_admitted_with_a_token(self) -> Any:
        meta = make_metainfo(self.dir / "content.bin", "http://x/announce", piece_length=64 * 1024)
        token = self.issuer.issue_tracker(
            "sip:carol@ims.example.org", meta.info_hash, "provider", 2**40
        )
        meta = self.torrent(token)
        session = lt_session()
        self.add(session, meta)
        alert = yield self.wait_tracker_alert(session)
        self.assertIsInstance(
            alert, lt.tracker_reply_alert, getattr(alert, "message", lambda: "")()
        )
        self.assertEqual(self.tracker.peer_count, 1)
        [stats] = self.tracker.stats(meta.info_hash)
        self.assertEqual(stats.seeders + stats.leechers, 1)
        del session

    @inlineCallbacks
    def test_refused_without_or_with_a_bad_token(self) -> Any:
        for token in (None, "forged.token"):
            meta = self.torrent(token)
            session = lt_session()
            self.add(session, meta)
            alert = yield self.wait_tracker_alert(session)
            self.assertIsInstance(alert, lt.tracker_error_alert)
            self.assertEqual(self.tracker.peer_count, 0)
            del session
