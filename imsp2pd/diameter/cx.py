"""Cx/Dx messages (3GPP TS 29.229): request builders for the CSCFs, answer readers.

The I-CSCF sends UAR and LIR, the S-CSCF MAR and SAR and answers RTR and
PPR; the HSS (:mod:`imsp2pd.ims.hss`) answers the first four and sends the
last two. Every function here is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from imsp2pd.diameter.avp import Avp, AvpType, keep_encoded, quick_init
from imsp2pd.diameter.codes import (
    Application,
    AuthSessionState,
    AvpCode,
    Command,
    ReasonCode,
    ServerAssignmentType,
    TgppAvp,
    UserAuthorizationType,
    UserDataAlreadyAvailable,
    Vendor,
)
from imsp2pd.diameter.dictionary import Dictionary, default_dictionary
from imsp2pd.diameter.message import Message, request, result_of

#: SIP-Authentication-Scheme values (TS 29.229 6.3.9).
SCHEME_DIGEST = "SIP Digest"
SCHEME_AKA = "Digest-AKAv1-MD5"
SCHEME_UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True)
class Origin:
    """Who sends: Origin-Host and Origin-Realm."""

    host: str
    realm: str


class SessionIds:
    """Session-Id values ``<host>;<high>;<low>`` (RFC 6733 8.8), unique per node run."""

    def __init__(self, origin_host: str, now: float) -> None:
        self._host = origin_host
        self._high = int(now) & 0xFFFFFFFF
        self._low = 0

    def next(self) -> str:
        self._low = (self._low + 1) & 0xFFFFFFFF
        if self._low == 0:
            self._high = (self._high + 1) & 0xFFFFFFFF
        return f"{self._host};{self._high};{self._low}"


def cx_application(d: Dictionary | None = None) -> Avp:
    """Vendor-Specific-Application-Id for Cx (made once per dictionary)."""
    return _cx_head(d or default_dictionary())[0]


@lru_cache(maxsize=8)
def _cx_head(d: Dictionary) -> tuple[Avp, Avp]:
    """Vendor-Specific-Application-Id and Auth-Session-State, as every Cx message has them."""
    # plain ints, as a receiver decodes them (a local hop hands it these)
    app = d.group(
        AvpCode.VENDOR_SPECIFIC_APPLICATION_ID,
        d.make(AvpCode.VENDOR_ID, int(Vendor.TGPP)),
        d.make(AvpCode.AUTH_APPLICATION_ID, int(Application.CX)),
    )
    state = d.make(AvpCode.AUTH_SESSION_STATE, int(AuthSessionState.NO_STATE_MAINTAINED))
    return keep_encoded(app), keep_encoded(state)


def cx_head(d: Dictionary | None = None) -> tuple[Avp, Avp]:
    """Vendor-Specific-Application-Id (Cx) and Auth-Session-State NO_STATE_MAINTAINED."""
    return _cx_head(d or default_dictionary())


#: What a Cx request from an origin to a realm (and host) has after its
#: Session-Id, by (dictionary id, origin host and realm, realm, host), with
#: the dictionary it was made with; emptied when full.
_HEADS: dict[tuple[int, str, str, str, str | None], tuple[Dictionary, tuple[Avp, ...]]] = {}


def _request_head(
    d: Dictionary, origin: Origin, dest_realm: str, dest_host: str | None
) -> tuple[Avp, ...]:
    """Vendor-Specific-Application-Id, Auth-Session-State, Origin-Host,
    Origin-Realm, Destination-Host (if any) and Destination-Realm: made once
    per origin and destination (a CSCF sends every request from the same
    origin, most to the same realm), not looked up AVP by AVP per request."""
    key = (id(d), origin.host, origin.realm, dest_realm, dest_host)
    found = _HEADS.get(key)
    if found is not None and found[0] is d:
        return found[1]
    app, state = _cx_head(d)
    head = [
        app,
        state,
        d.constant(AvpCode.ORIGIN_HOST, origin.host),
        d.constant(AvpCode.ORIGIN_REALM, origin.realm),
    ]
    if dest_host:
        head.append(d.constant(AvpCode.DESTINATION_HOST, dest_host))
    head.append(d.constant(AvpCode.DESTINATION_REALM, dest_realm))
    if len(_HEADS) >= 256:
        _HEADS.clear()
    made = _HEADS[key] = (d, tuple(head))
    return made[1]


def _cx_request(
    command: Command,
    origin: Origin,
    session_id: str,
    dest_realm: str,
    dest_host: str | None,
    body: Iterable[Avp],
    d: Dictionary,
) -> Message:
    head = _request_head(d, origin, dest_realm, dest_host)
    return request(command, Application.CX, (d.make(AvpCode.SESSION_ID, session_id), *head, *body))


def uar(
    origin: Origin,
    session_id: str,
    dest_realm: str,
    impi: str,
    impu: str,
    visited_network: str,
    auth_type: UserAuthorizationType = UserAuthorizationType.REGISTRATION,
    dest_host: str | None = None,
    d: Dictionary | None = None,
) -> Message:
    d = d or default_dictionary()
    body = [
        d.make(AvpCode.USER_NAME, impi),
        d.make(TgppAvp.PUBLIC_IDENTITY, impu),
        d.constant(TgppAvp.VISITED_NETWORK_IDENTIFIER, visited_network.encode()),
    ]
    if auth_type != UserAuthorizationType.REGISTRATION:
        body.append(d.make(TgppAvp.USER_AUTHORIZATION_TYPE, int(auth_type)))
    return _cx_request(
        Command.USER_AUTHORIZATION, origin, session_id, dest_realm, dest_host, body, d
    )


#: SIP-Auth-Data-Item holding only a SIP-Authentication-Scheme, by (dictionary
#: id, scheme), with its dictionary: what an MAR asks for but when it resynchronises
_SCHEME_ITEMS: dict[tuple[int, str], tuple[Dictionary, Avp]] = {}


def _scheme_item(d: Dictionary, scheme: str) -> Avp:
    found = _SCHEME_ITEMS.get((id(d), scheme))
    if found is not None and found[0] is d:
        return found[1]
    item = keep_encoded(
        d.group(TgppAvp.SIP_AUTH_DATA_ITEM, d.constant(TgppAvp.SIP_AUTHENTICATION_SCHEME, scheme))
    )
    if len(_SCHEME_ITEMS) >= 64:
        _SCHEME_ITEMS.clear()
    _SCHEME_ITEMS[(id(d), scheme)] = (d, item)
    return item


def mar(
    origin: Origin,
    session_id: str,
    dest_realm: str,
    impi: str,
    impu: str,
    server_name: str,
    scheme: str = SCHEME_UNKNOWN,
    items: int = 1,
    authorization: bytes | None = None,
    dest_host: str | None = None,
    d: Dictionary | None = None,
) -> Message:
    """MAR; ``authorization`` is RAND || AUTS when the UE asks to resynchronise."""
    d = d or default_dictionary()
    if authorization is None:
        item = _scheme_item(d, scheme)
    else:
        item = d.group(
            TgppAvp.SIP_AUTH_DATA_ITEM,
            d.constant(TgppAvp.SIP_AUTHENTICATION_SCHEME, scheme),
            d.make(TgppAvp.SIP_AUTHORIZATION, authorization),
        )
    body = [
        d.make(AvpCode.USER_NAME, impi),
        d.make(TgppAvp.PUBLIC_IDENTITY, impu),
        d.constant(TgppAvp.SIP_NUMBER_AUTH_ITEMS, items),
        item,
        d.constant(TgppAvp.SERVER_NAME, server_name),
    ]
    return _cx_request(Command.MULTIMEDIA_AUTH, origin, session_id, dest_realm, dest_host, body, d)


def sar(
    origin: Origin,
    session_id: str,
    dest_realm: str,
    impus: Sequence[str],
    server_name: str,
    assignment_type: ServerAssignmentType,
    impi: str | None = None,
    data_available: bool = False,
    dest_host: str | None = None,
    d: Dictionary | None = None,
) -> Message:
    d = d or default_dictionary()
    body: list[Avp] = []
    if impi is not None:
        body.append(d.make(AvpCode.USER_NAME, impi))
    body += [d.make(TgppAvp.PUBLIC_IDENTITY, i) for i in impus]
    body += [
        d.constant(TgppAvp.SERVER_NAME, server_name),
        d.constant(TgppAvp.SERVER_ASSIGNMENT_TYPE, int(assignment_type)),
        d.constant(
            TgppAvp.USER_DATA_ALREADY_AVAILABLE,
            int(
                UserDataAlreadyAvailable.USER_DATA_ALREADY_AVAILABLE
                if data_available
                else UserDataAlreadyAvailable.USER_DATA_NOT_AVAILABLE
            ),
        ),
    ]
    return _cx_request(
        Command.SERVER_ASSIGNMENT, origin, session_id, dest_realm, dest_host, body, d
    )


def lir(
    origin: Origin,
    session_id: str,
    dest_realm: str,
    impu: str,
    dest_host: str | None = None,
    d: Dictionary | None = None,
) -> Message:
    d = d or default_dictionary()
    body = [d.make(TgppAvp.PUBLIC_IDENTITY, impu)]
    return _cx_request(Command.LOCATION_INFO, origin, session_id, dest_realm, dest_host, body, d)


def rtr(
    origin: Origin,
    session_id: str,
    dest_host: str,
    dest_realm: str,
    impi: str,
    impus: Sequence[str] = (),
    reason: ReasonCode = ReasonCode.PERMANENT_TERMINATION,
    reason_info: str | None = None,
    d: Dictionary | None = None,
) -> Message:
    d = d or default_dictionary()
    why = [d.make(TgppAvp.REASON_CODE, int(reason))]
    if reason_info:
        why.append(d.make(TgppAvp.REASON_INFO, reason_info))
    body = [
        d.make(AvpCode.USER_NAME, impi),
        *(d.make(TgppAvp.PUBLIC_IDENTITY, i) for i in impus),
        d.group(TgppAvp.DEREGISTRATION_REASON, *why),
    ]
    return _cx_request(
        Command.REGISTRATION_TERMINATION, origin, session_id, dest_realm, dest_host, body, d
    )


def ppr(
    origin: Origin,
    session_id: str,
    dest_host: str,
    dest_realm: str,
    impi: str,
    user_data: bytes,
    d: Dictionary | None = None,
) -> Message:
    d = d or default_dictionary()
    body = [d.make(AvpCode.USER_NAME, impi), d.make(TgppAvp.USER_DATA, user_data)]
    return _cx_request(Command.PUSH_PROFILE, origin, session_id, dest_realm, dest_host, body, d)


# Reading answers ---------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of a Cx answer: ``code`` and whether it came as Experimental-Result."""

    code: int
    experimental: bool

    @property
    def success(self) -> bool:
        return 2000 <= self.code < 3000


def outcome(msg: Message) -> Outcome:
    code, experimental = result_of(msg.avps)
    return Outcome(code, experimental) if code is not None else Outcome(0, False)


@quick_init
@dataclass(frozen=True, slots=True)
class AuthItem:
    """One SIP-Auth-Data-Item of an MAA."""

    scheme: str
    number: int | None = None
    authenticate: bytes | None = None
    authorization: bytes | None = None
    confidentiality_key: bytes | None = None
    integrity_key: bytes | None = None
    digest_realm: str | None = None
    digest_algorithm: str | None = None
    digest_qop: str | None = None
    digest_ha1: str | None = None


_SCHEME = (int(TgppAvp.SIP_AUTHENTICATION_SCHEME), int(Vendor.TGPP))
_NUMBER = (int(TgppAvp.SIP_ITEM_NUMBER), int(Vendor.TGPP))
_AUTHENTICATE = (int(TgppAvp.SIP_AUTHENTICATE), int(Vendor.TGPP))
_AUTHORIZATION = (int(TgppAvp.SIP_AUTHORIZATION), int(Vendor.TGPP))
_CK = (int(TgppAvp.CONFIDENTIALITY_KEY), int(Vendor.TGPP))
_IK = (int(TgppAvp.INTEGRITY_KEY), int(Vendor.TGPP))
_DIGEST = (int(TgppAvp.SIP_DIGEST_AUTHENTICATE), int(Vendor.TGPP))
_DIGEST_FIELDS = (
    (int(AvpCode.DIGEST_REALM), 0),
    (int(AvpCode.DIGEST_ALGORITHM), 0),
    (int(AvpCode.DIGEST_QOP), 0),
    (int(AvpCode.DIGEST_HA1), 0),
)


def _first_values(avps: tuple[Avp, ...]) -> dict[tuple[int, int], object]:
    """The value of the first AVP of each (code, vendor), as :meth:`Avp.get` finds it."""
    found: dict[tuple[int, int], object] = {}
    for a in avps:
        key = (a.code, a.vendor or 0)
        if key not in found:
            found[key] = a.value
    return found


def auth_items(msg: Message) -> list[AuthItem]:
    """The SIP-Auth-Data-Items of a MAR or MAA (each group read in one pass)."""
    items = []
    for item in msg.find_all(TgppAvp.SIP_AUTH_DATA_ITEM):
        if item.type is not AvpType.GROUPED:
            continue
        assert isinstance(item.value, tuple)
        first = _first_values(item.value)
        digest: tuple[object, ...] = (None, None, None, None)
        for a in item.value:  # the first SIP-Digest-Authenticate, if it is Grouped
            if a.code == _DIGEST[0] and (a.vendor or 0) == _DIGEST[1]:
                if a.type is AvpType.GROUPED:
                    assert isinstance(a.value, tuple)
                    inner = _first_values(a.value)
                    digest = tuple(inner.get(k) for k in _DIGEST_FIELDS)
                break
        scheme, number = first.get(_SCHEME), first.get(_NUMBER)
        items.append(
            AuthItem(
                scheme=(scheme if isinstance(scheme, str) else None) or "",
                number=number if isinstance(number, int) else None,
                authenticate=_bytes_or_none(first.get(_AUTHENTICATE)),
                authorization=_bytes_or_none(first.get(_AUTHORIZATION)),
                confidentiality_key=_bytes_or_none(first.get(_CK)),
                integrity_key=_bytes_or_none(first.get(_IK)),
                digest_realm=_str_or_none(digest[0]),
                digest_algorithm=_str_or_none(digest[1]),
                digest_qop=_str_or_none(digest[2]),
                digest_ha1=_str_or_none(digest[3]),
            )
        )
    return items


_ITEM = (int(TgppAvp.SIP_AUTH_DATA_ITEM), int(Vendor.TGPP))


def requested_item(msg: Message) -> tuple[str, bytes | None] | None:
    """(scheme, authorization) of the first SIP-Auth-Data-Item of an MAR,
    what ``auth_items(msg)[0]`` has of them; None when there is none. In one
    pass, without the other fields (the HSS reads only these two)."""
    code, vendor = _ITEM
    for item in msg.avps:
        if item.code != code or (item.vendor or 0) != vendor or item.type is not AvpType.GROUPED:
            continue
        assert isinstance(item.value, tuple)
        scheme: object = None
        authorization: object = None
        seen_scheme = seen_authorization = False
        for a in item.value:  # the first of each, as _first_values keeps them
            key = (a.code, a.vendor or 0)
            if key == _SCHEME and not seen_scheme:
                scheme, seen_scheme = a.value, True
            elif key == _AUTHORIZATION and not seen_authorization:
                authorization, seen_authorization = a.value, True
        return (scheme if isinstance(scheme, str) else None) or "", _bytes_or_none(authorization)
    return None


def _bytes_or_none(value: object) -> bytes | None:
    return value if isinstance(value, bytes) else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def server_name(msg: Message) -> str | None:
    return msg.get_str(TgppAvp.SERVER_NAME)


def server_capabilities(msg: Message) -> list[str]:
    """The Server-Name values inside Server-Capabilities (the S-CSCFs to choose from)."""
    caps = msg.find(TgppAvp.SERVER_CAPABILITIES)
    if caps is None or caps.type is not AvpType.GROUPED:
        return []
    return [a.value for a in caps.find_all(TgppAvp.SERVER_NAME) if isinstance(a.value, str)]


def user_data(msg: Message) -> bytes | None:
    value = msg.get(TgppAvp.USER_DATA)
    return value if isinstance(value, bytes) else None


def public_identities(msg: Message) -> list[str]:
    return [a.value for a in msg.find_all(TgppAvp.PUBLIC_IDENTITY) if isinstance(a.value, str)]
