"""Hss.handle from the cache: a request processed once, its writes committed alone.

The careful path (:meth:`Hss.process` inside a store transaction) is the
reference: whatever the order in which commits land, the store ends as it
does when each request runs in its own transaction, one after the other,
and the answers of writing requests are the same.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from imsp2pd.diameter import cx
from imsp2pd.diameter.codes import CxResult, ServerAssignmentType
from imsp2pd.diameter.dictionary import default_dictionary
from imsp2pd.diameter.message import Message, decode_message
from imsp2pd.ims.hss import (
    IDENTITIES,
    MIGRATIONS,
    SUBSCRIBERS,
    Hss,
    HssConfig,
    content_ifcs,
    ifc_documents,
)
from imsp2pd.store import SQLiteStore, StoreError

D = default_dictionary()
REALM = "ims.example.org"
SCSCF = cx.Origin("scscf.ims.example.org", REALM)
ICSCF = cx.Origin("icscf.ims.example.org", REALM)
SCSCF_URI = "sip:scscf.ims.example.org:6060"
OTHER_URI = "sip:other.ims.example.org:6060"
PSI = "sip:content@ims.example.org"
AS_URI = "sip:as.ims.example.org:7060"
K, OP = "465b5ce8b199b49faa5f0a2ee238a6bc", "cdc202d5123e20f62b6d676ac72cb318"
USERS = ("alice", "bob", "carol")


def impi(user: str) -> str:
    return f"{user}@{REALM}"


def impus(user: str) -> list[str]:
    return [f"sip:{user}@{REALM}", f"sip:{user}.2@{REALM}"]


def provision(hss: Hss, txn: Any) -> None:
    ifcs = ifc_documents(content_ifcs(PSI, AS_URI))
    for user in USERS:
        aka = {"k": K, "op": OP} if user == "bob" else None
        hss.put_subscriber(txn, impi(user), impus(user), password=user, aka=aka, ifcs=ifcs)
    hss.put_psi(txn, PSI, AS_URI)


class HeldStore:
    """A store whose transactions wait in order until released (as the worker's do)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.queue: list[tuple[Callable[[Any], Any], Deferred[Any]]] = []
        self.count = 0
        self.broken = False

    def transact(self, fn: Callable[[Any], Any]) -> Deferred[Any]:
        self.count += 1
        d: Deferred[Any] = Deferred()
        self.queue.append((fn, d))
        return d

    def release(self, n: int | None = None) -> None:
        batch, self.queue = self.queue[:n], self.queue[len(self.queue[:n]) :]
        for fn, d in batch:
            if self.broken:
                d.errback(Failure(StoreError("disk on fire")))
                continue
            try:
                result = self.store.transact_now(fn)
            except Exception:
                d.errback(Failure())
            else:
                d.callback(result)


def make(tmp: Path, name: str) -> tuple[Hss, SQLiteStore]:
    store = SQLiteStore(tmp / f"{name}.sqlite")
    store.migrate(MIGRATIONS)
    counter = iter(range(1, 10**6))
    hss = Hss(HssConfig(), store, random_bytes=lambda n: bytes([next(counter) % 256]) * n)
    store.transact_now(lambda txn: provision(hss, txn))
    return hss, store


def contents(store: SQLiteStore) -> dict[str, Any]:
    return store.transact_now(lambda t: {c: dict(t.scan(c)) for c in (SUBSCRIBERS, IDENTITIES)})


def handle(hss: Hss, req: Message) -> list[Any]:
    """The answer (or Failure) in a list, once it fires."""
    out: list[Any] = []
    result = hss.handle(decode_message(req.encode(), D), None)  # type: ignore[arg-type]
    if isinstance(result, Deferred):
        result.addBoth(out.append)
    else:
        out.append(result)
    return out


# what a request is: (command, user, variant)
REQUESTS = st.tuples(
    st.sampled_from(["uar", "mar", "mar_aka", "sar", "lir"]),
    st.sampled_from(USERS),
    st.integers(0, 7),
)


def build(ids: cx.SessionIds, command: str, user: str, variant: int) -> Message:
    who, public = impi(user), impus(user)[variant % 2]
    server = (SCSCF_URI, OTHER_URI)[variant % 2 if variant > 5 else 0]
    if command == "uar":
        return cx.uar(ICSCF, ids.next(), REALM, who, public, REALM)
    if command == "lir":
        return cx.lir(ICSCF, ids.next(), REALM, public)
    if command in ("mar", "mar_aka"):
        scheme = cx.SCHEME_AKA if command == "mar_aka" else cx.SCHEME_DIGEST
        return cx.mar(SCSCF, ids.next(), REALM, who, public, server, scheme)
    kind = (
        ServerAssignmentType.REGISTRATION,
        ServerAssignmentType.RE_REGISTRATION,
        ServerAssignmentType.USER_DEREGISTRATION,
        ServerAssignmentType.USER_DEREGISTRATION_STORE_SERVER_NAME,
        ServerAssignmentType.AUTHENTICATION_FAILURE,
        ServerAssignmentType.UNREGISTERED_USER,
        ServerAssignmentType.NO_ASSIGNMENT,
        ServerAssignmentType.TIMEOUT_DEREGISTRATION,
    )[variant]
    return cx.sar(SCSCF, ids.next(), REALM, [public], server, kind, impi=who)


def careful(hss: Hss, store: SQLiteStore, req: Message) -> Message:
    req = decode_message(req.encode(), D)
    return store.transact_now(lambda txn: hss.process(txn, req))


def same(a: Message, b: Message) -> bool:
    return a.encode() == b.encode()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    requests=st.lists(st.tuples(REQUESTS, st.integers(0, 3)), min_size=1, max_size=25),
    warm=st.booleans(),
)
def test_the_cache_path_ends_where_the_careful_path_does(
    tmp_path_factory: Any, requests: list[Any], warm: bool
) -> None:
    tmp = tmp_path_factory.mktemp("wb")
    fast, fast_store = make(tmp, "fast")
    ref, ref_store = make(tmp, "ref")
    held = HeldStore(fast_store)
    fast.store = held  # type: ignore[assignment]
    if warm:
        fast.warm_cache()
        held.release()
    ids = cx.SessionIds("t", 1)
    pending: list[tuple[list[Any], Message, str, bool]] = []
    blind = False  # a request came while a transaction with unknown writes was in flight
    for (command, user, variant), release in requests:
        req = build(ids, command, user, variant)
        expected = careful(ref, ref_store, req)
        quiet = not held.queue  # every earlier request committed: the cache is the store
        blind = blind or fast._transactions > 0
        pending.append((handle(fast, req), expected, command, quiet))
        if release:  # 0: the commits wait for later requests
            held.release(release)
    held.release()
    for got, expected, command, quiet in pending:
        (ans,) = got
        assert isinstance(ans, Message)
        if command == "mar_aka":  # vectors come from randomness; the SQNs are compared below
            assert cx.outcome(ans) == cx.outcome(expected)
        elif quiet:
            assert same(ans, expected), command
    if not blind:  # (a read then sees the last commit, which may decide a write)
        assert contents(fast_store) == contents(ref_store)
    sqns = [contents(s)[SUBSCRIBERS][impi("bob")]["aka"]["sqn"] for s in (fast_store, ref_store)]
    assert sqns[0] == sqns[1] or blind
    # what the cache holds is what the store holds
    assert not fast._in_flight.docs and not fast._in_flight.values and not fast._transactions

    def stored(txn: Any) -> tuple[dict[Any, Any], dict[Any, list[str]]]:
        docs = {k: txn.get(*k) for k in fast._cache.docs}
        found = {q: [k for k, _ in txn.find(q[0], **dict(q[1]))] for q in fast._cache.queries}
        return docs, found

    assert fast_store.transact_now(stored) == (fast._cache.docs, fast._cache.queries)


def test_a_first_registration_after_warming_writes_without_reading_the_store(
    tmp_path: Path,
) -> None:
    hss, store = make(tmp_path, "s")
    held = HeldStore(store)
    hss.store = held  # type: ignore[assignment]
    hss.warm_cache()
    held.release()
    reads: list[str] = []

    class Watched:
        def __init__(self, txn: Any) -> None:
            self.txn = txn

        def __getattr__(self, name: str) -> Any:
            if name != "put":
                reads.append(name)
            return getattr(self.txn, name)

    def watched(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        return lambda txn: fn(Watched(txn))

    ids = cx.SessionIds("t", 2)
    who, public = impi("alice"), impus("alice")[0]
    before = held.count
    for req in (
        cx.uar(ICSCF, ids.next(), REALM, who, public, REALM),
        cx.mar(SCSCF, ids.next(), REALM, who, public, SCSCF_URI, cx.SCHEME_DIGEST),
        cx.uar(ICSCF, ids.next(), REALM, who, public, REALM),
        cx.sar(SCSCF, ids.next(), REALM, [public], SCSCF_URI, ServerAssignmentType.REGISTRATION),
    ):
        got = handle(hss, req)
        held.queue = [(watched(fn), d) for fn, d in held.queue]
        held.release()
        assert cx.outcome(got[0]).success, cx.outcome(got[0])
    assert held.count - before == 2  # the MAR's S-CSCF and the SAR's registration
    assert reads == []  # nothing read in the store: only puts
    assert cx.user_data(got[0])
    uaa = handle(hss, cx.uar(ICSCF, ids.next(), REALM, who, public, REALM))[0]
    assert cx.outcome(uaa).code == CxResult.SUBSEQUENT_REGISTRATION
    assert cx.server_name(uaa) == SCSCF_URI
    # both IMPUs of the set are registered, in the store too
    docs = contents(store)[IDENTITIES]
    assert {docs[i]["state"] for i in impus("alice")} == {"registered"}


def test_the_answer_waits_for_the_commit_and_aka_sqns_never_repeat(tmp_path: Path) -> None:
    hss, store = make(tmp_path, "s")
    held = HeldStore(store)
    hss.store = held  # type: ignore[assignment]
    hss.warm_cache()
    held.release()
    ids = cx.SessionIds("t", 3)
    who, public = impi("bob"), impus("bob")[0]

    def mar() -> list[Any]:
        return handle(hss, cx.mar(SCSCF, ids.next(), REALM, who, public, SCSCF_URI, cx.SCHEME_AKA))

    first, second = mar(), mar()
    assert first == [] and second == []  # nothing answered before its commit
    held.release(1)
    assert len(first) == 1 and second == []
    held.release()
    assert len(second) == 1
    a, b = (cx.auth_items(x[0])[0].authenticate for x in (first, second))
    assert a != b
    sqn = contents(store)[SUBSCRIBERS][who]["aka"]["sqn"]
    assert sqn == 2


def test_a_write_waits_behind_a_transaction_whose_writes_are_unknown(tmp_path: Path) -> None:
    hss, store = make(tmp_path, "s")
    held = HeldStore(store)
    hss.store = held  # type: ignore[assignment]
    hss.warm_cache()
    held.release()
    ids = cx.SessionIds("t", 4)
    who, public = impi("alice"), impus("alice")[0]
    # An admin change in flight (a new password): the MAR after it must see it.
    hss.transact(lambda t: hss.put_subscriber(t, who, impus("alice"), password="new"))
    got = handle(hss, cx.mar(SCSCF, ids.next(), REALM, who, public, SCSCF_URI, cx.SCHEME_DIGEST))
    held.release()
    from imsp2pd.ims.hss import digest_ha1

    assert cx.auth_items(got[0])[0].digest_ha1 == digest_ha1(who, REALM, "new")
    assert contents(store)[IDENTITIES][public]["scscf"] == SCSCF_URI


def test_a_failed_commit_fails_the_answer_and_forgets_the_cache(tmp_path: Path) -> None:
    hss, store = make(tmp_path, "s")
    held = HeldStore(store)
    hss.store = held  # type: ignore[assignment]
    hss.warm_cache()
    held.release()
    ids = cx.SessionIds("t", 5)
    who, public = impi("carol"), impus("carol")[0]
    got = handle(
        hss,
        cx.sar(SCSCF, ids.next(), REALM, [public], SCSCF_URI, ServerAssignmentType.REGISTRATION),
    )
    held.broken = True
    held.release()
    assert isinstance(got[0], Failure) and got[0].check(StoreError)
    assert hss._cache.docs == {} and not hss._in_flight.docs and not hss._in_flight.values
    held.broken = False
    # the store has nothing of it: the next UAR (a miss, read from the store) says so
    uaa = handle(hss, cx.uar(ICSCF, ids.next(), REALM, who, public, REALM))
    held.release()
    assert cx.outcome(uaa[0]).code == CxResult.FIRST_REGISTRATION


def test_a_profile_from_the_cache_follows_a_change_of_its_ifcs(tmp_path: Path) -> None:
    from imsp2pd.ims.profile import from_xml

    hss, store = make(tmp_path, "s")
    hss.warm_cache()
    ids = cx.SessionIds("t", 6)
    who, public = impi("alice"), impus("alice")[0]

    def profile() -> Any:
        sar = cx.sar(
            SCSCF, ids.next(), REALM, [public], SCSCF_URI, ServerAssignmentType.RE_REGISTRATION,
            impi=who,
        )  # fmt: skip
        (ans,) = handle(hss, sar)
        (found,) = from_xml(cx.user_data(ans) or b"").profiles
        return found

    assert len(profile().ifcs) == 2
    assert len(profile().ifcs) == 2  # from the cache, its repr kept
    hss.transact(lambda t: hss.put_subscriber(t, who, impus("alice"), ifcs=[]))
    assert profile().ifcs == ()
    ifcs = ifc_documents(content_ifcs(PSI, "sip:elsewhere.ims.example.org"))
    hss.transact(lambda t: hss.put_subscriber(t, who, impus("alice"), ifcs=ifcs))
    servers = {i.application_server.server_name for i in profile().ifcs}
    assert servers == {"sip:elsewhere.ims.example.org"}


def test_warming_shares_one_ifc_list_per_profile(tmp_path: Path) -> None:
    hss, store = make(tmp_path, "s")
    store.transact_now(lambda t: hss.put_subscriber(t, "dave@" + REALM, ["sip:dave@" + REALM]))
    hss.warm_cache()
    lists = {
        key: doc["ifcs"]
        for (collection, key), doc in hss._cache.docs.items()
        if collection == SUBSCRIBERS and doc is not None
    }
    content = {id(lists[impi(u)]) for u in USERS}
    assert len(content) == 1  # alice, bob and carol: the same profile, one list
    assert lists["dave@" + REALM] == [] and id(lists["dave@" + REALM]) not in content
    assert lists[impi("alice")] == ifc_documents(content_ifcs(PSI, AS_URI))
    (shared,) = content
    assert hss._ifcs_text[shared][1] == repr(lists[impi("alice")])
    # and the first SAR of each gives the profile the careful path gives
    ref, ref_store = make(tmp_path, "ref")
    ids = cx.SessionIds("t", 7)
    for user in USERS:
        sar = cx.sar(
            SCSCF, ids.next(), REALM, [impus(user)[0]], SCSCF_URI,
            ServerAssignmentType.REGISTRATION, impi=impi(user),
        )  # fmt: skip
        (got,) = handle(hss, sar)
        assert same(got, careful(ref, ref_store, sar))
