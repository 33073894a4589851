"""The IMS subscription profile: CxDataType User-Data XML (3GPP TS 29.228 annex E).

Frozen dataclasses for IMSSubscription / ServiceProfile / PublicIdentity /
InitialFilterCriteria {Priority, TriggerPoint {ConditionTypeCNF, SPT
{ConditionNegated, Group, Method | RequestURI | SIPHeader | SessionCase |
SessionDescription}}, ApplicationServer {ServerName, DefaultHandling,
ServiceInfo}}, with :func:`to_xml`/:func:`from_xml` for the Cx User-Data AVP
and :func:`to_dict`/:func:`from_dict` for JSON (the store, the admin API).

The S-CSCF evaluates the iFC (imsp2pd.ims.ifc); this module only models and
(de)serialises them. Parsing refuses DOCTYPEs and anything malformed with a
:class:`ProfileError`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import Any


class ProfileError(ValueError):
    """User-Data or a profile document that is not valid."""


class SessionCase(IntEnum):
    ORIGINATING = 0
    TERMINATING_REGISTERED = 1
    TERMINATING_UNREGISTERED = 2
    ORIGINATING_UNREGISTERED = 3
    ORIGINATING_CDIV = 4


class DefaultHandling(IntEnum):
    SESSION_CONTINUED = 0
    SESSION_TERMINATED = 1


@dataclass(frozen=True, slots=True)
class Spt:
    """A Service Point Trigger: exactly one of the conditions is set."""

    group: tuple[int, ...] = (0,)
    negated: bool = False
    method: str | None = None
    request_uri: str | None = None
    header: str | None = None
    header_content: str | None = None
    session_case: SessionCase | None = None
    sdp_line: str | None = None
    sdp_content: str | None = None
    registration_types: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        chosen = [
            self.method is not None,
            self.request_uri is not None,
            self.header is not None,
            self.session_case is not None,
            self.sdp_line is not None,
        ]
        if sum(chosen) != 1:
            raise ProfileError("an SPT needs exactly one condition")
        if not self.group:
            raise ProfileError("an SPT needs at least one Group")


@dataclass(frozen=True, slots=True)
class TriggerPoint:
    #: True: conjunctive normal form (AND of groups, OR inside); False: disjunctive.
    cnf: bool
    spts: tuple[Spt, ...]


@dataclass(frozen=True, slots=True)
class ApplicationServer:
    server_name: str
    default_handling: DefaultHandling = DefaultHandling.SESSION_CONTINUED
    service_info: str | None = None


@dataclass(frozen=True, slots=True)
class InitialFilterCriteria:
    priority: int
    application_server: ApplicationServer
    trigger: TriggerPoint | None = None
    profile_part: int | None = None


@dataclass(frozen=True, slots=True)
class PublicIdentity:
    identity: str
    barred: bool = False


@dataclass(frozen=True, slots=True)
class ServiceProfile:
    public_identities: tuple[PublicIdentity, ...]
    ifcs: tuple[InitialFilterCriteria, ...] = ()


@dataclass(frozen=True, slots=True)
class IMSSubscription:
    private_id: str
    profiles: tuple[ServiceProfile, ...]


# XML ------------------------------------------------------------------------------


# The document is written as text, as ElementTree would write it (the tests hold
# the two to the same bytes): elements without text or children in the short
# form, "&", "<" and ">" escaped in text. The iFCs of a profile are written
# once and kept: most subscribers share them.


def _esc(value: object) -> str:
    text = str(value)
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def _el(tag: str, value: object) -> str:
    text = _esc(value)
    return f"<{tag}>{text}</{tag}>" if text else f"<{tag} />"


def _spt_xml(spt: Spt) -> str:
    out = ["<SPT>", _el("ConditionNegated", int(spt.negated))]
    out += [_el("Group", g) for g in spt.group]
    if spt.request_uri is not None:
        out.append(_el("RequestURI", spt.request_uri))
    elif spt.method is not None:
        out.append(_el("Method", spt.method))
    elif spt.header is not None:
        out += ["<SIPHeader>", _el("Header", spt.header)]
        if spt.header_content is not None:
            out.append(_el("Content", spt.header_content))
        out.append("</SIPHeader>")
    elif spt.session_case is not None:
        out.append(_el("SessionCase", int(spt.session_case)))
    elif spt.sdp_line is not None:
        out += ["<SessionDescription>", _el("Line", spt.sdp_line)]
        if spt.sdp_content is not None:
            out.append(_el("Content", spt.sdp_content))
        out.append("</SessionDescription>")
    out += [_el("RegistrationType", r) for r in spt.registration_types]
    out.append("</SPT>")
    return "".join(out)


#: _ifcs_xml by the id of the tuple it was given (held with it, so the id
#: is not reused while there): the HSS passes the same tuple for every
#: subscriber of a profile, and hashing it for the lru_cache costs as much
#: as the rest of to_xml.
_IFCS_XML_BY_ID: dict[int, tuple[tuple[InitialFilterCriteria, ...], str]] = {}


def _ifcs_xml(ifcs: tuple[InitialFilterCriteria, ...]) -> str:
    known = _IFCS_XML_BY_ID.get(id(ifcs))
    if known is not None and known[0] is ifcs:
        return known[1]
    text = _ifcs_xml_of(ifcs)
    if len(_IFCS_XML_BY_ID) >= 1024:
        _IFCS_XML_BY_ID.clear()
    _IFCS_XML_BY_ID[id(ifcs)] = (ifcs, text)
    return text


@lru_cache(maxsize=1024)
def _ifcs_xml_of(ifcs: tuple[InitialFilterCriteria, ...]) -> str:
    out: list[str] = []
    for ifc in ifcs:
        out += ["<InitialFilterCriteria>", _el("Priority", ifc.priority)]
        if ifc.trigger is not None:
            out += ["<TriggerPoint>", _el("ConditionTypeCNF", int(ifc.trigger.cnf))]
            out += [_spt_xml(spt) for spt in ifc.trigger.spts]
            out.append("</TriggerPoint>")
        server = ifc.application_server
        out += [
            "<ApplicationServer>",
            _el("ServerName", server.server_name),
            _el("DefaultHandling", int(server.default_handling)),
        ]
        if server.service_info is not None:
            out.append(_el("ServiceInfo", server.service_info))
        out.append("</ApplicationServer>")
        if ifc.profile_part is not None:
            out.append(_el("ProfilePartIndicator", ifc.profile_part))
        out.append("</InitialFilterCriteria>")
    return "".join(out)


def to_xml(sub: IMSSubscription) -> bytes:
    out = ["<IMSSubscription>", _el("PrivateID", sub.private_id)]
    for profile in sub.profiles:
        if not profile.public_identities and not profile.ifcs:
            out.append("<ServiceProfile />")
            continue
        out.append("<ServiceProfile>")
        for pub in profile.public_identities:
            out.append("<PublicIdentity>")
            if pub.barred:
                out.append("<BarringIndication>1</BarringIndication>")
            out += [_el("Identity", pub.identity), "</PublicIdentity>"]
        out += [_ifcs_xml(profile.ifcs), "</ServiceProfile>"]
    out.append("</IMSSubscription>")
    return b'<?xml version="1.0" encoding="UTF-8"?>' + "".join(out).encode(
        "utf-8", "xmlcharrefreplace"
    )


def _child_text(e: ET.Element, tag: str, required: bool = True) -> str | None:
    c = e.find(tag)
    if c is None:
        if required:
            raise ProfileError(f"<{e.tag}> lacks <{tag}>")
        return None
    return (c.text or "").strip()


def _int(text: str | None, what: str) -> int:
    try:
        return int(text or "")
    except ValueError:
        raise ProfileError(f"{what} is not an integer: {text!r}") from None


def _bool(text: str | None, what: str) -> bool:
    if text in ("0", "false"):
        return False
    if text in ("1", "true"):
        return True
    raise ProfileError(f"{what} must be 0 or 1, not {text!r}")


def _spt_from(e: ET.Element) -> Spt:
    negated = _child_text(e, "ConditionNegated", False)
    groups = tuple(_int(g.text, "Group") for g in e.findall("Group"))
    kw: dict[str, Any] = {}
    if (v := _child_text(e, "RequestURI", False)) is not None:
        kw["request_uri"] = v
    if (v := _child_text(e, "Method", False)) is not None:
        kw["method"] = v
    if (h := e.find("SIPHeader")) is not None:
        kw["header"] = _child_text(h, "Header")
        kw["header_content"] = _child_text(h, "Content", False)
    if (v := _child_text(e, "SessionCase", False)) is not None:
        try:
            kw["session_case"] = SessionCase(_int(v, "SessionCase"))
        except ValueError:
            raise ProfileError(f"unknown SessionCase {v}") from None
    if (s := e.find("SessionDescription")) is not None:
        kw["sdp_line"] = _child_text(s, "Line")
        kw["sdp_content"] = _child_text(s, "Content", False)
    regs = tuple(_int(r.text, "RegistrationType") for r in e.findall("RegistrationType"))
    return Spt(
        group=groups,
        negated=_bool(negated, "ConditionNegated") if negated is not None else False,
        registration_types=regs,
        **kw,
    )


def _ifcs_from(sp: ET.Element) -> tuple[InitialFilterCriteria, ...]:
    ifcs = []
    for f in sp.findall("InitialFilterCriteria"):
        tp = f.find("TriggerPoint")
        trigger = None
        if tp is not None:
            trigger = TriggerPoint(
                _bool(_child_text(tp, "ConditionTypeCNF"), "ConditionTypeCNF"),
                tuple(_spt_from(s) for s in tp.findall("SPT")),
            )
        a = f.find("ApplicationServer")
        if a is None:
            raise ProfileError("an InitialFilterCriteria needs an ApplicationServer")
        handling = _child_text(a, "DefaultHandling", False)
        try:
            default = DefaultHandling(_int(handling, "DefaultHandling") if handling else 0)
        except ValueError:
            raise ProfileError(f"unknown DefaultHandling {handling}") from None
        part = _child_text(f, "ProfilePartIndicator", False)
        ifcs.append(
            InitialFilterCriteria(
                priority=_int(_child_text(f, "Priority"), "Priority"),
                application_server=ApplicationServer(
                    _child_text(a, "ServerName") or "",
                    default,
                    _child_text(a, "ServiceInfo", False),
                ),
                trigger=trigger,
                profile_part=_int(part, "ProfilePartIndicator") if part is not None else None,
            )
        )
    return tuple(ifcs)


# The documents this module writes (one ServiceProfile, identities of printable
# ASCII without markup characters, no whitespace between elements) are read by
# a pattern, and their iFCs, which most subscribers share, parsed once by their
# bytes. Anything else, or anything the fast reading refuses, goes to the parser.
_NAME = rb"[!-%'-;=?-~]+"
#: up to the last PublicIdentity; the iFCs and the end are looked at without a
#: pattern (a lazy ``.*?`` over them cost two thirds of the reading)
_HEAD = re.compile(
    rb'<\?xml version="1\.0" encoding="UTF-8"\?><IMSSubscription><PrivateID>(' + _NAME + rb")"
    rb"</PrivateID><ServiceProfile>((?:<PublicIdentity>(?:<BarringIndication>1"
    rb"</BarringIndication>)?<Identity>" + _NAME + rb"</Identity></PublicIdentity>)+)"
)
_TAIL = b"</ServiceProfile></IMSSubscription>"
_IFC_OPEN = b"<InitialFilterCriteria>"
_IFC_CLOSE = b"</InitialFilterCriteria>"
_PUBLIC = re.compile(
    rb"<PublicIdentity>(<BarringIndication>1</BarringIndication>)?<Identity>(" + _NAME + rb")"
)


def _split_ours(data: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(PrivateID, the PublicIdentity elements, the iFC elements) of a
    document of the form we write, else None.  The iFC part is empty or
    ``<InitialFilterCriteria>...</InitialFilterCriteria>`` (as the pattern
    ``(?:<InitialFilterCriteria>.*?</InitialFilterCriteria>)*`` would have
    it; the XML parser reads it)."""
    m = _HEAD.match(data)
    end = len(data) - len(_TAIL)
    if m is None or m.end() > end or not data.endswith(_TAIL):
        return None
    section = data[m.end() : end]
    if section and not (
        len(section) >= len(_IFC_OPEN) + len(_IFC_CLOSE)
        and section.startswith(_IFC_OPEN)
        and section.endswith(_IFC_CLOSE)
    ):
        return None
    return m.group(1), m.group(2), section


@lru_cache(maxsize=256)
def _shared_ifcs(section: bytes) -> tuple[InitialFilterCriteria, ...]:
    return _ifcs_from(ET.fromstring(b"<ServiceProfile>" + section + b"</ServiceProfile>"))


def _from_our_xml(data: bytes) -> IMSSubscription | None:
    parts = _split_ours(data)
    if parts is None:
        return None
    private_id, publics, section = parts
    if b"<PublicIdentity" in section:
        return None
    try:
        ifcs = _shared_ifcs(section)
    except (ET.ParseError, ProfileError, LookupError, UnicodeError):
        return None  # the parser says what is wrong, in its words
    pubs = tuple(
        PublicIdentity(identity.decode(), bool(barred))
        for barred, identity in _PUBLIC.findall(publics)
    )
    return IMSSubscription(private_id.decode(), (ServiceProfile(pubs, ifcs),))


def from_xml(data: bytes) -> IMSSubscription:
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ProfileError("User-Data must not carry a DOCTYPE or entities")
    ours = _from_our_xml(data)
    if ours is not None:
        return ours
    return _parse_xml(data)


def _parse_xml(data: bytes) -> IMSSubscription:
    """:func:`from_xml` by the XML parser, for any document."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ProfileError(f"User-Data is not well-formed XML: {exc}") from None
    except (LookupError, UnicodeError) as exc:  # an encoding the declaration names
        raise ProfileError(f"User-Data cannot be decoded: {exc}") from None
    if root.tag != "IMSSubscription":
        raise ProfileError(f"root element is <{root.tag}>, not <IMSSubscription>")
    private_id = _child_text(root, "PrivateID") or ""
    profiles = []
    for sp in root.findall("ServiceProfile"):
        pubs = []
        for p in sp.findall("PublicIdentity"):
            barred = _child_text(p, "BarringIndication", False)
            pubs.append(
                PublicIdentity(
                    _child_text(p, "Identity") or "",
                    _bool(barred, "BarringIndication") if barred is not None else False,
                )
            )
        if not pubs:
            raise ProfileError("a ServiceProfile needs a PublicIdentity")
        profiles.append(ServiceProfile(tuple(pubs), _ifcs_from(sp)))
    if not profiles:
        raise ProfileError("an IMSSubscription needs a ServiceProfile")
    return IMSSubscription(private_id, tuple(profiles))


# JSON (store documents, admin API) ------------------------------------------------


def ifc_to_dict(ifc: InitialFilterCriteria) -> dict[str, Any]:
    out: dict[str, Any] = {
        "priority": ifc.priority,
        "application_server": {
            "server_name": ifc.application_server.server_name,
            "default_handling": int(ifc.application_server.default_handling),
        },
    }
    if ifc.application_server.service_info is not None:
        out["application_server"]["service_info"] = ifc.application_server.service_info
    if ifc.profile_part is not None:
        out["profile_part"] = ifc.profile_part
    if ifc.trigger is not None:
        spts = []
        for s in ifc.trigger.spts:
            d: dict[str, Any] = {"group": list(s.group)}
            if s.negated:
                d["negated"] = True
            for key in (
                "method",
                "request_uri",
                "header",
                "header_content",
                "sdp_line",
                "sdp_content",
            ):
                value = getattr(s, key)
                if value is not None:
                    d[key] = value
            if s.session_case is not None:
                d["session_case"] = int(s.session_case)
            if s.registration_types:
                d["registration_types"] = list(s.registration_types)
            spts.append(d)
        out["trigger"] = {"cnf": ifc.trigger.cnf, "spts": spts}
    return out


def ifc_from_dict(doc: dict[str, Any]) -> InitialFilterCriteria:
    try:
        a = doc["application_server"]
        trigger = None
        if doc.get("trigger") is not None:
            t = doc["trigger"]
            spts = []
            for s in t["spts"]:
                kw = {
                    k: s[k]
                    for k in (
                        "method",
                        "request_uri",
                        "header",
                        "header_content",
                        "sdp_line",
                        "sdp_content",
                    )
                    if s.get(k) is not None
                }
                if s.get("session_case") is not None:
                    kw["session_case"] = SessionCase(int(s["session_case"]))
                spts.append(
                    Spt(
                        group=tuple(int(g) for g in s.get("group", [0])),
                        negated=bool(s.get("negated", False)),
                        registration_types=tuple(int(r) for r in s.get("registration_types", [])),
                        **kw,
                    )
                )
            trigger = TriggerPoint(bool(t["cnf"]), tuple(spts))
        return InitialFilterCriteria(
            priority=int(doc["priority"]),
            application_server=ApplicationServer(
                str(a["server_name"]),
                DefaultHandling(int(a.get("default_handling", 0))),
                a.get("service_info"),
            ),
            trigger=trigger,
            profile_part=doc.get("profile_part"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ProfileError):
            raise
        raise ProfileError(f"bad iFC document: {exc}") from None
