"""Initial Filter Criteria evaluation (3GPP TS 29.228 annex B/F, TS 23.218
§6, TS 24.229 §5.4.3.2–3), pure.

The iFC data model is :mod:`imsp2pd.ims.profile` (parsed from the Cx
User-Data).  Here:

* :class:`RequestFacts` — what a trigger point looks at: method,
  Request-URI, headers, the SDP of the body, the session case, whether the
  served user is registered, and for REGISTER the registration type;
* :func:`spt_matches` — one Service Point Trigger, ``ConditionNegated``
  applied (a negated SIPHeader or SessionDescription SPT also matches when
  the header or line is absent, TS 29.228 annex B);
* :func:`trigger_matches` — a TriggerPoint in conjunctive
  (``ConditionTypeCNF`` = 1: AND of groups, OR inside a group) or
  disjunctive normal form (OR of groups, AND inside); an iFC without a
  TriggerPoint always matches;
* :func:`next_match` — the first iFC after a given priority whose
  ProfilePartIndicator fits the registration state and whose trigger
  matches (the S-CSCF's walk, resumed after each AS);
* :func:`on_as_failure` — DefaultHandling when the AS fails or times out.

Regular expressions (RequestURI, SIPHeader Header/Content, SessionDescription
Line/Content) are Python ``re`` patterns; the RequestURI must match the whole
Request-URI or its address of record (``scheme:user@host``); header and SDP
contents match anywhere (``re.search``).  A pattern that does not compile
never matches: a bad profile cannot crash the S-CSCF.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, IntEnum
from functools import lru_cache

from imsp2pd.ims.profile import (
    DefaultHandling,
    InitialFilterCriteria,
    SessionCase,
    Spt,
    TriggerPoint,
)
from imsp2pd.sip.message import Request


class RegistrationType(IntEnum):
    """TS 29.228 RegistrationType values of a REGISTER SPT."""

    INITIAL = 0
    RE_REGISTRATION = 1
    DE_REGISTRATION = 2


class ProfilePart(IntEnum):
    REGISTERED = 0
    UNREGISTERED = 1


@dataclass(frozen=True)
class RequestFacts:
    method: str
    request_uri: str
    #: header fields (canonical name, value)
    headers: tuple[tuple[str, str], ...] = ()
    #: the SDP text of the body, if it has one
    sdp: str | None = None
    session_case: SessionCase = SessionCase.ORIGINATING
    registered: bool = True
    registration_type: RegistrationType | None = None
    #: the Request-URI's address of record (scheme:user@host)
    request_aor: str | None = None


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError):
        return None


def _full(pattern: str, text: str) -> bool:
    rx = _compile(pattern)
    return rx is not None and rx.fullmatch(text) is not None


def _search(pattern: str, text: str) -> bool:
    rx = _compile(pattern)
    return rx is not None and rx.search(text) is not None


def _raw_spt(spt: Spt, facts: RequestFacts) -> bool:
    """The SPT's condition before ConditionNegated.  Returns None-free bool."""
    if spt.method is not None:
        if spt.method.upper() != facts.method.upper():
            return False
        if facts.method.upper() == "REGISTER" and spt.registration_types:
            return (
                facts.registration_type is not None
                and int(facts.registration_type) in spt.registration_types
            )
        return True
    if spt.request_uri is not None:
        targets = [facts.request_uri]
        if facts.request_aor:
            targets.append(facts.request_aor)
        return any(_full(spt.request_uri, t) for t in targets)
    if spt.header is not None:
        values = [v for n, v in facts.headers if _full(spt.header, n)]
        if not values:
            return False
        if spt.header_content is None:
            return True
        return any(_search(spt.header_content, v) for v in values)
    if spt.session_case is not None:
        return spt.session_case == facts.session_case
    if spt.sdp_line is not None:
        if facts.sdp is None:
            return False
        content = spt.sdp_content
        for line in facts.sdp.splitlines():
            kind, eq, value = line.partition("=")
            if not eq or not _full(spt.sdp_line, kind.strip()):
                continue
            if content is None or _search(content, value):
                return True
        return False
    return False  # pragma: no cover - Spt guarantees one condition


def spt_matches(spt: Spt, facts: RequestFacts) -> bool:
    result = _raw_spt(spt, facts)
    return not result if spt.negated else result


def _groups(tp: TriggerPoint) -> dict[int, list[Spt]]:
    groups: dict[int, list[Spt]] = {}
    for spt in tp.spts:
        for g in spt.group:
            groups.setdefault(g, []).append(spt)
    return groups


def trigger_matches(tp: TriggerPoint | None, facts: RequestFacts) -> bool:
    if tp is None or not tp.spts:
        return True
    cache: dict[int, bool] = {}

    def value(spt: Spt) -> bool:
        key = id(spt)
        if key not in cache:
            cache[key] = spt_matches(spt, facts)
        return cache[key]

    groups = _groups(tp).values()
    if tp.cnf:
        return all(any(value(s) for s in group) for group in groups)
    return any(all(value(s) for s in group) for group in groups)


def part_applies(ifc: InitialFilterCriteria, registered: bool) -> bool:
    if ifc.profile_part is None:
        return True
    part = ProfilePart.REGISTERED if registered else ProfilePart.UNREGISTERED
    return ifc.profile_part == part


def ordered(ifcs: Iterable[InitialFilterCriteria]) -> list[InitialFilterCriteria]:
    """By Priority, lowest value first (stable for equal priorities)."""
    return sorted(ifcs, key=lambda f: f.priority)


def next_match(
    ifcs: Iterable[InitialFilterCriteria],
    facts: RequestFacts,
    after: int | None = None,
) -> InitialFilterCriteria | None:
    """The first iFC with a priority above ``after`` (None: from the
    start) that applies to the registration state and matches."""
    for ifc in ordered(ifcs):
        if after is not None and ifc.priority <= after:
            continue
        if not part_applies(ifc, facts.registered):
            continue
        if trigger_matches(ifc.trigger, facts):
            return ifc
    return None


def all_matches(
    ifcs: Iterable[InitialFilterCriteria], facts: RequestFacts
) -> list[InitialFilterCriteria]:
    """Every matching iFC in priority order (e.g. third-party REGISTER goes
    to each AS whose iFC matches the REGISTER)."""
    out = []
    after: int | None = None
    pool = list(ifcs)
    while (ifc := next_match(pool, facts, after)) is not None:
        out.append(ifc)
        after = ifc.priority
    return out


class FailureAction(Enum):
    CONTINUE = "continue"  # go on with the next iFC as if this AS had not matched
    TERMINATE = "terminate"  # answer the request with an error


def on_as_failure(ifc: InitialFilterCriteria) -> FailureAction:
    """DefaultHandling of the AS of ``ifc`` (TS 24.229 §5.4.3.2)."""
    if ifc.application_server.default_handling == DefaultHandling.SESSION_TERMINATED:
        return FailureAction.TERMINATE
    return FailureAction.CONTINUE


def facts_from_request(
    request: Request,
    *,
    session_case: SessionCase,
    registered: bool = True,
    registration_type: RegistrationType | None = None,
) -> RequestFacts:
    """The facts of a parsed SIP request; the body counts as SDP when its
    Content-Type is application/sdp."""
    sdp = None
    if request.content_type == "application/sdp":
        sdp = request.body.decode("utf-8", "replace")
    aor = request.uri.aor() if hasattr(request.uri, "aor") else None
    return RequestFacts(
        method=request.method,
        request_uri=str(request.uri),
        headers=request.headers,
        sdp=sdp,
        session_case=session_case,
        registered=registered,
        registration_type=registration_type,
        request_aor=aor,
    )
