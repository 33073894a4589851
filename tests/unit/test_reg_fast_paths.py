"""Fast paths of the registration's Cx and S-CSCF code held to the careful ones."""

from __future__ import annotations

import base64
import hmac
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed

from imsp2pd.diameter import cx
from imsp2pd.diameter.avp import Avp, AvpType, _decode_fast, _Unusual
from imsp2pd.diameter.codes import AvpCode, TgppAvp
from imsp2pd.diameter.dictionary import default_dictionary
from imsp2pd.diameter.errors import DecodeError
from imsp2pd.diameter.message import Message as DiameterMessage
from imsp2pd.diameter.message import (
    _check_occurrences,
    _check_occurrences_careful,
    answer,
    decode_message,
)
from imsp2pd.ims import profile
from imsp2pd.ims.hss import MIGRATIONS as HSS_MIGRATIONS
from imsp2pd.ims.hss import Hss, HssConfig, content_ifcs
from imsp2pd.ims.profile import IMSSubscription, PublicIdentity, ServiceProfile, from_xml, to_xml
from imsp2pd.ims.scscf import Scscf, ScscfConfig
from imsp2pd.sip.digest import NonceBook, NonceStatus, answer_challenge
from imsp2pd.sip.headers import parse_auth
from imsp2pd.sip.message import Response
from imsp2pd.sip.parser import parse_message
from imsp2pd.sip.proxy import LocalAddress, Output, SipCore, Source, Transmit
from imsp2pd.store import SQLiteStore, StoreError

D = default_dictionary()
# (code, vendor): base AVPs, 3GPP ones, one unknown to the dictionary
KEYS = [(263, 0), (264, 0), (296, 0), (1, 0), (601, 10415), (600, 10415), (99999, 0)]


def _outcome(fn: Any, avps: tuple[Avp, ...], required: Any, single: Any) -> Any:
    try:
        fn(avps, required, single, D)
    except DecodeError as exc:
        return (exc.result_code, exc.failed_avp, str(exc))
    return None


@settings(max_examples=400)
@given(
    st.lists(st.sampled_from(KEYS), max_size=8),
    st.lists(st.sampled_from(KEYS), max_size=4, unique=True),
    st.lists(st.sampled_from(KEYS), max_size=4, unique=True),
)
def test_occurrence_check_fast_path_agrees_with_careful(
    present: list[tuple[int, int]],
    required: list[tuple[int, int]],
    single: list[tuple[int, int]],
) -> None:
    avps = tuple(Avp(c, b"x", vendor=v or None) for c, v in present)
    assert _outcome(_check_occurrences, avps, tuple(required), tuple(single)) == _outcome(
        _check_occurrences_careful, avps, tuple(required), tuple(single)
    )


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=64), st.binary(max_size=80))
def test_nonce_mac_is_the_one_shot_hmac(secret: bytes, body: bytes) -> None:
    book = NonceBook(secret)
    assert book._mac(body) == hmac.digest(secret, body, "sha256")[:16]
    assert book._mac(body) == book._mac(body)  # the keyed state is copied, not used up


def test_a_nonce_carries_the_one_shot_hmac_and_checks() -> None:
    secret = b"k" * 32
    book = NonceBook(secret)
    nonce = book.issue(1000.0, extra=b"rand-autn")
    raw = base64.b64decode(nonce)
    assert raw[-16:] == hmac.digest(secret, raw[:-16], "sha256")[:16]
    assert book.check(nonce, "00000001", 1001.0) is NonceStatus.OK
    forged = base64.b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode()
    assert book.check(forged, "00000001", 1001.0) is NonceStatus.INVALID


def test_ifcs_xml_by_identity_equals_by_value() -> None:
    ifcs = tuple(content_ifcs("sip:content@ims.example.org", "sip:127.0.0.1:7060"))
    copy = tuple(content_ifcs("sip:content@ims.example.org", "sip:127.0.0.1:7060"))
    assert copy == ifcs and copy is not ifcs
    first = profile._ifcs_xml(ifcs)
    assert profile._ifcs_xml(ifcs) is first  # the second time from the id memo
    assert profile._ifcs_xml(copy) == first == profile._ifcs_xml_of(ifcs)
    sub = IMSSubscription(
        "u@ims.example.org", (ServiceProfile((PublicIdentity("sip:u@ims.example.org"),), ifcs),)
    )
    assert from_xml(to_xml(sub)) == sub


class _Reg:
    """An S-CSCF whose Cx requests an HSS (SQLite, in the test) answers, and
    whose registrations go to a store that commits when told (or fails)."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = SQLiteStore(tmp_path / "hss.sqlite")
        self.store.migrate(HSS_MIGRATIONS)
        self.hss = Hss(HssConfig(scscf_names=("sip:127.0.0.1:6060",)), self.store)
        self.store.transact_now(
            lambda txn: self.hss.put_subscriber(
                txn, "u@ims.example.org", ["sip:u@ims.example.org"], password="pw"
            )
        )
        self.core = SipCore(addresses=[LocalAddress("UDP", "127.0.0.1", 6060)])
        self.writes: list[Deferred[Any]] = []
        self.scscf = Scscf(
            self.core,
            ScscfConfig(server_name="sip:127.0.0.1:6060"),
            self.cx_request,
            store=self,
            clock=lambda: 1000.0,
        )
        self.scscf.node = self
        self.sent: list[Transmit] = []

    def cx_request(self, msg: DiameterMessage) -> Deferred[DiameterMessage]:
        req = decode_message(msg.encode(), D)
        ans = self.store.transact_now(lambda txn: self.hss.process(txn, req))
        return succeed(decode_message(ans.encode(), D))

    def transact(self, fn: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.writes.append(d)
        return d

    def submit(self, outputs: list[Output]) -> None:
        for item in outputs:
            if isinstance(item, Transmit):
                self.sent.append(item)
            else:
                self.submit(self.scscf.on_event(item, 1000.0))

    def register(self, cseq: int, auth: str = "") -> None:
        text = (
            "REGISTER sip:ims.example.org SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKr{cseq}\r\n"
            "From: <sip:u@ims.example.org>;tag=f\r\nTo: <sip:u@ims.example.org>\r\n"
            f"Call-ID: r1\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 69\r\n"
            "Contact: <sip:u@127.0.0.5:5060>\r\nExpires: 600\r\n"
            f"{auth}Content-Length: 0\r\n\r\n"
        )
        msg = parse_message(text.encode())
        self.submit(self.core.receive(msg, Source("UDP", "127.0.0.1", 5060), 1000.0))

    def statuses(self) -> list[int]:
        return [t.message.status for t in self.sent if isinstance(t.message, Response)]

    def authenticated(self) -> None:
        self.register(1)
        (resp,) = [t.message for t in self.sent if isinstance(t.message, Response)]
        chal = parse_auth(resp.get("WWW-Authenticate") or "")
        auth = answer_challenge(
            chal,
            method="REGISTER",
            uri="sip:ims.example.org",
            username="u@ims.example.org",
            password="pw",
        )
        self.register(2, f"Authorization: {auth}\r\n")


def test_registration_200_waits_for_the_binding_write(tmp_path: Path) -> None:
    h = _Reg(tmp_path)
    try:
        h.authenticated()
        assert h.statuses() == [401] and len(h.writes) == 1  # nothing before the commit
        h.writes[0].callback(None)
        assert h.statuses() == [401, 200]
    finally:
        h.store.close()


def test_a_failed_binding_write_is_480_as_a_failed_cx_request(tmp_path: Path) -> None:
    h = _Reg(tmp_path)
    try:
        h.authenticated()
        h.writes[0].errback(StoreError("disk full"))
        assert h.statuses() == [401, 480]
    finally:
        h.store.close()


def _cx_wires() -> list[bytes]:
    """Requests and answers of two peers (their identities in the same order each
    time, Session-Ids and users differing), as the HSS and the CSCFs decode them."""
    hss = cx.Origin("hss.ims.example.org", "ims.example.org")
    out: list[bytes] = []
    for n, host in enumerate(("icscf", "scscf", "icscf")):
        origin = cx.Origin(f"{host}.ims.example.org", "ims.example.org")
        user, impu = f"u{n}@ims.example.org", f"sip:u{n}@ims.example.org"
        uar = cx.uar(origin, f"{host};1;{n}", "ims.example.org", user, impu, "ims.example.org")
        mar = cx.mar(origin, f"{host};2;{n}", "ims.example.org", user, impu, "sip:s:6060")
        out += [uar.encode(), mar.encode()]
        out.append(
            answer(
                uar, hss.host, hss.realm, avps=[D.constant(TgppAvp.SERVER_NAME, "sip:s")]
            ).encode()
        )
    return out


def _fast_or_unusual(raw: bytes, strict: bool, *memos: Any) -> Any:
    try:
        return _decode_fast(raw, D.codec_table, strict, 20, len(raw), *memos)
    except _Unusual:
        return "unusual"


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.integers(0, 8), st.booleans()), min_size=1, max_size=12),
    st.lists(st.tuples(st.integers(20, 400), st.integers(0, 255)), max_size=3),
    st.integers(0, 11),
)
def test_rows_of_recurring_avps_decode_as_each_one_does(
    picks: list[tuple[int, bool]], damage: list[tuple[int, int]], damaged: int
) -> None:
    """A decoder that keeps rows of recurring AVPs gives what one without them
    gives (and gives up where it does), message after message."""
    wires = _cx_wires()
    # one of each per value of strict, as a dictionary keeps them
    memos: dict[bool, dict[bytes, Avp]] = {True: {}, False: {}}
    rows: dict[bool, dict[bytes, list[tuple[bytes, tuple[Avp, ...]]]]] = {True: {}, False: {}}
    plains: dict[bool, dict[bytes, Avp]] = {True: {}, False: {}}
    for i, (pick, strict) in enumerate(picks):
        memo, runs, plain = memos[strict], rows[strict], plains[strict]
        wire = bytearray(wires[pick])
        if i == damaged:  # one of them damaged, perhaps
            for pos, value in damage:
                if pos < len(wire):
                    wire[pos] = value
        raw = bytes(wire)
        expected = _fast_or_unusual(raw, strict, plain)
        assert _fast_or_unusual(raw, strict, memo, runs) == expected
        assert _fast_or_unusual(raw, strict, memo, runs) == expected
    if len(picks) > 2 and damaged >= len(picks):
        assert any(rows[True]) or any(rows[False])


def test_rows_are_taken_at_once_and_unpadded_ends_are_not_kept() -> None:
    wires = _cx_wires()
    memo: dict[bytes, Avp] = {}
    runs: dict[bytes, list[tuple[bytes, tuple[Avp, ...]]]] = {}
    first = _decode_fast(wires[0], D.codec_table, True, 20, len(wires[0]), memo, runs)
    assert runs  # VSAI, Auth-Session-State, Origin-Host, Origin-Realm, Destination-Realm
    again = _decode_fast(wires[0], D.codec_table, True, 20, len(wires[0]), memo, runs)
    assert again == first and all(a is b for a, b in zip(again[1:6], first[1:6], strict=True))
    # the other CSCF's row is kept beside the first one's, under the same first AVP
    _decode_fast(wires[3], D.codec_table, True, 20, len(wires[3]), memo, runs)
    assert any(len(rows) == 2 for rows in runs.values())
    # a message ending in recurring AVPs, the last one without its padding
    tail = (
        D.constant(AvpCode.ORIGIN_HOST, "a").encode()
        + D.constant(AvpCode.ORIGIN_REALM, "b").encode()
    )
    unpadded = bytes(20) + tail[: len(tail) - 3]
    fresh: dict[bytes, list[tuple[bytes, tuple[Avp, ...]]]] = {}
    _decode_fast(unpadded, D.codec_table, True, 20, len(unpadded), {}, fresh)
    assert not fresh


def _answer_reference(req: DiameterMessage, host: str, realm: str, **kw: Any) -> DiameterMessage:
    """answer() as it was: Session-Id made again, Proxy-Info found afterwards."""
    out: list[Avp] = []
    sid = kw.pop("session_id", None)
    if sid is None:
        sid = req.session_id
    if sid is not None:
        out.append(D.make(AvpCode.SESSION_ID, sid))
    out.append(D.constant(AvpCode.RESULT_CODE, 2001))
    out += [D.constant(AvpCode.ORIGIN_HOST, host), D.constant(AvpCode.ORIGIN_REALM, realm)]
    out.extend(req.find_all(AvpCode.PROXY_INFO))
    return DiameterMessage(
        req.code, req.application, req.flags & 0x40, req.hop_by_hop, req.end_to_end, tuple(out)
    )


_SID = st.one_of(
    st.builds(
        lambda v, m, p: Avp(263, v, AvpType.UTF8_STRING, None, m, p),
        st.text(max_size=8),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(lambda v: Avp(263, v, AvpType.OCTET_STRING, None, True), st.binary(max_size=4)),
    st.builds(lambda v: Avp(263, v, AvpType.UTF8_STRING, 0, True), st.text(max_size=4)),
    st.builds(lambda v: Avp(263, v, AvpType.UTF8_STRING, 10415, True), st.text(max_size=4)),
)
_OTHER = st.sampled_from(
    [
        D.make(
            AvpCode.PROXY_INFO, (D.make(AvpCode.PROXY_HOST, "p"), D.make(AvpCode.PROXY_STATE, b"s"))
        ),
        D.make(AvpCode.ORIGIN_HOST, "h"),
        Avp(284, b"odd", vendor=10415),
        D.make(AvpCode.USER_NAME, "u"),
    ]
)


@settings(max_examples=300)
@given(st.lists(st.one_of(_SID, _OTHER), max_size=6), st.one_of(st.none(), st.just("given;1")))
def test_answer_takes_the_requests_session_id_as_it_made_it(
    avps: list[Avp], given: str | None
) -> None:
    req = DiameterMessage(300, 16777216, 0xC0, 7, 9, tuple(avps))
    kw: dict[str, Any] = {} if given is None else {"session_id": given}
    got = answer(req, "hss", "realm", **kw)
    want = _answer_reference(req, "hss", "realm", **kw)
    assert got == want
    assert got.encode() == want.encode()
