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

Those functions read the definitions as written and are the reference.  The
S-CSCF evaluates through :func:`compiled_ifcs`: each TriggerPoint turned
once into a small evaluator (patterns compiled, groups laid out, cheap SPTs
first), the iFCs of a profile kept in priority order, shared by every user of
that profile; and :class:`RequestView`, the facts of a request read from it on
demand (the SDP only when an SPT asks).  The tests hold the two together.

Regular expressions (RequestURI, SIPHeader Header/Content, SessionDescription
Line/Content) are Python ``re`` patterns; the RequestURI must match the whole
Request-URI or its address of record (``scheme:user@host``); header and SDP
contents match anywhere (``re.search``).  A pattern that does not compile
never matches: a bad profile cannot crash the S-CSCF.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum, IntEnum
from functools import lru_cache
from typing import Protocol

from imsp2pd.ims.profile import (
    DefaultHandling,
    InitialFilterCriteria,
    SessionCase,
    Spt,
    TriggerPoint,
)
from imsp2pd.sip.message import Request
from imsp2pd.sip.uri import URI


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


# -- the fast path: compiled trigger points, facts read on demand -------------


class Facts(Protocol):
    """What an evaluator reads: a :class:`RequestFacts` or a :class:`RequestView`."""

    @property
    def method(self) -> str: ...
    @property
    def request_uri(self) -> str: ...
    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def sdp(self) -> str | None: ...
    @property
    def session_case(self) -> SessionCase: ...
    @property
    def registered(self) -> bool: ...
    @property
    def registration_type(self) -> RegistrationType | None: ...
    @property
    def request_aor(self) -> str | None: ...


_UNSET = object()


class RequestView:
    """The facts of a request, as :func:`facts_from_request` gives them, read
    from the request when asked: the Request-URI text and address of record
    when an SPT looks at them, the body decoded only for a SessionDescription
    SPT, the header fields the request's own."""

    __slots__ = ("request", "method", "session_case", "registered", "registration_type", "_sdp")

    def __init__(
        self,
        request: Request,
        session_case: SessionCase,
        registered: bool = True,
        registration_type: RegistrationType | None = None,
    ) -> None:
        self.request = request
        self.method = request.method
        self.session_case = session_case
        self.registered = registered
        self.registration_type = registration_type
        self._sdp: object = _UNSET

    @property
    def request_uri(self) -> str:
        return str(self.request.uri)  # the URI keeps its text

    @property
    def request_aor(self) -> str | None:
        uri: URI = self.request.uri
        return uri.aor() if hasattr(uri, "aor") else None

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return self.request.headers

    @property
    def sdp(self) -> str | None:
        sdp = self._sdp
        if sdp is _UNSET:
            request = self.request
            sdp = self._sdp = (
                request.body.decode("utf-8", "replace")
                if request.content_type == "application/sdp"
                else None
            )
        assert sdp is None or isinstance(sdp, str)
        return sdp


def request_view(
    request: Request,
    session_case: SessionCase,
    registered: bool = True,
    registration_type: RegistrationType | None = None,
) -> RequestView:
    return RequestView(request, session_case, registered, registration_type)


Matcher = Callable[[Facts], bool]

#: header names an SPT's Header pattern was tried on, at most (then tried again each time)
_NAME_MEMO = 256


def _always(facts: Facts) -> bool:
    return True


def _never(facts: Facts) -> bool:
    return False


def _constant(value: bool) -> Matcher:
    return _always if value else _never


def _compile_spt(spt: Spt) -> tuple[int, Matcher]:
    """(cost, evaluator) of one SPT, ConditionNegated applied: a cheap
    evaluator (cost 0) looks at no text, the others run patterns."""
    neg = spt.negated
    if spt.method is not None:
        method = spt.method.upper()
        if method == "REGISTER" and spt.registration_types:
            types = frozenset(spt.registration_types)

            def register(facts: Facts) -> bool:
                if facts.method.upper() != method:
                    return neg
                rtype = facts.registration_type
                return (rtype is not None and int(rtype) in types) is not neg

            return 0, register

        def method_is(facts: Facts) -> bool:
            return (facts.method.upper() == method) is not neg

        return 0, method_is
    if spt.request_uri is not None:
        rx = _compile(spt.request_uri)
        if rx is None:
            return 0, _constant(neg)
        full = rx.fullmatch

        def request_uri(facts: Facts) -> bool:
            if full(facts.request_uri) is not None:
                return not neg
            aor = facts.request_aor
            if aor and full(aor) is not None:
                return not neg
            return neg

        return 1, request_uri
    if spt.header is not None:
        name_rx = _compile(spt.header)
        if name_rx is None:
            return 0, _constant(neg)
        content = spt.header_content
        content_rx = _compile(content) if content is not None else None
        names: dict[str, bool] = {}

        def header(facts: Facts) -> bool:
            for name, value in facts.headers:
                hit = names.get(name)
                if hit is None:
                    hit = name_rx.fullmatch(name) is not None
                    if len(names) < _NAME_MEMO:
                        names[name] = hit
                if hit and (
                    content is None
                    or (content_rx is not None and content_rx.search(value) is not None)
                ):
                    return not neg
            return neg

        return 2, header
    if spt.session_case is not None:
        case = spt.session_case

        def session_case(facts: Facts) -> bool:
            return (facts.session_case == case) is not neg

        return 0, session_case
    if spt.sdp_line is not None:
        line_rx = _compile(spt.sdp_line)
        if line_rx is None:
            return 0, _constant(neg)
        content = spt.sdp_content
        content_rx = _compile(content) if content is not None else None

        def sdp(facts: Facts) -> bool:
            text = facts.sdp
            if text is None:
                return neg
            for line in text.splitlines():
                kind, eq, value = line.partition("=")
                if not eq or line_rx.fullmatch(kind.strip()) is None:
                    continue
                if content is None or (
                    content_rx is not None and content_rx.search(value) is not None
                ):
                    return not neg
            return neg

        return 3, sdp
    return 0, _constant(neg)  # pragma: no cover - Spt guarantees one condition


def compile_trigger(tp: TriggerPoint | None) -> Matcher:
    """An evaluator equal to ``lambda facts: trigger_matches(tp, facts)``.
    Every SPT is pure, so the groups and the SPTs inside them are tried
    cheapest first."""
    if tp is None or not tp.spts:
        return _always
    compiled = {id(spt): _compile_spt(spt) for spt in tp.spts}
    groups = [
        sorted((compiled[id(spt)] for spt in members), key=lambda cm: cm[0])
        for members in _groups(tp).values()
    ]
    groups.sort(key=lambda g: g[-1][0])
    layout = tuple(tuple(m for _, m in g) for g in groups)
    if len(layout) == 1 and len(layout[0]) == 1:
        return layout[0][0]
    if tp.cnf:

        def cnf(facts: Facts) -> bool:
            for group in layout:
                for m in group:
                    if m(facts):
                        break
                else:
                    return False
            return True

        return cnf

    def dnf(facts: Facts) -> bool:
        for group in layout:
            for m in group:
                if not m(facts):
                    break
            else:
                return True
        return False

    return dnf


class CompiledIfcs:
    """The iFCs of a profile in priority order, each with its evaluator:
    :meth:`next_match` and :meth:`all_matches` answer as the functions of
    the same names."""

    __slots__ = ("ifcs", "_entries")

    def __init__(self, ifcs: Iterable[InitialFilterCriteria]) -> None:
        self.ifcs = ifcs if isinstance(ifcs, tuple) else tuple(ifcs)
        self._entries = tuple(
            (
                ifc.priority,
                part_applies(ifc, True),
                part_applies(ifc, False),
                ifc,
                compile_trigger(ifc.trigger),
            )
            for ifc in ordered(self.ifcs)
        )

    def next_match(self, facts: Facts, after: int | None = None) -> InitialFilterCriteria | None:
        registered = facts.registered
        for priority, if_registered, if_unregistered, ifc, match in self._entries:
            if after is not None and priority <= after:
                continue
            if not (if_registered if registered else if_unregistered):
                continue
            if match(facts):
                return ifc
        return None

    def all_matches(self, facts: Facts) -> list[InitialFilterCriteria]:
        out = []
        registered = facts.registered
        after: int | None = None
        for priority, if_registered, if_unregistered, ifc, match in self._entries:
            if after is not None and priority <= after:
                continue  # one per priority, as next_match resumed after each
            if (if_registered if registered else if_unregistered) and match(facts):
                out.append(ifc)
                after = priority
        return out


#: compiled iFCs by the identity of their tuple (kept alive by the entry)
_COMPILED: dict[int, CompiledIfcs] = {}
_COMPILED_MAX = 1024


def compiled_ifcs(ifcs: tuple[InitialFilterCriteria, ...]) -> CompiledIfcs:
    """The evaluators of ``ifcs``, made once per tuple (the profile parser
    shares one tuple among the users of a profile)."""
    found = _COMPILED.get(id(ifcs))
    if found is not None and found.ifcs is ifcs:
        return found
    made = CompiledIfcs(ifcs)
    if len(_COMPILED) >= _COMPILED_MAX:
        _COMPILED.clear()
    _COMPILED[id(ifcs)] = made
    return made
