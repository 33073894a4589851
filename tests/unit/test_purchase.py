"""The AS's purchase logic with fake back ends and a real (inline) SQLite store."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from imsp2pd.content.purchase import (
    MIGRATIONS,
    PURCHASES,
    BackendDown,
    BadPurchase,
    DeskConfig,
    Grant,
    NoCredit,
    NotAllowed,
    PricedOffer,
    PurchaseDesk,
    PurchaseRequest,
    ServiceError,
    UnknownContent,
)
from imsp2pd.entitlement import Issuer, Verifier
from imsp2pd.store import SQLiteStore

ALICE = "sip:alice@ims.example.org"
BOB = "sip:bob@ims.example.org"
DOI = "10.5555/film-1"
HASH = "ab" * 20
OFFER = PricedOffer(
    DOI,
    "rent-48h",
    Decimal("2.50"),
    "EUR",
    {"play_seconds_from_first_use": 172800},
    2,
    HASH,
    "http://127.0.0.1:6969",
)


class FakeOffers:
    def priced_offer(self, doi, offer_id):
        return succeed(OFFER if (doi, offer_id) == (DOI, OFFER.offer_id) else None)


class FakeOCS:
    """Debits keyed by Session-Id, as the real OCS does: a repeat is not charged again."""

    def __init__(self, balance: str = "10.00") -> None:
        self.balance = Decimal(balance)
        self.debits: dict[str, Decimal] = {}
        self.refunds: dict[str, Decimal] = {}
        self.down = False
        self.refund_down = False
        self.hold: Deferred | None = None
        self.calls = 0

    def debit(self, charge):
        self.calls += 1
        if self.down:
            return fail(BackendDown("OCS unreachable"))
        if charge.session_id not in self.debits:
            if charge.amount > self.balance:
                return fail(NoCredit("credit limit reached"))
            self.balance -= charge.amount
            self.debits[charge.session_id] = charge.amount
        if self.hold is not None:
            return self.hold
        return succeed(None)

    def refund(self, charge):
        if self.refund_down:
            return fail(BackendDown("OCS unreachable"))
        if charge.session_id not in self.refunds:
            self.refunds[charge.session_id] = charge.amount
            self.balance += charge.amount
        return succeed(None)


class FakeDRM:
    def __init__(self) -> None:
        self.error: Exception | None = None
        self.authorised: list[tuple[str, str, str]] = []

    def authorise(self, purchase_id, impu, offer):
        if self.error is not None:
            return fail(self.error)
        self.authorised.append((purchase_id, impu, offer.offer_id))
        return succeed(None)


class Harness:
    def __init__(self, tmp_path: Path, balance: str = "10.00") -> None:
        self.store = SQLiteStore(tmp_path / "as.sqlite")
        self.store.migrate(MIGRATIONS)
        self.key = Ed25519PrivateKey.generate()
        self.ocs = FakeOCS(balance)
        self.drm = FakeDRM()
        self.now = 1_800_000_000.0
        self.desk = self.make_desk()

    def make_desk(self) -> PurchaseDesk:
        return PurchaseDesk(
            self.store,
            FakeOffers(),
            self.ocs,
            self.drm,
            Issuer(self.key),
            DeskConfig(
                "as.ims.example.org", "http://127.0.0.1:8080", "https://127.0.0.1:8443/license"
            ),
            lambda: self.now,
        )

    def buy(self, pid: str, impu: str = ALICE, doi: str = DOI, offer: str = "rent-48h"):
        d = self.desk.purchase(impu, "icid-1", PurchaseRequest(pid, doi, offer))
        out: list = []
        d.addBoth(out.append)
        assert out, "the purchase did not finish"
        if isinstance(out[0], Failure):
            out[0].raiseException()
        return out[0]

    def record(self, pid: str) -> dict:
        return self.store.transact_now(lambda t: t.get(PURCHASES, pid))


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def pid() -> str:
    return str(uuid.uuid4())


def test_a_purchase_charges_authorises_and_grants(h: Harness) -> None:
    p = pid()
    grant = h.buy(p)
    assert isinstance(grant, Grant)
    assert h.ocs.balance == Decimal("7.50")
    assert h.drm.authorised == [(p, ALICE, "rent-48h")]
    assert grant.torrent_url == f"http://127.0.0.1:8080/torrents/{HASH}.torrent"
    assert grant.announce_url.startswith("http://127.0.0.1:6969/announce?token=")
    v = Verifier(h.key.public_key())
    tracker = v.verify_tracker(unquote(grant.announce_url.split("token=")[1]), h.now)
    assert (tracker.impu, tracker.info_hash.hex(), tracker.role) == (ALICE, HASH, "consumer")
    lic = v.verify_license(grant.license_token, h.now)
    assert (lic.impu, lic.doi, lic.offer) == (ALICE, DOI, "rent-48h")
    assert grant.expires == int(h.now) + 7 * 24 * 3600
    assert h.record(p)["state"] == "granted"
    assert set(grant.to_json()) == {
        "purchase_id",
        "doi",
        "offer",
        "torrent_url",
        "announce_url",
        "license_url",
        "license_token",
        "expires",
    }


def test_the_same_purchase_id_never_charges_twice(h: Harness) -> None:
    p = pid()
    first = h.buy(p)
    second = h.buy(p)
    assert first == second
    assert h.ocs.calls == 1
    assert h.ocs.balance == Decimal("7.50")
    # even from a new AS process over the same store
    h.desk = h.make_desk()
    assert h.buy(p) == first
    assert h.ocs.calls == 1


def test_no_credit_is_402_and_charges_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path, balance="1.00")
    p = pid()
    with pytest.raises(NoCredit) as e:
        h.buy(p)
    assert e.value.status == 402
    assert h.record(p)["state"] == "declined"
    assert h.drm.authorised == []
    h.ocs.balance = Decimal("5")
    h.buy(p)  # a new attempt with a new Session-Id
    assert list(h.ocs.debits) == [f"as.ims.example.org;purchase;{p};2"]


def test_unknown_offer_or_doi_is_404_before_any_charge(h: Harness) -> None:
    with pytest.raises(UnknownContent):
        h.buy(pid(), offer="nope")
    with pytest.raises(UnknownContent):
        h.buy(pid(), doi="10.5555/other")
    assert h.ocs.calls == 0


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotAllowed("device limit"), 403),
        (UnknownContent("revoked DOI"), 404),
        (RuntimeError("bug"), 500),
    ],
)
def test_failure_after_the_charge_refunds(h: Harness, error: Exception, status: int) -> None:
    h.drm.error = error
    p = pid()
    with pytest.raises(ServiceError) as e:
        h.buy(p)
    assert e.value.status == status
    if status == 500:
        assert e.value.retry_after
    assert h.ocs.balance == Decimal("10.00")
    assert list(h.ocs.refunds) == [f"as.ims.example.org;purchase;{p};1;refund"]
    assert h.record(p)["state"] == "refunded"


def test_a_lost_debit_answer_is_retried_with_the_same_session(h: Harness) -> None:
    p = pid()
    h.ocs.down = True
    with pytest.raises(BackendDown) as e:
        h.buy(p)
    assert e.value.status == 500 and e.value.retry_after
    assert h.record(p)["state"] == "charging"
    h.ocs.down = False
    h.buy(p)
    h.buy(p)
    assert list(h.ocs.debits) == [f"as.ims.example.org;purchase;{p};1"]
    assert h.ocs.balance == Decimal("7.50")


def test_a_crash_mid_charge_resumes_without_charging_twice(h: Harness) -> None:
    p = pid()
    h.ocs.hold = Deferred()  # the OCS debits but its answer never arrives
    h.desk.purchase(ALICE, "icid-1", PurchaseRequest(p, DOI, "rent-48h"))
    assert h.record(p)["state"] == "charging"
    h.ocs.hold = None
    h.desk = h.make_desk()  # the AS restarted
    h.buy(p)
    assert h.ocs.balance == Decimal("7.50")
    assert len(h.ocs.debits) == 1


def test_concurrent_duplicates_share_one_attempt(h: Harness) -> None:
    p = pid()
    hold: Deferred = Deferred()
    h.ocs.hold = hold
    req = PurchaseRequest(p, DOI, "rent-48h")
    results: list = []
    h.desk.purchase(ALICE, "icid-1", req).addCallback(results.append)
    h.desk.purchase(ALICE, "icid-1", req).addCallback(results.append)
    assert results == []
    hold.callback(None)
    assert len(results) == 2 and results[0] == results[1]
    assert h.ocs.calls == 1


def test_a_purchase_id_is_bound_to_its_buyer_and_content(h: Harness) -> None:
    p = pid()
    h.buy(p)
    with pytest.raises(NotAllowed):
        h.buy(p, impu=BOB)
    with pytest.raises(BadPurchase):
        h.buy(p, offer="buy")


def test_a_failed_refund_keeps_the_record_charged_and_a_retry_never_charges_again(
    h: Harness,
) -> None:
    h.drm.error = RuntimeError("DRM down")
    h.ocs.refund_down = True
    p = pid()
    with pytest.raises(BackendDown, match="refund is pending"):
        h.buy(p)
    assert h.record(p)["state"] == "charged"
    assert h.ocs.balance == Decimal("7.50")
    h.drm.error = None
    h.ocs.refund_down = False
    h.buy(p)  # the DRM server is back: the same purchase goes on from the debit
    assert h.ocs.calls == 1
    assert h.ocs.balance == Decimal("7.50")
    assert h.record(p)["state"] == "granted"


@pytest.mark.parametrize(
    ("body", "fault"),
    [
        ([], "JSON object"),
        ({"purchase_id": "x", "doi": DOI, "offer": "a"}, "UUID"),
        ({"purchase_id": str(uuid.uuid4()), "doi": "nodoi", "offer": "a"}, "DOI"),
        ({"purchase_id": str(uuid.uuid4()), "doi": DOI, "offer": "a b"}, "offer id"),
        (
            {"purchase_id": str(uuid.uuid4()), "doi": DOI, "offer": "a", "price": "0"},
            "unknown purchase field",
        ),
        ({"purchase_id": 5, "doi": DOI, "offer": "a"}, "UUID"),
    ],
)
def test_bad_bodies_are_400_naming_the_fault(body, fault: str) -> None:
    with pytest.raises(BadPurchase, match=fault) as e:
        PurchaseRequest.from_json(body)
    assert e.value.status == 400


def test_purchase_ids_are_normalised() -> None:
    u = uuid.uuid4()
    r = PurchaseRequest.from_json({"purchase_id": str(u).upper(), "doi": DOI, "offer": "a"})
    assert r.purchase_id == str(u)
