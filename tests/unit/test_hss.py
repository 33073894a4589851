"""The HSS Cx logic (UAR, MAR digest and AKA, SAR, LIR, PSIs) on a real SQLite store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import maybeDeferred

from imsp2pd.diameter import cx
from imsp2pd.diameter.codes import (
    AvpCode,
    CxResult,
    ResultCode,
    ServerAssignmentType,
    TgppAvp,
    UserAuthorizationType,
)
from imsp2pd.diameter.dictionary import default_dictionary
from imsp2pd.diameter.message import Message, decode_message
from imsp2pd.ims import milenage
from imsp2pd.ims.hss import (
    MIGRATIONS,
    Hss,
    HssConfig,
    ProvisioningError,
    content_ifcs,
    digest_ha1,
    ifc_documents,
)
from imsp2pd.ims.icscf import ServerCapabilities, server_capabilities
from imsp2pd.ims.profile import from_xml
from imsp2pd.store import SQLiteStore

D = default_dictionary()
REALM = "ims.example.org"
ICSCF = cx.Origin("icscf.ims.example.org", REALM)
SCSCF = cx.Origin("scscf.ims.example.org", REALM)
SCSCF_URI = "sip:scscf.ims.example.org:6060"
ALICE = "alice@ims.example.org"
ALICE_IMPU = "sip:alice@ims.example.org"
PSI = "sip:content@ims.example.org"
AS_URI = "sip:as.ims.example.org:7060"
K = bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc")
OP = bytes.fromhex("cdc202d5123e20f62b6d676ac72cb318")


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.store = SQLiteStore(tmp_path / "hss.sqlite")
        self.store.migrate(MIGRATIONS)
        counter = iter(range(1, 10**6))
        self.hss = Hss(
            HssConfig(), self.store, random_bytes=lambda n: bytes([next(counter) % 256]) * n
        )
        self.sessions = cx.SessionIds("test", 1)
        ifcs = ifc_documents(content_ifcs(PSI, AS_URI))

        def provision(txn: Any) -> None:
            self.hss.put_subscriber(
                txn, ALICE, [ALICE_IMPU, "tel:+15550001"], password="alice-pass", ifcs=ifcs
            )
            self.hss.put_subscriber(
                txn,
                "bob@ims.example.org",
                ["sip:bob@ims.example.org"],
                password="bob-pass",
                aka={"k": K.hex(), "op": OP.hex(), "amf": "8000"},
                barred=[],
            )
            self.hss.put_subscriber(
                txn,
                "eve@ims.example.org",
                ["sip:eve@ims.example.org"],
                password="x",
                barred=["sip:eve@ims.example.org"],
            )
            self.hss.put_psi(txn, PSI, AS_URI)

        self.store.transact_now(provision)

    def run(self, req: Message) -> Message:
        # Through the wire, both ways, as the node would.
        req = decode_message(req.encode(), D)
        ans = self.store.transact_now(lambda txn: self.hss.process(txn, req))
        return decode_message(ans.encode(), D)

    def uar(self, impi: str = ALICE, impu: str = ALICE_IMPU, **kw: Any) -> Message:
        return self.run(cx.uar(ICSCF, self.sessions.next(), REALM, impi, impu, REALM, **kw))

    def mar(self, impi: str = ALICE, impu: str = ALICE_IMPU, **kw: Any) -> Message:
        return self.run(cx.mar(SCSCF, self.sessions.next(), REALM, impi, impu, SCSCF_URI, **kw))

    def sar(self, kind: ServerAssignmentType, impu: str = ALICE_IMPU, **kw: Any) -> Message:
        return self.run(cx.sar(SCSCF, self.sessions.next(), REALM, [impu], SCSCF_URI, kind, **kw))

    def lir(self, impu: str) -> Message:
        return self.run(cx.lir(ICSCF, self.sessions.next(), REALM, impu))


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_answers_carry_cx_boilerplate(h: Harness) -> None:
    req = cx.uar(ICSCF, "sess;1", REALM, ALICE, ALICE_IMPU, REALM)
    ans = h.run(req)
    assert ans.session_id == "sess;1" and ans.code == req.code and not ans.is_request
    assert ans.origin_host == "hss.ims.example.org" and ans.origin_realm == REALM
    assert ans.get(AvpCode.AUTH_SESSION_STATE) == 1
    assert ans.find(AvpCode.VENDOR_SPECIFIC_APPLICATION_ID) is not None


def test_uar_first_then_subsequent_registration(h: Harness) -> None:
    ans = h.uar()
    assert cx.outcome(ans) == cx.Outcome(CxResult.FIRST_REGISTRATION, True)
    # No capabilities and no names configured: no Server-Capabilities at all
    # (an empty grouped AVP is a dissector warning; the I-CSCF takes any S-CSCF)
    assert server_capabilities(ans) is None
    assert ans.find(TgppAvp.SERVER_CAPABILITIES) is None
    assert ans.find(AvpCode.RESULT_CODE) is None
    h.sar(ServerAssignmentType.REGISTRATION)
    ans = h.uar()
    assert cx.outcome(ans) == cx.Outcome(CxResult.SUBSEQUENT_REGISTRATION, True)
    assert cx.server_name(ans) == SCSCF_URI


def test_uar_errors(h: Harness) -> None:
    assert cx.outcome(h.uar("nobody@ims.example.org")).code == CxResult.ERROR_USER_UNKNOWN
    assert cx.outcome(h.uar(impu="sip:nobody@ims.example.org")).code == CxResult.ERROR_USER_UNKNOWN
    mismatch = h.uar(impu="sip:bob@ims.example.org")
    assert cx.outcome(mismatch) == cx.Outcome(CxResult.ERROR_IDENTITIES_DONT_MATCH, True)
    barred = h.uar("eve@ims.example.org", "sip:eve@ims.example.org")
    assert cx.outcome(barred) == cx.Outcome(ResultCode.AUTHORIZATION_REJECTED, False)
    assert cx.outcome(h.uar(impu=PSI)).code == CxResult.ERROR_USER_UNKNOWN


def test_uar_deregistration(h: Harness) -> None:
    dereg = UserAuthorizationType.DE_REGISTRATION
    assert cx.outcome(h.uar(auth_type=dereg)).code == CxResult.ERROR_IDENTITY_NOT_REGISTERED
    h.sar(ServerAssignmentType.REGISTRATION)
    ans = h.uar(auth_type=dereg)
    assert cx.outcome(ans) == cx.Outcome(ResultCode.SUCCESS, False)
    assert cx.server_name(ans) == SCSCF_URI


def test_mar_sip_digest_gives_ha1_only(h: Harness) -> None:
    ans = h.mar(scheme=cx.SCHEME_DIGEST)
    assert cx.outcome(ans) == cx.Outcome(ResultCode.SUCCESS, False)
    (item,) = cx.auth_items(ans)
    assert item.scheme == cx.SCHEME_DIGEST
    assert item.digest_ha1 == digest_ha1(ALICE, REALM, "alice-pass")
    assert (
        item.digest_realm == REALM and item.digest_algorithm == "MD5" and item.digest_qop == "auth"
    )
    assert ans.get(TgppAvp.SIP_NUMBER_AUTH_ITEMS) == 1
    stored = h.store.transact_now(lambda t: t.get("hss_subscribers", ALICE))
    assert "alice-pass" not in repr(stored)


def test_mar_unknown_scheme_picks_what_the_user_has(h: Harness) -> None:
    assert cx.auth_items(h.mar())[0].scheme == cx.SCHEME_DIGEST
    bob = h.mar("bob@ims.example.org", "sip:bob@ims.example.org")
    assert cx.auth_items(bob)[0].scheme == cx.SCHEME_AKA


def test_mar_aka_vectors_verify_at_the_ue_and_sqn_advances(h: Harness) -> None:
    opc = milenage.compute_opc(K, OP)
    ans = h.mar("bob@ims.example.org", "sip:bob@ims.example.org", scheme=cx.SCHEME_AKA, items=3)
    items = cx.auth_items(ans)
    assert [i.number for i in items] == [1, 2, 3]
    sqns = []
    for item in items:
        assert item.authenticate is not None and len(item.authenticate) == 32
        rand, autn = item.authenticate[:16], item.authenticate[16:]
        sqn, res, ck, ik = milenage.verify_autn(K, opc, rand, autn)
        assert (item.authorization, item.confidentiality_key, item.integrity_key) == (res, ck, ik)
        sqns.append(sqn)
    assert sqns == [1, 2, 3]
    again = cx.auth_items(
        h.mar("bob@ims.example.org", "sip:bob@ims.example.org", scheme=cx.SCHEME_AKA)
    )
    assert again[0].authenticate is not None
    assert (
        milenage.verify_autn(K, opc, again[0].authenticate[:16], again[0].authenticate[16:])[0] == 4
    )


def test_mar_aka_resynchronisation(h: Harness) -> None:
    opc = milenage.compute_opc(K, OP)
    rand = bytes(range(16))
    auts = milenage.make_auts(K, opc, rand, 1000)
    ans = h.mar(
        "bob@ims.example.org",
        "sip:bob@ims.example.org",
        scheme=cx.SCHEME_AKA,
        authorization=rand + auts,
    )
    (item,) = cx.auth_items(ans)
    assert item.authenticate is not None
    assert milenage.verify_autn(K, opc, item.authenticate[:16], item.authenticate[16:])[0] == 1002
    bad = h.mar(
        "bob@ims.example.org",
        "sip:bob@ims.example.org",
        scheme=cx.SCHEME_AKA,
        authorization=rand + bytes(14),
    )
    assert cx.outcome(bad).code == ResultCode.AUTHENTICATION_REJECTED


def test_mar_scheme_without_credentials_is_5006(h: Harness) -> None:
    ans = h.mar(scheme=cx.SCHEME_AKA)
    assert cx.outcome(ans) == cx.Outcome(CxResult.ERROR_AUTH_SCHEME_NOT_SUPPORTED, True)


def test_mar_stores_the_scscf(h: Harness) -> None:
    h.mar()
    ans = h.uar()
    assert cx.outcome(ans).code == CxResult.SUBSEQUENT_REGISTRATION


def test_sar_registration_returns_profile_and_registers_the_set(h: Harness) -> None:
    ans = h.sar(ServerAssignmentType.REGISTRATION, impi=ALICE)
    assert cx.outcome(ans) == cx.Outcome(ResultCode.SUCCESS, False)
    assert ans.get_str(AvpCode.USER_NAME) == ALICE
    data = cx.user_data(ans)
    assert data is not None
    sub = from_xml(data)
    assert sub.private_id == ALICE
    (profile,) = sub.profiles
    assert {p.identity for p in profile.public_identities} == {ALICE_IMPU, "tel:+15550001"}
    assert profile.ifcs[0].application_server.server_name == AS_URI
    # the whole implicit registration set is registered
    assert cx.server_name(h.lir("tel:+15550001")) == SCSCF_URI
    kept = h.sar(ServerAssignmentType.RE_REGISTRATION, data_available=True)
    assert cx.user_data(kept) is None


def test_sar_deregistration(h: Harness) -> None:
    h.sar(ServerAssignmentType.REGISTRATION)
    ans = h.sar(ServerAssignmentType.USER_DEREGISTRATION)
    assert cx.outcome(ans).code == ResultCode.SUCCESS and cx.user_data(ans) is None
    assert cx.outcome(h.lir(ALICE_IMPU)).code == CxResult.ERROR_IDENTITY_NOT_REGISTERED
    assert cx.outcome(h.uar()).code == CxResult.FIRST_REGISTRATION


def test_sar_deregistration_store_server_name(h: Harness) -> None:
    h.sar(ServerAssignmentType.REGISTRATION)
    h.sar(ServerAssignmentType.USER_DEREGISTRATION_STORE_SERVER_NAME)
    assert cx.outcome(h.uar()).code == CxResult.SUBSEQUENT_REGISTRATION


def test_sar_authentication_failure_clears_the_mar_assignment(h: Harness) -> None:
    h.mar()
    h.sar(ServerAssignmentType.AUTHENTICATION_FAILURE)
    assert cx.outcome(h.uar()).code == CxResult.FIRST_REGISTRATION


def test_sar_unregistered_user_then_lir(h: Harness) -> None:
    ans = h.sar(ServerAssignmentType.UNREGISTERED_USER)
    assert cx.user_data(ans) is not None
    assert cx.server_name(h.lir(ALICE_IMPU)) == SCSCF_URI


def test_sar_errors(h: Harness) -> None:
    assert (
        cx.outcome(h.sar(ServerAssignmentType.REGISTRATION, impu="sip:x@y")).code
        == CxResult.ERROR_USER_UNKNOWN
    )
    mismatch = h.sar(ServerAssignmentType.REGISTRATION, impi="bob@ims.example.org")
    assert cx.outcome(mismatch).code == CxResult.ERROR_IDENTITIES_DONT_MATCH
    assert (
        cx.outcome(h.sar(ServerAssignmentType.PGW_UPDATE)).code == CxResult.ERROR_IN_ASSIGNMENT_TYPE
    )


def test_lir_psi_routes_to_its_as(h: Harness) -> None:
    ans = h.lir(PSI)
    assert cx.outcome(ans) == cx.Outcome(ResultCode.SUCCESS, False)
    assert cx.server_name(ans) == AS_URI


def test_lir_unknown_and_unregistered(h: Harness) -> None:
    assert cx.outcome(h.lir("sip:ghost@ims.example.org")).code == CxResult.ERROR_USER_UNKNOWN
    assert cx.outcome(h.lir(ALICE_IMPU)) == cx.Outcome(CxResult.ERROR_IDENTITY_NOT_REGISTERED, True)


def test_lir_unregistered_services(h: Harness) -> None:
    ifcs = [
        {
            "priority": 0,
            "application_server": {"server_name": AS_URI},
            "trigger": {"cnf": True, "spts": [{"group": [0], "session_case": 2}]},
        }
    ]
    h.store.transact_now(
        lambda t: h.hss.put_subscriber(t, ALICE, [ALICE_IMPU], password="p", ifcs=ifcs)
    )
    ans = h.lir(ALICE_IMPU)
    assert cx.outcome(ans) == cx.Outcome(CxResult.UNREGISTERED_SERVICE, True)
    assert server_capabilities(ans) is None  # nothing required
    assert cx.server_name(ans) is None


def test_unsupported_command(h: Harness) -> None:
    req = cx.ppr(SCSCF, "s;1", "hss.ims.example.org", REALM, ALICE, b"<x/>")
    assert cx.outcome(h.run(req)).code == ResultCode.COMMAND_UNSUPPORTED


def test_provisioning_is_idempotent_and_keeps_state(h: Harness) -> None:
    h.sar(ServerAssignmentType.REGISTRATION)
    ifcs = ifc_documents(content_ifcs(PSI, AS_URI))
    h.store.transact_now(
        lambda t: h.hss.put_subscriber(
            t, ALICE, [ALICE_IMPU, "tel:+15550001"], password="alice-pass", ifcs=ifcs
        )
    )
    assert cx.outcome(h.uar()).code == CxResult.SUBSEQUENT_REGISTRATION
    shown = h.store.transact_now(lambda t: h.hss.get_subscriber(t, ALICE))
    assert shown["digest"] and not shown["aka"]
    assert [i["state"] for i in shown["impus"]] == ["registered", "registered"]
    assert "ha1" not in shown


def test_provisioning_keeps_the_aka_sqn(h: Harness) -> None:
    h.mar("bob@ims.example.org", "sip:bob@ims.example.org", scheme=cx.SCHEME_AKA, items=2)
    h.store.transact_now(
        lambda t: h.hss.put_subscriber(
            t,
            "bob@ims.example.org",
            ["sip:bob@ims.example.org"],
            aka={"k": K.hex(), "op": OP.hex()},
        )
    )
    sub = h.store.transact_now(lambda t: t.get("hss_subscribers", "bob@ims.example.org"))
    assert sub["aka"]["sqn"] == 2


@pytest.mark.parametrize(
    ("impi", "impus", "kw"),
    [
        ("nodomain", ["sip:a@b"], {}),
        ("a@b", [], {}),
        ("a@b", ["http://x"], {}),
        ("a@b", ["sip:a@b"], {"ha1": "xyz"}),
        ("a@b", ["sip:a@b"], {"aka": {"k": "00"}}),
        ("a@b", ["sip:a@b"], {"ifcs": [{"priority": 0}]}),
        ("a@b", [ALICE_IMPU], {}),  # belongs to alice
        ("a@b", [PSI], {}),  # is a PSI
    ],
)
def test_bad_provisioning(h: Harness, impi: str, impus: list[str], kw: dict[str, Any]) -> None:
    with pytest.raises(ProvisioningError):
        h.store.transact_now(lambda t: h.hss.put_subscriber(t, impi, impus, **kw))


def test_delete_and_admin_deregistration(h: Harness) -> None:
    h.sar(ServerAssignmentType.REGISTRATION)
    host, impus = h.store.transact_now(lambda t: h.hss.deregister(t, ALICE))
    assert host == "scscf.ims.example.org"
    assert sorted(impus) == sorted([ALICE_IMPU, "tel:+15550001"])
    assert cx.outcome(h.uar()).code == CxResult.FIRST_REGISTRATION
    assert h.store.transact_now(lambda t: h.hss.delete_subscriber(t, ALICE)) is True
    assert h.store.transact_now(lambda t: h.hss.delete_subscriber(t, ALICE)) is False
    assert cx.outcome(h.lir(ALICE_IMPU)).code == CxResult.ERROR_USER_UNKNOWN


def test_lab_provisioning_file_loads_idempotently() -> None:
    import tomllib

    from imsp2pd.ims.hss import MemoryTxn, load_provisioning

    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "etc" / "subscribers.toml").read_text())
    hss = Hss(HssConfig())
    txn = MemoryTxn()
    assert load_provisioning(hss, txn, data) == {"subscribers": 4, "psis": 1}
    first = {c: dict(docs) for c, docs in txn.data.items()}
    load_provisioning(hss, txn, data)
    assert txn.data == first
    alice = hss.get_subscriber(txn, ALICE)
    assert (
        alice is not None
        and alice["digest"]
        and alice["ifcs"][0]["application_server"]["server_name"] == "sip:127.0.0.1:7060"
    )
    assert txn.get("hss_identities", PSI)["as"] == "sip:127.0.0.1:7060"  # type: ignore[index]
    assert "alice-pass" not in repr(txn.data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"users": []}, "unknown section"),
        ({"psi": [{"identity": "sip:p@x"}]}, "needs identity and application_server"),
        ({"subscriber": [{"impus": ["sip:a@b"]}]}, "needs impi"),
        (
            {"subscriber": [{"impi": "a@b", "impus": ["sip:a@b"], "colour": "red"}]},
            "unknown key 'colour'",
        ),
        (
            {"subscriber": [{"impi": "a@b", "impus": ["sip:a@b"], "profile": "gold"}]},
            "profile must be",
        ),
    ],
)
def test_bad_provisioning_files(data: dict[str, Any], message: str) -> None:
    from imsp2pd.ims.hss import MemoryTxn, load_provisioning

    with pytest.raises(ProvisioningError, match=message):
        load_provisioning(Hss(HssConfig()), MemoryTxn(), data)


class CountingStore:
    """A store wrapper that counts transactions (the cache should save most of them)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.count = 0

    def transact(self, fn: Any) -> Any:
        self.count += 1
        return self.store.transact(fn)


def handled(hss: Hss, req: Message) -> Message:
    results: list[Message] = []
    d = maybeDeferred(hss.handle, decode_message(req.encode(), D), None)  # type: ignore[arg-type]
    d.addCallback(results.append)
    (ans,) = results
    return ans


def test_handle_serves_reads_from_the_cache_and_sees_every_write(h: Harness) -> None:
    counting = CountingStore(h.store)
    hss = Hss(HssConfig(), counting)  # type: ignore[arg-type]
    ids = cx.SessionIds("t", 2)
    sar = cx.sar(
        SCSCF, ids.next(), REALM, [ALICE_IMPU], SCSCF_URI, ServerAssignmentType.REGISTRATION
    )
    assert cx.outcome(handled(hss, sar)).code == ResultCode.SUCCESS  # writes: a transaction
    first = counting.count
    for _ in range(5):
        mar = cx.mar(SCSCF, ids.next(), REALM, ALICE, ALICE_IMPU, SCSCF_URI, cx.SCHEME_DIGEST)
        assert cx.auth_items(handled(hss, mar))[0].digest_ha1 == digest_ha1(
            ALICE, REALM, "alice-pass"
        )
        rereg = cx.sar(
            SCSCF, ids.next(), REALM, [ALICE_IMPU], SCSCF_URI, ServerAssignmentType.RE_REGISTRATION,
            data_available=True,
        )  # fmt: skip
        assert cx.outcome(handled(hss, rereg)).code == ResultCode.SUCCESS
    assert counting.count - first <= 2  # the first MAR and SAR fill the cache, the rest are hits
    # A hit is answered at once: a Message, no Deferred.
    mar = cx.mar(SCSCF, ids.next(), REALM, ALICE, ALICE_IMPU, SCSCF_URI, cx.SCHEME_DIGEST)
    assert isinstance(hss.handle(decode_message(mar.encode(), D), None), Message)  # type: ignore[arg-type]
    # A password change through Hss.transact is seen by the next cached MAR.
    hss.transact(
        lambda t: hss.put_subscriber(t, ALICE, [ALICE_IMPU, "tel:+15550001"], password="new")
    )
    mar = cx.mar(SCSCF, ids.next(), REALM, ALICE, ALICE_IMPU, SCSCF_URI, cx.SCHEME_DIGEST)
    assert cx.auth_items(handled(hss, mar))[0].digest_ha1 == digest_ha1(ALICE, REALM, "new")
    # Deregistration through the cache-aware path changes what UAR says.
    dereg = cx.sar(
        SCSCF, ids.next(), REALM, [ALICE_IMPU], SCSCF_URI, ServerAssignmentType.USER_DEREGISTRATION
    )
    handled(hss, dereg)
    uar = cx.uar(ICSCF, ids.next(), REALM, ALICE, ALICE_IMPU, REALM)
    assert cx.outcome(handled(hss, uar)).code == CxResult.FIRST_REGISTRATION
    # AKA always writes its SQN: every MAR is a transaction, and vectors never repeat.
    before = counting.count
    seen = set()
    for _ in range(3):
        m = cx.mar(
            SCSCF,
            ids.next(),
            REALM,
            "bob@ims.example.org",
            "sip:bob@ims.example.org",
            SCSCF_URI,
            cx.SCHEME_AKA,
        )
        item = cx.auth_items(handled(hss, m))[0]
        seen.add(item.authenticate)
    assert counting.count - before == 3 and len(seen) == 3
    # Deleting the subscriber: the cache forgets it.
    hss.transact(lambda t: hss.delete_subscriber(t, ALICE))
    uar = cx.uar(ICSCF, ids.next(), REALM, ALICE, ALICE_IMPU, REALM)
    assert cx.outcome(handled(hss, uar)).code == CxResult.ERROR_USER_UNKNOWN


# Server-Capabilities (TS 29.228 6.1.1.1, 6.1.4.1, 6.7) -------------------------------


def _with_caps(h: Harness, config: HssConfig, **caps: Any) -> None:
    h.hss = Hss(config, h.store)
    h.store.transact_now(
        lambda t: h.hss.put_subscriber(t, ALICE, [ALICE_IMPU], password="p", **caps)
    )


def test_uar_capabilities_of_the_subscriber_else_the_defaults(h: Harness) -> None:
    config = HssConfig(mandatory_capabilities=(1,), optional_capabilities=(7,))
    _with_caps(h, config)
    assert server_capabilities(h.uar()) == ServerCapabilities(frozenset({1}), frozenset({7}))
    _with_caps(h, config, mandatory_capabilities=[2, 3], optional_capabilities=[10, 11])
    ans = h.uar()
    assert cx.outcome(ans) == cx.Outcome(CxResult.FIRST_REGISTRATION, True)
    assert server_capabilities(ans) == ServerCapabilities(frozenset({2, 3}), frozenset({10, 11}))
    # An empty list is the subscriber's own choice (any S-CSCF), not "use the defaults".
    _with_caps(h, config, mandatory_capabilities=[])
    assert server_capabilities(h.uar()) == ServerCapabilities(frozenset(), frozenset({7}))
    # The AVP order of TS 29.229 6.3.4: Mandatory-, then Optional-Capability, then Server-Name.
    _with_caps(h, HssConfig(scscf_names=(SCSCF_URI,)), mandatory_capabilities=[5])
    ans = h.uar()
    group = ans.find(TgppAvp.SERVER_CAPABILITIES)
    assert group is not None
    assert [a.code for a in group.find_all(TgppAvp.MANDATORY_CAPABILITY)] == [604]
    assert server_capabilities(ans) == ServerCapabilities(frozenset({5}), names=(SCSCF_URI,))
    assert cx.server_capabilities(ans) == [SCSCF_URI]
    assert cx.server_name(ans) is None


def test_uar_names_only_when_configured(h: Harness) -> None:
    _with_caps(h, HssConfig())
    assert server_capabilities(h.uar()) is None  # nothing required, no names
    names = (SCSCF_URI, "sip:scscf2.ims.example.org:6060")
    _with_caps(h, HssConfig(scscf_names=names))
    assert server_capabilities(h.uar()).names == names  # type: ignore[union-attr]


def test_uar_subsequent_registration_names_the_scscf_not_capabilities(h: Harness) -> None:
    _with_caps(h, HssConfig(), mandatory_capabilities=[1])
    h.mar()  # the S-CSCF that authenticates is kept (TS 29.228 6.3)
    ans = h.uar()
    assert cx.outcome(ans) == cx.Outcome(CxResult.SUBSEQUENT_REGISTRATION, True)
    assert cx.server_name(ans) == SCSCF_URI
    assert ans.find(TgppAvp.SERVER_CAPABILITIES) is None


def test_uar_registration_and_capabilities_is_success_with_capabilities(h: Harness) -> None:
    _with_caps(h, HssConfig(), mandatory_capabilities=[1], optional_capabilities=[2])
    h.sar(ServerAssignmentType.REGISTRATION)
    ans = h.uar(auth_type=UserAuthorizationType.REGISTRATION_AND_CAPABILITIES)
    assert cx.outcome(ans) == cx.Outcome(ResultCode.SUCCESS, False)
    assert server_capabilities(ans) == ServerCapabilities(frozenset({1}), frozenset({2}))
    assert cx.server_name(ans) is None


def test_lir_unregistered_service_capabilities_then_the_kept_name(h: Harness) -> None:
    ifcs = [
        {
            "priority": 0,
            "application_server": {"server_name": AS_URI},
            "trigger": {"cnf": True, "spts": [{"group": [0], "session_case": 2}]},
        }
    ]
    _with_caps(h, HssConfig(optional_capabilities=(9,)), ifcs=ifcs, mandatory_capabilities=[4])
    ans = h.lir(ALICE_IMPU)
    assert cx.outcome(ans) == cx.Outcome(CxResult.UNREGISTERED_SERVICE, True)
    assert server_capabilities(ans) == ServerCapabilities(frozenset({4}), frozenset({9}))
    h.sar(ServerAssignmentType.REGISTRATION)
    h.sar(ServerAssignmentType.USER_DEREGISTRATION_STORE_SERVER_NAME)
    ans = h.lir(ALICE_IMPU)
    assert cx.outcome(ans) == cx.Outcome(CxResult.UNREGISTERED_SERVICE, True)
    assert cx.server_name(ans) == SCSCF_URI and ans.find(TgppAvp.SERVER_CAPABILITIES) is None


def test_capabilities_provisioning_file_and_admin_view() -> None:
    from imsp2pd.ims.hss import MemoryTxn, load_provisioning

    hss = Hss(HssConfig(optional_capabilities=(3,)))
    txn = MemoryTxn()
    entry = {"impi": ALICE, "impus": [ALICE_IMPU], "password": "p", "profile": "none"}
    load_provisioning(hss, txn, {"subscriber": [{**entry, "mandatory_capabilities": [1, 2]}]})
    shown = hss.get_subscriber(txn, ALICE)
    assert shown is not None
    assert shown["mandatory_capabilities"] == [1, 2] and shown["optional_capabilities"] is None
    assert hss.capabilities(txn.get("hss_subscribers", ALICE) or {}) == ((1, 2), (3,))
    # The file is the truth: a key left out again is the defaults again.
    load_provisioning(hss, txn, {"subscriber": [entry]})
    assert hss.capabilities(txn.get("hss_subscribers", ALICE) or {}) == ((), (3,))


@pytest.mark.parametrize("bad", [[-1], [2**32], ["1"], [True], 5, [1.5]])
def test_bad_capabilities_are_refused(bad: Any) -> None:
    from imsp2pd.ims.hss import MemoryTxn, load_provisioning
    from imsp2pd_roles.hss import _capabilities_check

    entry = {"impi": ALICE, "impus": [ALICE_IMPU], "optional_capabilities": bad}
    with pytest.raises(ProvisioningError, match="optional_capabilities must be a list"):
        load_provisioning(Hss(HssConfig()), MemoryTxn(), {"subscriber": [entry]})
    assert _capabilities_check(bad) is not None
    assert _capabilities_check([0, 2**32 - 1]) is None


def test_user_data_is_built_once_per_profile_content(h: Harness) -> None:
    first = cx.user_data(h.sar(ServerAssignmentType.REGISTRATION, impi=ALICE))
    again = cx.user_data(h.sar(ServerAssignmentType.RE_REGISTRATION, impi=ALICE))
    assert first is not None and again == first
    assert len(h.hss._user_data) == 1
    # A barred IMPU and new iFCs are new content: a new document, as from_xml reads it.
    h.store.transact_now(
        lambda t: h.hss.put_subscriber(
            t, ALICE, [ALICE_IMPU, "tel:+15550001"], barred=["tel:+15550001"], ifcs=[]
        )
    )
    changed = cx.user_data(h.sar(ServerAssignmentType.RE_REGISTRATION, impi=ALICE))
    assert changed is not None and changed != first
    (profile,) = from_xml(changed).profiles
    assert profile.ifcs == ()
    assert {(p.identity, p.barred) for p in profile.public_identities} == {
        (ALICE_IMPU, False),
        ("tel:+15550001", True),
    }


def test_a_write_forgets_only_the_cached_queries_it_changes(h: Harness) -> None:
    counting = CountingStore(h.store)
    hss = Hss(HssConfig(), counting)  # type: ignore[arg-type]
    ids = cx.SessionIds("t", 3)
    bob, bob_impu = "bob@ims.example.org", "sip:bob@ims.example.org"

    def sar(impi: str, impu: str, kind: ServerAssignmentType, available: bool) -> Message:
        req = cx.sar(
            SCSCF, ids.next(), REALM, [impu], SCSCF_URI, kind, impi=impi, data_available=available
        )
        return handled(hss, req)

    # Alice registers, re-registers (now from the cache), then Bob registers: a write.
    sar(ALICE, ALICE_IMPU, ServerAssignmentType.REGISTRATION, False)
    sar(ALICE, ALICE_IMPU, ServerAssignmentType.RE_REGISTRATION, True)
    sar(bob, bob_impu, ServerAssignmentType.REGISTRATION, False)
    before = counting.count
    # Bob's write left Alice's registration set and profile queries cached.
    for _ in range(3):
        ans = sar(ALICE, ALICE_IMPU, ServerAssignmentType.RE_REGISTRATION, False)
        assert cx.outcome(ans).code == ResultCode.SUCCESS
    assert counting.count == before
    (profile,) = from_xml(cx.user_data(ans) or b"").profiles
    assert len(profile.public_identities) == 2
    # A new IMPU for Alice changes her set: the next profile has it.
    hss.transact(
        lambda t: hss.put_subscriber(
            t, ALICE, [ALICE_IMPU, "tel:+15550001", "sip:alice2@ims.example.org"], password="p"
        )
    )
    ans = sar(ALICE, ALICE_IMPU, ServerAssignmentType.RE_REGISTRATION, False)
    (profile,) = from_xml(cx.user_data(ans) or b"").profiles
    assert {p.identity for p in profile.public_identities} == {
        ALICE_IMPU,
        "tel:+15550001",
        "sip:alice2@ims.example.org",
    }
    # ... and the new IMPU is registered with the rest of the set.
    lia = handled(hss, cx.lir(ICSCF, ids.next(), REALM, "sip:alice2@ims.example.org"))
    assert cx.outcome(lia).code == CxResult.ERROR_IDENTITY_NOT_REGISTERED or cx.server_name(lia)
    # An IMPU taken away is gone from the next profile.
    hss.transact(lambda t: hss.put_subscriber(t, ALICE, [ALICE_IMPU], password="p"))
    ans = sar(ALICE, ALICE_IMPU, ServerAssignmentType.RE_REGISTRATION, False)
    (profile,) = from_xml(cx.user_data(ans) or b"").profiles
    assert [p.identity for p in profile.public_identities] == [ALICE_IMPU]


def test_warm_cache_answers_first_uars_without_a_transaction(h: Harness) -> None:
    counting = CountingStore(h.store)
    hss = Hss(HssConfig(), counting)  # type: ignore[arg-type]
    ids = cx.SessionIds("t", 4)
    read: list[int] = []
    hss.warm_cache().addCallback(read.append)
    assert read == [3 + 5]  # three subscribers; four IMPUs and a PSI
    before = counting.count
    for impi, impu in ((ALICE, ALICE_IMPU), ("bob@ims.example.org", "sip:bob@ims.example.org")):
        uaa = handled(hss, cx.uar(ICSCF, ids.next(), REALM, impi, impu, REALM))
        assert cx.outcome(uaa).code == CxResult.FIRST_REGISTRATION
    assert counting.count == before
    # a limit bounds what is read
    small = Hss(HssConfig(), h.store)
    small.warm_cache(limit=1).addCallback(read.append)
    assert read[-1] == 2
