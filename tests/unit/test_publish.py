"""The AS's content injection with fake DRM and tracker back ends and a real catalogue."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet.defer import fail, succeed
from twisted.python.failure import Failure

from imsp2pd.bittorrent.metainfo import make_metainfo
from imsp2pd.content import multipart
from imsp2pd.content.catalogue import MIGRATIONS, AssetState, Catalogue
from imsp2pd.content.publish import BadPublication, PublishDesk, split_publication
from imsp2pd.content.purchase import NotAllowed, UnknownContent
from imsp2pd.entitlement import Issuer, Verifier
from imsp2pd.store import SQLiteStore

CAROL = "sip:carol@ims.example.org"
MALLORY = "sip:mallory@ims.example.org"
DOI = "10.5555/imsp2p.film1"
META = {
    "title": "Film One",
    "description": "A film",
    "genre": "drama",
    "offers": [
        {
            "id": "rent",
            "price": "2.50",
            "currency": "EUR",
            "rights": {"play_seconds_from_first_use": 3600},
            "devices": 2,
        }
    ],
}


class FakeDRM:
    def __init__(self) -> None:
        self.owners = {DOI: CAROL, "10.5555/imsp2p.other": MALLORY}
        self.bound: dict[str, str] = {}
        self.revoked: list[str] = []

    def content(self, doi):
        owner = self.owners.get(doi)
        return succeed(None if owner is None else {"doi": doi, "owner": owner})

    def bind(self, doi, info_hash):
        if self.bound.get(doi, info_hash) != info_hash:
            return fail(NotAllowed("bound to another info-hash"))
        self.bound[doi] = info_hash
        return succeed(None)

    def revoke_doi(self, doi, reason):
        self.revoked.append(doi)
        return succeed(None)


class FakeTrackers:
    def __init__(self) -> None:
        self.load = {"http://127.0.0.1:6969": 5, "http://127.0.0.1:6970": 1}
        self.swarms: dict[str, str] = {}

    def least_loaded(self):
        return succeed(min(self.load, key=self.load.get))

    def register(self, tracker, info_hash, doi):
        self.swarms.setdefault(info_hash, "muted")
        return succeed(None)

    def unmute(self, tracker, info_hash):
        self.swarms[info_hash] = "open"
        return succeed(None)

    def disable(self, tracker, info_hash):
        self.swarms[info_hash] = "disabled"
        return succeed(None)


def result(d):
    out: list = []
    d.addBoth(out.append)
    assert out, "did not finish"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


@pytest.fixture
def env(tmp_path: Path):
    store = SQLiteStore(tmp_path / "as.sqlite")
    store.migrate(MIGRATIONS)
    key = Ed25519PrivateKey.generate()
    catalogue = Catalogue(store, lambda: 1000.0)
    drm, trackers, listed = FakeDRM(), FakeTrackers(), []
    desk = PublishDesk(
        catalogue, drm, trackers, Issuer(key), [CAROL], lambda: 1000.0, on_listed=listed.append
    )
    content = tmp_path / "film.bin"
    content.write_bytes(b"x" * 100_000)

    def body(doi=DOI, private=True, meta=META, torrent=None):
        if torrent is None:
            torrent = make_metainfo(content, None, doi=doi, private=private).to_bytes()
        return multipart.build(
            [
                multipart.Part("application/x-bittorrent", torrent),
                multipart.Part("application/json", json.dumps(meta).encode()),
            ]
        )

    return desk, catalogue, drm, trackers, key, body, listed


def test_publish_registers_muted_and_hands_a_provider_token(env) -> None:
    desk, catalogue, drm, trackers, key, body, listed = env
    pub = result(desk.publish(CAROL, *body()))
    assert pub.doi == DOI and pub.state == "pending"
    assert drm.bound == {DOI: pub.info_hash}
    assert trackers.swarms == {pub.info_hash: "muted"}
    assert pub.announce_url.startswith("http://127.0.0.1:6970/announce?token=")  # least loaded
    token = Verifier(key.public_key()).verify_tracker(
        unquote(pub.announce_url.split("=", 1)[1]), 1000
    )
    assert (token.impu, token.role, token.info_hash.hex()) == (CAROL, "provider", pub.info_hash)
    asset = result(catalogue.get(DOI))
    assert asset.state is AssetState.PENDING and asset.tracker == "http://127.0.0.1:6970"
    assert result(catalogue.listed()) == []
    # the same PUBLISH again is the same publication
    again = result(desk.publish(CAROL, *body()))
    assert (again.doi, again.info_hash) == (pub.doi, pub.info_hash)
    # complete at the seeder: unmuted and listed, listeners told
    listed_asset = result(desk.complete(pub.info_hash))
    assert listed_asset.state is AssetState.LISTED and listed == [listed_asset]
    assert trackers.swarms[pub.info_hash] == "open"
    assert [a.doi for a in result(catalogue.listed())] == [DOI]
    seeder = result(desk.seeder_token("sip:seeder@ims.example.org", pub.info_hash))
    assert "/announce?token=" in seeder


def test_only_trusted_publishers_and_owners(env) -> None:
    desk, catalogue, drm, trackers, key, body, _ = env
    with pytest.raises(NotAllowed):
        result(desk.publish(MALLORY, *body()))
    with pytest.raises(NotAllowed):
        desk.publisher_token(MALLORY)
    token, not_after = desk.publisher_token(CAROL)
    assert Verifier(key.public_key()).verify_publisher(token, 1000).impu == CAROL
    with pytest.raises(NotAllowed, match="another publisher"):
        result(desk.publish(CAROL, *body(doi="10.5555/imsp2p.other")))
    with pytest.raises(UnknownContent):
        result(desk.publish(CAROL, *body(doi="10.5555/imsp2p.unknown")))
    assert drm.bound == {} and trackers.swarms == {}


@pytest.mark.parametrize(
    ("kwargs", "fault"),
    [
        ({"private": False}, "private"),
        (
            {
                "meta": {
                    "title": "x",
                    "offers": [
                        {"id": "a", "price": "-1", "currency": "EUR", "rights": {"plays": 1}}
                    ],
                }
            },
            "price",
        ),
        ({"meta": {**META, "doi": "10.5555/imsp2p.zzz"}}, "is not the .torrent's"),
        ({"torrent": b"not bencode"}, "not valid"),
    ],
)
def test_bad_publications_change_nothing(env, kwargs, fault: str) -> None:
    desk, catalogue, drm, trackers, key, body, _ = env
    with pytest.raises(BadPublication, match=fault) as e:
        result(desk.publish(CAROL, *body(**kwargs)))
    assert e.value.status == 400
    assert drm.bound == {} and trackers.swarms == {}


def test_split_publication_needs_both_parts() -> None:
    ctype, body = multipart.build([multipart.Part("application/json", b"{}")])
    with pytest.raises(BadPublication, match="one application/x-bittorrent part"):
        split_publication(ctype, body)
    with pytest.raises(BadPublication, match="multipart/mixed"):
        split_publication("application/json", b"{}")
    ctype, body = multipart.build(
        [
            multipart.Part("application/x-bittorrent", b"d"),
            multipart.Part("application/json", b"{nope"),
        ]
    )
    with pytest.raises(BadPublication, match="not JSON"):
        split_publication(ctype, body)


def test_removal_by_publisher_and_takedown(env) -> None:
    desk, catalogue, drm, trackers, key, body, _ = env
    pub = result(desk.publish(CAROL, *body()))
    result(desk.complete(pub.info_hash))
    with pytest.raises(NotAllowed):
        result(desk.remove(DOI, MALLORY))
    asset = result(desk.remove(DOI, CAROL))
    assert asset.state is AssetState.REMOVED
    assert trackers.swarms[pub.info_hash] == "disabled" and drm.revoked == [DOI]
    assert result(catalogue.listed()) == []
    with pytest.raises(NotAllowed, match="taken down"):
        result(desk.publish(CAROL, *body()))
    with pytest.raises(UnknownContent):
        result(desk.remove("10.5555/none", None))


def test_deeply_nested_metadata_is_a_bad_publication() -> None:
    ctype, body = multipart.build(
        [
            multipart.Part("application/x-bittorrent", b"d"),
            multipart.Part("application/json", b"[" * 100_000),
        ]
    )
    with pytest.raises(BadPublication, match="not JSON"):
        split_publication(ctype, body)
