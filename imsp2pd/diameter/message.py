"""Diameter messages: the frozen :class:`Message`, framing, total decoding, answer builders."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache

from imsp2pd.diameter.avp import (
    Avp,
    AvpType,
    Value,
    _encode_avp,
    decode_avps,
    find_all,
    find_avp,
    keep_encoded,
    quick_init,
)
from imsp2pd.diameter.codes import (
    HEADER_LENGTH,
    MAX_MESSAGE_LENGTH,
    VERSION,
    AvpCode,
    Flag,
    ResultCode,
    is_protocol_error,
)
from imsp2pd.diameter.dictionary import Dictionary, default_dictionary
from imsp2pd.diameter.errors import DecodeError, EncodeError, FramingError

_HDR = struct.Struct("!IIIII")
# Plain ints in the hot paths: IntFlag arithmetic is slow.
_R = int(Flag.REQUEST)
_P = int(Flag.PROXIABLE)
_E = int(Flag.ERROR)
_T = int(Flag.RETRANSMITTED)
_RESERVED_FLAGS = 0x0F


@quick_init
@dataclass(frozen=True, slots=True)
class Header:
    """The fixed 20-byte header, available even when the AVPs do not decode."""

    code: int
    application: int
    flags: int
    hop_by_hop: int
    end_to_end: int

    @property
    def is_request(self) -> bool:
        return bool(self.flags & _R)


@quick_init
@dataclass(frozen=True, slots=True)
class Message:
    code: int
    application: int
    flags: int
    hop_by_hop: int = 0
    end_to_end: int = 0
    avps: tuple[Avp, ...] = field(default=())

    # Flags ---------------------------------------------------------------

    @property
    def is_request(self) -> bool:
        return bool(self.flags & _R)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & _E)

    @property
    def is_proxiable(self) -> bool:
        return bool(self.flags & _P)

    @property
    def is_retransmission(self) -> bool:
        return bool(self.flags & _T)

    @property
    def header(self) -> Header:
        return Header(self.code, self.application, self.flags, self.hop_by_hop, self.end_to_end)

    # AVP access ----------------------------------------------------------

    def find(self, code: int, vendor: int | None = None) -> Avp | None:
        """The first AVP with this code (vendor implied by TgppAvp members)."""
        return find_avp(self.avps, code, vendor)

    def find_all(self, code: int, vendor: int | None = None) -> Iterator[Avp]:
        return find_all(self.avps, code, vendor)

    def get(
        self, code: int, vendor: int | None = None, default: Value | None = None
    ) -> Value | None:
        found = find_avp(self.avps, code, vendor)
        return default if found is None else found.value

    def get_str(self, code: int, vendor: int | None = None) -> str | None:
        value = self.get(code, vendor)
        return value if isinstance(value, str) else None

    def get_int(self, code: int, vendor: int | None = None) -> int | None:
        value = self.get(code, vendor)
        return value if isinstance(value, int) else None

    @property
    def session_id(self) -> str | None:
        return self.get_str(AvpCode.SESSION_ID)

    @property
    def origin_host(self) -> str | None:
        return self.get_str(AvpCode.ORIGIN_HOST)

    @property
    def origin_realm(self) -> str | None:
        return self.get_str(AvpCode.ORIGIN_REALM)

    @property
    def result_code(self) -> int | None:
        """Result-Code, or else the Experimental-Result-Code (with its vendor unknown here)."""
        return result_of(self.avps)[0]

    def with_avps(self, *avps: Avp) -> Message:
        return replace(self, avps=self.avps + avps)

    # Wire ----------------------------------------------------------------

    def encode(self) -> bytes:
        body = b"".join([_encode_avp(a) for a in self.avps])
        length = HEADER_LENGTH + len(body)
        if length > MAX_MESSAGE_LENGTH:
            raise EncodeError(f"message is too long ({length} bytes)")
        return (
            _HDR.pack(
                (VERSION << 24) | length,
                ((self.flags & 0xFF) << 24) | self.code,
                self.application,
                self.hop_by_hop,
                self.end_to_end,
            )
            + body
        )


_RESULT_CODE = int(AvpCode.RESULT_CODE)
_EXPERIMENTAL_RESULT = int(AvpCode.EXPERIMENTAL_RESULT)
_EXPERIMENTAL_RESULT_CODE = int(AvpCode.EXPERIMENTAL_RESULT_CODE)


def result_of(avps: tuple[Avp, ...]) -> tuple[int | None, bool]:
    """(the value of the first Result-Code if it is an integer, False), else
    (the first Experimental-Result-Code of the first Experimental-Result if
    that is Grouped and the code an integer, True), else (None, False): what
    looking each up in turn gives, in one pass over the AVPs."""
    result_seen = False
    experimental: Avp | None = None
    for a in avps:
        code = a.code
        if code == _RESULT_CODE:
            if not result_seen and not a.vendor:
                value = a.value
                if isinstance(value, int):
                    return value, False
                result_seen = True
        elif code == _EXPERIMENTAL_RESULT and experimental is None and not a.vendor:
            experimental = a
    if experimental is not None and experimental.type is AvpType.GROUPED:
        assert isinstance(experimental.value, tuple)
        for a in experimental.value:
            if a.code == _EXPERIMENTAL_RESULT_CODE and not a.vendor:
                value = a.value
                return (value, True) if isinstance(value, int) else (None, False)
    return None, False


def message_length(data: bytes | bytearray, offset: int = 0) -> int | None:
    """The length of the message starting at ``offset``, or None if the header is incomplete.

    Raises :class:`FramingError` for a version other than 1 or an impossible
    length: the stream cannot be resynchronised after that.
    """
    if len(data) - offset < 4:
        return None
    version = data[offset]
    if version != VERSION:
        raise FramingError(
            f"unsupported Diameter version {version}", ResultCode.UNSUPPORTED_VERSION
        )
    length = int.from_bytes(data[offset + 1 : offset + 4], "big")
    if length < HEADER_LENGTH or length % 4:
        raise FramingError(f"invalid message length {length}", ResultCode.INVALID_MESSAGE_LENGTH)
    return length


class Framer:
    """Splits a TCP byte stream into whole messages."""

    def __init__(self, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        self._buffer = bytearray()
        self._max_length = max_length

    def feed(self, data: bytes) -> list[bytes]:
        """The whole messages ``data`` completes.  With nothing buffered the
        frames are slices of ``data`` (the whole of it for one message) and
        only a partial tail is kept."""
        whole = not self._buffer and type(data) is bytes
        if not whole:
            self._buffer += data
        buf = data if whole else self._buffer
        frames: list[bytes] = []
        pos, size = 0, len(buf)
        while True:
            length = message_length(buf, pos)
            if length is None:
                break
            if length > self._max_length:
                raise FramingError(
                    f"message of {length} bytes exceeds the limit {self._max_length}",
                    ResultCode.INVALID_MESSAGE_LENGTH,
                )
            if size - pos < length:
                break
            frames.append(data if whole and length == size else bytes(buf[pos : pos + length]))
            pos += length
        if whole:
            if pos < size:
                self._buffer += data[pos:]
        elif pos:
            del self._buffer[:pos]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buffer)


def decode_header(data: bytes) -> Header:
    if len(data) < HEADER_LENGTH:
        raise FramingError("message shorter than its header", ResultCode.INVALID_MESSAGE_LENGTH)
    vlen, flags_code, app, hbh, e2e = _HDR.unpack_from(data)
    return Header(flags_code & 0xFFFFFF, app, flags_code >> 24, hbh, e2e)


def decode_message(data: bytes, dictionary: Dictionary, header: Header | None = None) -> Message:
    """Decode one whole message (as :class:`Framer` returns them).

    :class:`FramingError` if the header itself is unusable; otherwise
    :class:`DecodeError` with ``header`` set, the result code and Failed-AVP
    to answer a request with: 3008 for header bits, 5014/5004 for an AVP
    that does not decode, 5001/3009 for M-bit trouble in a request, 5005 for a
    missing required AVP and 5009 for one that may occur only once.
    ``header`` is the message's own when the caller decoded it already.
    """
    length = message_length(data)
    if length is None or length != len(data):
        raise FramingError(
            f"message length field says {length}, got {len(data)} bytes",
            ResultCode.INVALID_MESSAGE_LENGTH,
        )
    if header is None:
        header = decode_header(data)
    is_request = header.is_request
    try:
        if is_request and header.flags & _E:
            raise DecodeError("request with the E bit", ResultCode.INVALID_HDR_BITS)
        avps = decode_avps(data, dictionary, strict=is_request, start=HEADER_LENGTH)
        command = dictionary.command(header.code)
        if command is not None and is_request:
            _check_occurrences(avps, command.request_required, command.single, dictionary)
    except DecodeError as exc:
        exc.header = header
        raise
    return Message(
        header.code, header.application, header.flags, header.hop_by_hop, header.end_to_end, avps
    )


def _check_occurrences(
    avps: tuple[Avp, ...],
    required: tuple[tuple[int, int], ...],
    single: tuple[tuple[int, int], ...],
    dictionary: Dictionary,
) -> None:
    # Usually no AVP occurs twice and the required ones are there: one set says so.
    keys = [(a.code, a.vendor or 0) for a in avps]
    present = set(keys)
    if len(present) == len(keys) and present.issuperset(required):
        return
    _check_occurrences_careful(avps, required, single, dictionary)


def _check_occurrences_careful(
    avps: tuple[Avp, ...],
    required: tuple[tuple[int, int], ...],
    single: tuple[tuple[int, int], ...],
    dictionary: Dictionary,
) -> None:
    """:func:`_check_occurrences` AVP by AVP: which one is missing or repeated."""
    counts: dict[tuple[int, int], int] = {}
    for a in avps:
        key = (a.code, a.vendor or 0)
        counts[key] = counts.get(key, 0) + 1
    for key in required:
        if key not in counts:
            d = dictionary.avp_def(*key)
            failed = _empty_avp(key, dictionary)
            name = d.name if d is not None else str(key[0])
            raise DecodeError(f"missing AVP {name}", ResultCode.MISSING_AVP, failed)
    for key in single:
        if counts.get(key, 0) > 1:
            second = [a for a in avps if (a.code, a.vendor or 0) == key][1]
            raise DecodeError(
                f"AVP {dictionary.name_of(*key)} occurs more than once",
                ResultCode.AVP_OCCURS_TOO_MANY_TIMES,
                second,
            )


_EMPTY: dict[AvpType, Value] = {
    AvpType.INTEGER32: 0,
    AvpType.ENUMERATED: 0,
    AvpType.INTEGER64: 0,
    AvpType.UNSIGNED32: 0,
    AvpType.UNSIGNED64: 0,
    AvpType.FLOAT32: 0.0,
    AvpType.FLOAT64: 0.0,
    AvpType.GROUPED: (),
    AvpType.OCTET_STRING: b"",
}


def _empty_avp(key: tuple[int, int], dictionary: Dictionary) -> Avp:
    """The Failed-AVP for a missing AVP: its code and flags and a minimal value (RFC 6733 7.5)."""
    d = dictionary.avp_def(*key)
    if d is None:
        return Avp(key[0], b"", vendor=key[1] or None, mandatory=True)
    if d.type in _EMPTY and d.type is not AvpType.OCTET_STRING:
        return Avp(d.code, _EMPTY[d.type], d.type, d.vendor or None, True)
    # Strings and octets: one zero byte rather than nothing, which decoders flag.
    return Avp(d.code, b"\0", AvpType.OCTET_STRING, d.vendor or None, True)


# Builders ---------------------------------------------------------------------


def request(
    code: int,
    application: int,
    avps: Iterable[Avp],
    *,
    proxiable: bool = True,
    hop_by_hop: int = 0,
    end_to_end: int = 0,
) -> Message:
    flags = _R | (_P if proxiable else 0)
    # plain ints (not Command, Application), as the receiver decodes them
    return Message(int(code), int(application), flags, hop_by_hop, end_to_end, tuple(avps))


def answer(
    req: Message | Header,
    origin_host: str,
    origin_realm: str,
    result_code: int | None = ResultCode.SUCCESS,
    avps: Iterable[Avp] = (),
    *,
    experimental: tuple[int, int] | None = None,
    session_id: str | None = None,
    error_message: str | None = None,
    failed_avps: Iterable[Avp] = (),
    dictionary: Dictionary | None = None,
) -> Message:
    """The answer to ``req``: same code, application, identifiers and P bit.

    Session-Id comes first (copied from the request unless given), then
    Result-Code (or Experimental-Result when ``experimental`` is
    ``(vendor_id, code)``), Origin-Host, Origin-Realm, ``avps``, Error-Message
    and one Failed-AVP per failed AVP. A 3xxx result sets the E bit.
    Proxy-Info AVPs of the request are copied in order (RFC 6733 6.2).
    """
    d = dictionary or default_dictionary()
    message = req if isinstance(req, Message) else None
    out: list[Avp] = []
    proxy_info: list[Avp] = []
    if message is not None:
        # one pass for the request's first Session-Id and its Proxy-Info AVPs
        found: Avp | None = None
        for a in message.avps:
            if not a.vendor:
                code = a.code
                if code == _SESSION_ID:
                    if found is None:
                        found = a
                elif code == _PROXY_INFO:
                    proxy_info.append(a)
        if session_id is None and found is not None and isinstance(found.value, str):
            if (
                found.vendor is None
                and type(found.value) is str
                and (found.type, found.mandatory, found.protected) == _session_id_shape(d)
            ):
                out.append(found)  # what d.make would make of its value: the same bytes
            else:
                session_id = found.value
    if session_id is not None:
        out.append(d.make(AvpCode.SESSION_ID, session_id))
    if experimental is not None:
        vendor_id, exp_code = experimental
        out.append(_experimental_result(d, int(vendor_id), int(exp_code)))
    elif result_code is not None:
        out.append(d.constant(AvpCode.RESULT_CODE, int(result_code)))
    out.append(d.constant(AvpCode.ORIGIN_HOST, origin_host))
    out.append(d.constant(AvpCode.ORIGIN_REALM, origin_realm))
    out.extend(avps)
    if error_message:
        out.append(d.make(AvpCode.ERROR_MESSAGE, error_message))
    for failed in failed_avps:
        out.append(d.group(AvpCode.FAILED_AVP, failed))
    out += proxy_info
    flags = req.flags & _P  # a Message and a Header have the same identifiers
    if result_code is not None and experimental is None and is_protocol_error(result_code):
        flags |= _E
    return Message(
        req.code,
        req.application,
        int(flags),
        req.hop_by_hop,
        req.end_to_end,
        tuple(out),
    )


_SESSION_ID = int(AvpCode.SESSION_ID)
_PROXY_INFO = int(AvpCode.PROXY_INFO)


@lru_cache(maxsize=8)
def _session_id_shape(d: Dictionary) -> tuple[AvpType, bool, bool]:
    """Type, M and P bits of the Session-Id ``d`` makes (its vendor is none)."""
    made = d.make(AvpCode.SESSION_ID, "x")
    assert not made.vendor
    return made.type, made.mandatory, made.protected


@lru_cache(maxsize=256)
def _experimental_result(d: Dictionary, vendor_id: int, code: int) -> Avp:
    return keep_encoded(
        d.group(
            AvpCode.EXPERIMENTAL_RESULT,
            d.make(AvpCode.VENDOR_ID, vendor_id),
            d.make(AvpCode.EXPERIMENTAL_RESULT_CODE, code),
        )
    )


def error_answer(
    error: DecodeError,
    origin_host: str,
    origin_realm: str,
    dictionary: Dictionary | None = None,
    session_id: str | None = None,
) -> Message:
    """The answer RFC 6733 calls for to a request that failed to decode."""
    if error.header is None:
        raise ValueError("error_answer needs a DecodeError from decode_message")
    return answer(
        error.header,
        origin_host,
        origin_realm,
        error.result_code,
        error_message=error.reason[:200],
        failed_avps=(error.failed_avp,) if error.failed_avp is not None else (),
        session_id=session_id,
        dictionary=dictionary,
    )


def session_id_of(data: bytes) -> str | None:
    """Best effort: the Session-Id of a raw message whose other AVPs may not decode.

    RFC 6733 puts Session-Id first; an error answer should echo it.
    """
    if len(data) < HEADER_LENGTH + 8:
        return None
    code, flags_len = struct.unpack_from("!II", data, HEADER_LENGTH)
    length = flags_len & 0xFFFFFF
    if code != AvpCode.SESSION_ID or flags_len >> 24 & 0x80 or length < 8:
        return None
    raw = data[HEADER_LENGTH + 8 : HEADER_LENGTH + length]
    if HEADER_LENGTH + length > len(data):
        return None
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


__all__ = [
    "Framer",
    "Header",
    "Message",
    "answer",
    "decode_header",
    "decode_message",
    "error_answer",
    "message_length",
    "request",
    "session_id_of",
]
