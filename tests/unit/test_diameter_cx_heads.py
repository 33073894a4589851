"""Cx requests start with AVPs made once per origin and destination
(:func:`imsp2pd.diameter.cx._request_head`): held to the AVP-by-AVP
construction they replace, message and bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd.diameter import cx
from imsp2pd.diameter.avp import Avp
from imsp2pd.diameter.codes import Application, AvpCode, Command, ServerAssignmentType, TgppAvp
from imsp2pd.diameter.dictionary import Dictionary, default_dictionary
from imsp2pd.diameter.message import Message, request

names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=12)


def careful(
    command: Command,
    origin: cx.Origin,
    session_id: str,
    dest_realm: str,
    dest_host: str | None,
    body: list[Avp],
    d: Dictionary,
) -> Message:
    """The construction before the heads were kept."""
    app, state = cx.cx_head(d)
    avps = [
        d.make(AvpCode.SESSION_ID, session_id),
        app,
        state,
        d.make(AvpCode.ORIGIN_HOST, origin.host),
        d.make(AvpCode.ORIGIN_REALM, origin.realm),
    ]
    if dest_host:
        avps.append(d.make(AvpCode.DESTINATION_HOST, dest_host))
    avps.append(d.make(AvpCode.DESTINATION_REALM, dest_realm))
    return request(command, Application.CX, avps + body)


@settings(max_examples=150)
@given(
    host=names,
    realm=names,
    dest_realm=names,
    dest_host=st.none() | st.just("") | names,
    session=names,
    impu=names,
    fresh=st.booleans(),
    clear=st.booleans(),
)
def test_requests_equal_the_careful_construction(
    host: str,
    realm: str,
    dest_realm: str,
    dest_host: str | None,
    session: str,
    impu: str,
    fresh: bool,
    clear: bool,
) -> None:
    d = Dictionary(default_dictionary().definitions.values(), ()) if fresh else default_dictionary()
    if clear:
        cx._HEADS.clear()
    origin = cx.Origin(host, realm)
    for _ in range(2):  # made, then kept
        made = cx.lir(origin, session, dest_realm, impu, dest_host=dest_host, d=d)
        body = [d.make(TgppAvp.PUBLIC_IDENTITY, impu)]
        want = careful(Command.LOCATION_INFO, origin, session, dest_realm, dest_host, body, d)
        assert made == want
        assert made.encode() == want.encode()
    # another command from the same origin to the same place: the same head
    sar = cx.sar(
        origin,
        session,
        dest_realm,
        [impu],
        "sip:s",
        ServerAssignmentType.REGISTRATION,
        dest_host=dest_host,
        d=d,
    )
    head = len(made.avps) - 1
    assert sar.avps[:head] == made.avps[:head]


@settings(max_examples=100)
@given(
    scheme=names,
    authorization=st.none() | st.binary(max_size=40),
    fresh=st.booleans(),
    clear=st.booleans(),
)
def test_mar_equals_the_careful_construction(
    scheme: str, authorization: bytes | None, fresh: bool, clear: bool
) -> None:
    d = Dictionary(default_dictionary().definitions.values(), ()) if fresh else default_dictionary()
    if clear:
        cx._SCHEME_ITEMS.clear()
    origin = cx.Origin("scscf.example.org", "example.org")
    for _ in range(2):  # made, then kept
        made = cx.mar(
            origin, "s;1;2", "example.org", "u@example.org", "sip:u@example.org", "sip:s",
            scheme=scheme, authorization=authorization, d=d,
        )  # fmt: skip
        item = [d.make(TgppAvp.SIP_AUTHENTICATION_SCHEME, scheme)]
        if authorization is not None:
            item.append(d.make(TgppAvp.SIP_AUTHORIZATION, authorization))
        body = [
            d.make(AvpCode.USER_NAME, "u@example.org"),
            d.make(TgppAvp.PUBLIC_IDENTITY, "sip:u@example.org"),
            d.make(TgppAvp.SIP_NUMBER_AUTH_ITEMS, 1),
            d.group(TgppAvp.SIP_AUTH_DATA_ITEM, *item),
            d.make(TgppAvp.SERVER_NAME, "sip:s"),
        ]
        want = careful(Command.MULTIMEDIA_AUTH, origin, "s;1;2", "example.org", None, body, d)
        assert made == want
        assert made.encode() == want.encode()
