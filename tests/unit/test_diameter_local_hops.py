"""The Diameter peer connection with the process's local hops: a frame that is
a message this process sent is taken, not decoded, and nothing else changes."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd.diameter import cx
from imsp2pd.diameter.avp import Avp
from imsp2pd.diameter.codes import (
    Application,
    AvpCode,
    Command,
    ResultCode,
    ServerAssignmentType,
)
from imsp2pd.diameter.dictionary import default_dictionary
from imsp2pd.diameter.message import Framer, Message, answer, decode_message, request
from imsp2pd.diameter.node import _decode
from imsp2pd.diameter.peer import (
    AnswerReceived,
    Event,
    IncomingRequest,
    PeerConnection,
    Role,
    Send,
)
from imsp2pd.local_hops import LocalHops
from tests.unit.test_diameter_peer import config, lir, of

D = default_dictionary()
REALM = "ims.example.org"
CLIENT = ("127.0.0.1", 40001)
SERVER = ("127.0.0.1", 3868)


class HopPair:
    """A client and a server connection sharing ``hops`` (as one process's
    nodes do), each knowing the other's address; nothing is delivered until
    :meth:`deliver` is called."""

    def __init__(self, hops: LocalHops[Message] | None, server_hops: bool = True) -> None:
        self.now = 1000.0
        self.hops = hops
        self.client = PeerConnection(
            config("scscf.ims.example.org"),
            Role.INITIATOR,
            self.now,
            rng=random.Random(1),
            local_hops=hops,
            peer_address=SERVER,
        )
        self.server = PeerConnection(
            config("hss.ims.example.org"),
            Role.RESPONDER,
            self.now,
            rng=random.Random(2),
            local_hops=hops if server_hops else None,
            peer_address=CLIENT,
        )
        self.deliver(self.client.start(self.now), self.server)
        assert self.client.is_open and self.server.is_open

    def deliver(self, events: list[Event], to: PeerConnection) -> list[Event]:
        out: list[Event] = []
        for e in events:
            if isinstance(e, Send):
                got = to.data_received(e.data, self.now)
                out += got
                self.deliver(got, self.client if to is self.server else self.server)
        return out


def local_hops(limit: int = 256, check: bool = False) -> LocalHops[Message]:
    hops: LocalHops[Message] = LocalHops(limit, check=_decode if check else None)
    hops.add_address(*CLIENT)
    hops.add_address(*SERVER)
    return hops


def test_a_request_and_its_answer_are_taken_not_decoded() -> None:
    hops = local_hops()
    p = HopPair(hops)
    req, events = p.client.send_request(lir(), p.now)
    assert len(hops) == 1
    (incoming,) = of(p.deliver(events, p.server), IncomingRequest)
    assert incoming.message is req  # the sender's own object: nothing was decoded
    ans = answer(req, "hss.ims.example.org", REALM, ResultCode.SUCCESS)
    data = ans.encode()
    (got,) = of(p.deliver(p.server.send_answer(ans, data), p.client), AnswerReceived)
    assert got.answer is ans and got.request is req
    assert hops.taken == 2 and len(hops) == 0 and p.client.pending_count == 0


def test_a_taken_frame_does_not_reach_the_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    import imsp2pd.diameter.peer as peer_module

    calls: list[bytes] = []
    real = peer_module.decode_message

    def counting(data: bytes, *args: object) -> Message:
        calls.append(data)
        return real(data, *args)  # type: ignore[arg-type]

    hops = local_hops()
    p = HopPair(hops)
    monkeypatch.setattr(peer_module, "decode_message", counting)
    _, events = p.client.send_request(lir(), p.now)
    assert of(p.deliver(events, p.server), IncomingRequest)
    assert calls == []
    # the same bytes again (not put twice): decoded
    assert of(p.server.data_received(events[0].data, p.now), IncomingRequest)  # type: ignore[union-attr]
    assert len(calls) == 1


def test_bytes_not_sent_from_here_are_decoded() -> None:
    hops = local_hops()
    p = HopPair(hops)
    req, events = HopPair(None).client.send_request(lir(), 1000.0)
    (incoming,) = of(p.deliver(events, p.server), IncomingRequest)
    assert incoming.message == req and incoming.message is not req
    assert hops.taken == 0


def test_what_goes_to_a_remote_peer_is_not_kept() -> None:
    hops: LocalHops[Message] = LocalHops()
    hops.add_address(*CLIENT)  # the server's address is not one of ours
    p = HopPair(hops)
    req, events = p.client.send_request(lir(), p.now)
    assert len(hops) == 0
    (incoming,) = of(p.deliver(events, p.server), IncomingRequest)
    assert incoming.message == req and incoming.message is not req
    # the answer goes back to the client, whose address is ours: kept and taken
    ans = answer(req, "hss.ims.example.org", REALM, ResultCode.SUCCESS)
    (got,) = of(p.deliver(p.server.send_answer(ans), p.client), AnswerReceived)
    assert got.answer is ans and hops.taken == 1


def test_a_resent_answer_given_as_bytes_is_not_kept() -> None:
    hops = local_hops()
    p = HopPair(hops)
    req, events = p.client.send_request(lir(), p.now)
    p.deliver(events, p.server)
    ans = answer(req, "hss.ims.example.org", REALM, ResultCode.SUCCESS)
    (got,) = of(p.deliver(p.server.send_answer(ans.encode()), p.client), AnswerReceived)
    assert got.answer == ans and got.answer is not ans and len(hops) == 0


def test_the_bound_drops_the_oldest() -> None:
    hops = local_hops(limit=3)
    p = HopPair(hops)
    sent = [p.client.send_request(lir(f"s;{i}"), p.now) for i in range(5)]
    assert len(hops) == 3
    for i, (req, events) in enumerate(sent):
        (incoming,) = of(p.deliver(events, p.server), IncomingRequest)
        assert incoming.message == req
        assert (incoming.message is req) == (i >= 2)


def test_a_retransmission_is_its_own_bytes() -> None:
    hops = local_hops()
    p = HopPair(hops)
    first, events1 = p.client.send_request(lir(), p.now)
    again = Message(
        first.code, first.application, first.flags | 0x10, 0, first.end_to_end, first.avps
    )
    second, events2 = p.client.send_request(again, p.now)
    assert events1[0] != events2[0] and second.is_retransmission
    got = [e.message for e in of(p.deliver(events1 + events2, p.server), IncomingRequest)]
    assert got[0] is first and got[1] is second and got[1].end_to_end == first.end_to_end


def test_an_unnegotiated_application_is_refused_when_taken_too() -> None:
    """The application check of the header holds for a message taken: the
    same refusal, byte for byte, as for its bytes decoded."""
    replies = []
    for kept in (True, False):
        hops = local_hops()
        p = HopPair(hops)
        ccr = request(
            Command.CREDIT_CONTROL,
            Application.CREDIT_CONTROL,
            lir().avps,
            hop_by_hop=5,
            end_to_end=6,
        )
        data = ccr.encode()
        if kept:
            hops.put(data, ccr, *SERVER)
        events = p.server.data_received(data, p.now)
        assert not of(events, IncomingRequest) and hops.taken == kept
        replies.append([e.data for e in events if isinstance(e, Send)])
    assert replies[0] == replies[1]
    ((reply,),) = [[decode_message(f, D) for f in Framer().feed(data)] for data in replies[0]]
    assert reply.result_code == ResultCode.APPLICATION_UNSUPPORTED and reply.hop_by_hop == 5


def test_the_check_counts_a_mismatch_and_uses_the_decoded_message() -> None:
    hops = local_hops(check=True)
    p = HopPair(hops)
    req, events = p.client.send_request(lir(), p.now)
    data = events[0].data  # type: ignore[union-attr]
    impostor = Message(req.code, req.application, req.flags, req.hop_by_hop, req.end_to_end, ())
    hops.put(data, impostor, *SERVER)  # not what those bytes say
    (incoming,) = of(p.server.data_received(data, p.now), IncomingRequest)
    assert incoming.message == req and hops.mismatches == 1 and hops.taken == 1


def test_the_check_lets_an_undecodable_request_meet_its_error() -> None:
    hops = local_hops(check=True)
    p = HopPair(hops)
    bad = lir().with_avps(D.make(AvpCode.SESSION_ID, "again"))  # Session-Id twice: 5009
    sent, events = p.client.send_request(bad, p.now)
    got = p.server.data_received(events[0].data, p.now)  # type: ignore[union-attr]
    assert not of(got, IncomingRequest) and hops.mismatches == 1
    (reply,) = [
        decode_message(f, D) for e in got if isinstance(e, Send) for f in Framer().feed(e.data)
    ]
    assert reply.result_code == ResultCode.AVP_OCCURS_TOO_MANY_TIMES


# The fast path held to the careful one ---------------------------------------------

_text = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)


@st.composite
def cx_requests(draw: st.DrawFn) -> Message:
    origin = cx.Origin(draw(_text), draw(_text))
    session = draw(_text)
    kind = draw(st.sampled_from(["uar", "mar", "sar", "lir", "malformed"]))
    if kind == "uar":
        return cx.uar(origin, session, REALM, draw(_text), draw(_text), draw(_text))
    if kind == "mar":
        return cx.mar(
            origin,
            session,
            REALM,
            draw(_text),
            draw(_text),
            draw(_text),
            scheme=draw(st.sampled_from([cx.SCHEME_UNKNOWN, cx.SCHEME_DIGEST])),
            authorization=draw(st.none() | st.binary(max_size=40)),
        )
    if kind == "sar":
        return cx.sar(
            origin,
            session,
            REALM,
            draw(st.lists(_text, min_size=1, max_size=3)),
            draw(_text),
            draw(st.sampled_from(list(ServerAssignmentType))),
            impi=draw(st.none() | _text),
            data_available=draw(st.booleans()),
        )
    msg = cx.lir(origin, session, REALM, draw(_text))
    if kind == "malformed":  # a duplicated single AVP: the receiver answers 5009
        msg = msg.with_avps(D.make(AvpCode.ORIGIN_HOST, draw(_text)))
    return msg


def typed(msg: Message) -> tuple[object, ...]:
    """``msg`` with the type of every field and value beside it: what a
    receiver gets from a local hop is what decoding gives, type for type
    (an IntEnum is equal to its int, but not the same)."""

    def avp(a: Avp) -> tuple[object, ...]:
        value = tuple(avp(c) for c in a.value) if isinstance(a.value, tuple) else a.value
        fields = (a.code, a.type, a.vendor, a.mandatory, a.protected)
        return (*((type(f), f) for f in fields), type(a.value), value)

    head = (msg.code, msg.application, msg.flags, msg.hop_by_hop, msg.end_to_end)
    return (*((type(f), f) for f in head), tuple(avp(a) for a in msg.avps))


def _received(events: list[Event]) -> list[object]:
    """What a server's events amount to: bytes sent and requests handed up."""
    return [
        e.data if isinstance(e, Send) else e.message if isinstance(e, IncomingRequest) else e
        for e in events
    ]


@settings(max_examples=150, deadline=None)
@given(st.lists(cx_requests(), min_size=1, max_size=6), st.booleans())
def test_taking_is_decoding(requests: list[Message], answer_too: bool) -> None:
    """A server with the local hops (checked) and one without, fed the same
    frames, do the same; a frame whose message does not decode as itself (a
    malformed request) is counted and decoded."""
    hops = local_hops(check=True)
    with_hops, plain = HopPair(hops), HopPair(None)
    malformed = 0
    for req in requests:
        sent_h, ev_h = with_hops.client.send_request(req, with_hops.now)
        sent_p, ev_p = plain.client.send_request(req, plain.now)
        got_h = with_hops.server.data_received(ev_h[0].data, with_hops.now)  # type: ignore[union-attr]
        got_p = plain.server.data_received(ev_p[0].data, plain.now)  # type: ignore[union-attr]
        assert _received(got_h) == _received(got_p)
        incoming = of(got_h, IncomingRequest)
        malformed += not incoming
        if incoming:
            assert typed(incoming[0].message) == typed(of(got_p, IncomingRequest)[0].message)
        if incoming and answer_too:
            ans = answer(incoming[0].message, "hss.ims.example.org", REALM, ResultCode.SUCCESS)
            ans = ans.with_avps(cx.cx_application())
            (a_h,) = of(
                with_hops.deliver(with_hops.server.send_answer(ans), with_hops.client),
                AnswerReceived,
            )
            (a_p,) = of(plain.deliver(plain.server.send_answer(ans), plain.client), AnswerReceived)
            assert a_h.answer == a_p.answer and a_h.request == sent_h
            assert typed(a_h.answer) == typed(a_p.answer)
    assert hops.mismatches == malformed
    assert hops.taken == len(requests) + (len(requests) - malformed if answer_too else 0)


def test_the_identifiers_are_in_the_bytes() -> None:
    """Equal bytes are equal identifiers: the hop-by-hop and end-to-end ids are
    in the header, so a taken message carries the ids its bytes say."""
    hops = local_hops()
    p = HopPair(hops)
    req, events = p.client.send_request(lir(), p.now)
    data = events[0].data  # type: ignore[union-attr]
    assert struct.unpack_from("!II", data, 12) == (req.hop_by_hop, req.end_to_end)
