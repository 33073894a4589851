"""AVPs: the data types of RFC 6733 section 4.2/4.3 and their wire encoding.

An :class:`Avp` is a frozen dataclass carrying a typed value; it encodes
itself without a dictionary. Decoding needs a dictionary to know each AVP's
type (see :func:`decode_avps`); an AVP the dictionary does not know decodes as
an OctetString.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from imsp2pd.diameter.codes import AvpCode, AvpFlag, ResultCode, TgppAvp, Vendor
from imsp2pd.diameter.errors import DecodeError, EncodeError

if TYPE_CHECKING:
    from imsp2pd.diameter.dictionary import Dictionary


class AvpType(Enum):
    # Identity hashing (a C slot) instead of Enum's hash of the name: the codec
    # looks types up on every AVP.
    __hash__ = object.__hash__

    OCTET_STRING = "OctetString"
    INTEGER32 = "Integer32"
    INTEGER64 = "Integer64"
    UNSIGNED32 = "Unsigned32"
    UNSIGNED64 = "Unsigned64"
    FLOAT32 = "Float32"
    FLOAT64 = "Float64"
    GROUPED = "Grouped"
    ADDRESS = "Address"
    TIME = "Time"
    UTF8_STRING = "UTF8String"
    DIAMETER_IDENTITY = "DiameterIdentity"
    DIAMETER_URI = "DiameterURI"
    ENUMERATED = "Enumerated"
    IP_FILTER_RULE = "IPFilterRule"


Value: TypeAlias = (
    bytes | int | float | str | IPv4Address | IPv6Address | datetime | tuple["Avp", ...]
)

#: The epoch of the Time type (NTP, RFC 5905).
NTP_EPOCH = datetime(1900, 1, 1, tzinfo=UTC)
#: NTP era 1 starts here; 32-bit values below 2**31 are read as era 1 (RFC 6733 4.3.1).
_ERA_SPLIT = 0x80000000

_STR_TYPES = frozenset(
    {AvpType.UTF8_STRING, AvpType.DIAMETER_IDENTITY, AvpType.DIAMETER_URI, AvpType.IP_FILTER_RULE}
)
_INT_FORMATS: dict[AvpType, tuple[str, int, int]] = {
    AvpType.INTEGER32: ("!i", -(2**31), 2**31 - 1),
    AvpType.ENUMERATED: ("!i", -(2**31), 2**31 - 1),
    AvpType.INTEGER64: ("!q", -(2**63), 2**63 - 1),
    AvpType.UNSIGNED32: ("!I", 0, 2**32 - 1),
    AvpType.UNSIGNED64: ("!Q", 0, 2**64 - 1),
}
_INT_STRUCTS = {t: struct.Struct(f) for t, (f, _, _) in _INT_FORMATS.items()}
_INT_FAST = {t: (_INT_STRUCTS[t].pack, low, high) for t, (_, low, high) in _INT_FORMATS.items()}
_F32 = struct.Struct("!f")
_F64 = struct.Struct("!d")
_HEADER = struct.Struct("!II")
# Plain ints in the hot paths: IntFlag arithmetic is slow.
_V = int(AvpFlag.VENDOR)
_M = int(AvpFlag.MANDATORY)
_P = int(AvpFlag.PROTECTED)
_VENDOR = struct.Struct("!I")


_TGPP = int(Vendor.TGPP)


def default_vendor(code: int) -> int:
    """The vendor an AVP code implies: 10415 for :class:`TgppAvp` members, else 0."""
    return _TGPP if type(code) is TgppAvp else 0


@dataclass(frozen=True, slots=True)
class Avp:
    """One AVP. ``vendor`` None means no V bit; a Grouped value is a tuple of Avps."""

    code: int
    value: Value
    type: AvpType = AvpType.OCTET_STRING
    vendor: int | None = None
    mandatory: bool = False
    protected: bool = False

    @property
    def flags(self) -> int:
        return (
            (_V if self.vendor is not None else 0)
            | (_M if self.mandatory else 0)
            | (_P if self.protected else 0)
        )

    @property
    def key(self) -> tuple[int, int]:
        """(code, vendor) with 0 for no vendor: how dictionaries index AVPs."""
        return (int(self.code), self.vendor or 0)

    def encode(self) -> bytes:
        return _encode_avp(self)

    # Grouped helpers -------------------------------------------------------

    def children(self) -> tuple[Avp, ...]:
        if self.type is not AvpType.GROUPED:
            raise TypeError(f"AVP {self.code} is not Grouped")
        assert isinstance(self.value, tuple)
        return self.value

    def find(self, code: int, vendor: int | None = None) -> Avp | None:
        return find_avp(self.children(), code, vendor)

    def find_all(self, code: int, vendor: int | None = None) -> Iterator[Avp]:
        return find_all(self.children(), code, vendor)

    def get(self, code: int, vendor: int | None = None, default: object = None) -> object:
        found = self.find(code, vendor)
        return default if found is None else found.value


_HEADER_VENDOR = struct.Struct("!III")
#: the padding after an AVP of each length modulo 4
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


#: The encodings of AVPs that messages share (see :func:`keep_encoded`), by id;
#: each entry holds its AVP, so the id cannot be reused while it is there.
_ENCODED: dict[int, tuple[Avp, bytes]] = {}


def keep_encoded(avp: Avp) -> Avp:
    """Encode ``avp`` once and for all: an AVP many messages share (a constant)."""
    try:
        data = _encode_avp(avp)
    except (EncodeError, struct.error):
        return avp  # the message that carries it fails to encode, as it would have
    if len(_ENCODED) >= 8192:
        _ENCODED.clear()
    _ENCODED[id(avp)] = (avp, data)
    return avp


def _encode_avp(avp: Avp) -> bytes:
    """The AVP on the wire: header, payload, padding to 32 bits."""
    known = _ENCODED.get(id(avp))
    if known is not None and known[0] is avp:
        return known[1]
    value, kind = avp.value, avp.type
    vt = type(value)
    if vt is str and kind in _STR_TYPES:
        payload = value.encode("utf-8")  # type: ignore[union-attr]
    elif vt is tuple and kind is AvpType.GROUPED:
        payload = b"".join([_encode_avp(child) for child in value])  # type: ignore[union-attr, arg-type]
    else:
        payload = encode_value(kind, value)
    flags = (_M if avp.mandatory else 0) | (_P if avp.protected else 0)
    vendor = avp.vendor
    if vendor is None:
        length = 8 + len(payload)
        if length > 0xFFFFFF:
            raise EncodeError(f"AVP {avp.code} is too long ({length} bytes)")
        return _HEADER.pack(avp.code, (flags << 24) | length) + payload + _PAD[length & 3]
    length = 12 + len(payload)
    if length > 0xFFFFFF:
        raise EncodeError(f"AVP {avp.code} is too long ({length} bytes)")
    head = _HEADER_VENDOR.pack(avp.code, ((flags | _V) << 24) | length, vendor)
    return head + payload + _PAD[length & 3]


# The generated __init__ of a frozen dataclass sets each field with
# object.__setattr__ by name; the slot descriptors' setters do the same in half
# the time, and the codec makes one Avp per AVP. Same parameters and defaults.
_AVP_SET: tuple[Callable[[Avp, object], None], ...] = (
    Avp.__dict__["code"].__set__,
    Avp.__dict__["value"].__set__,
    Avp.__dict__["type"].__set__,
    Avp.__dict__["vendor"].__set__,
    Avp.__dict__["mandatory"].__set__,
    Avp.__dict__["protected"].__set__,
)


def _avp_init(
    self: Avp,
    code: int,
    value: Value,
    type: AvpType = AvpType.OCTET_STRING,
    vendor: int | None = None,
    mandatory: bool = False,
    protected: bool = False,
    _set: tuple[Callable[[Avp, object], None], ...] = _AVP_SET,
) -> None:
    _set[0](self, code)
    _set[1](self, value)
    _set[2](self, type)
    _set[3](self, vendor)
    _set[4](self, mandatory)
    _set[5](self, protected)


Avp.__init__ = _avp_init  # type: ignore[method-assign]

_C = TypeVar("_C")
#: The generated __init__ that :func:`quick_init` replaced, by class (for tests).
GENERATED_INITS: dict[type, Callable[..., None]] = {}


def quick_init(cls: type[_C]) -> type[_C]:
    """Give a frozen, slotted dataclass an __init__ that sets its fields through
    the slot descriptors (as :class:`Avp` has): same parameters, defaults and
    result as the generated one, in about two thirds of the time. For the
    objects the codec and the peer make per message. Fields must be plain (no
    default_factory, init=False or kw_only) and the class without __post_init__."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has __post_init__")
    namespace: dict[str, Any] = {}
    params, body = [], []
    for i, f in enumerate(fields):
        if not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name} is not a plain field")
        namespace[f"_set{i}"] = cls.__dict__[f.name].__set__
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"_default{i}"] = f.default
            params.append(f"{f.name}=_default{i}")
        body.append(f"    _set{i}(self, {f.name})")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body or ["    pass"])
    exec(source, namespace)  # built from the dataclass's own field names
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    GENERATED_INITS[cls] = cls.__init__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


def find_all(avps: tuple[Avp, ...], code: int, vendor: int | None = None) -> Iterator[Avp]:
    want_vendor = default_vendor(code) if vendor is None else vendor
    code = int(code)
    for a in avps:
        if a.code == code and (a.vendor or 0) == want_vendor:
            yield a


def find_avp(avps: tuple[Avp, ...], code: int, vendor: int | None = None) -> Avp | None:
    want_vendor = default_vendor(code) if vendor is None else vendor
    for a in avps:
        if a.code == code and (a.vendor or 0) == want_vendor:
            return a
    return None


# Values ------------------------------------------------------------------------


def encode_value(kind: AvpType, value: Value) -> bytes:
    """The payload (unpadded) of ``value`` as ``kind``; :class:`EncodeError` if it does not fit."""
    # Fast paths for what nearly every message carries.
    vt = type(value)
    if vt is str and kind in _STR_TYPES:
        return value.encode("utf-8")  # type: ignore[union-attr]
    if vt is int:
        fast = _INT_FAST.get(kind)
        if fast is not None and fast[1] <= value <= fast[2]:  # type: ignore[operator]
            return fast[0](value)
    try:
        if kind is AvpType.OCTET_STRING:
            if not isinstance(value, bytes | bytearray):
                raise EncodeError(f"OctetString needs bytes, not {type(value).__name__}")
            return bytes(value)
        if kind in _STR_TYPES:
            if not isinstance(value, str):
                raise EncodeError(f"{kind.value} needs str, not {type(value).__name__}")
            return value.encode("utf-8")
        fmt = _INT_FORMATS.get(kind)
        if fmt is not None:
            if not isinstance(value, int) or isinstance(value, bool):
                raise EncodeError(f"{kind.value} needs int, not {type(value).__name__}")
            _, low, high = fmt
            if not low <= value <= high:
                raise EncodeError(f"{value} is out of range for {kind.value}")
            return _INT_STRUCTS[kind].pack(value)
        if kind is AvpType.GROUPED:
            if not isinstance(value, tuple):
                raise EncodeError("Grouped needs a tuple of Avp")
            return b"".join([_encode_avp(child) for child in value])
        if kind is AvpType.FLOAT32:
            if not isinstance(value, float | int):
                raise EncodeError("Float32 needs a float")
            return _F32.pack(value)
        if kind is AvpType.FLOAT64:
            if not isinstance(value, float | int):
                raise EncodeError("Float64 needs a float")
            return _F64.pack(value)
        if kind is AvpType.ADDRESS:
            if isinstance(value, IPv4Address):
                return b"\0\x01" + value.packed
            if isinstance(value, IPv6Address):
                return b"\0\x02" + value.packed
            raise EncodeError("Address needs an IPv4Address or IPv6Address")
        if kind is AvpType.TIME:
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise EncodeError("Time needs an aware datetime")
            seconds = int((value - NTP_EPOCH).total_seconds())
            if not (_ERA_SPLIT <= seconds < 2**32 + _ERA_SPLIT):
                raise EncodeError(f"{value} is outside the range of the Time type")
            return _VENDOR.pack(seconds % 2**32)
    except (struct.error, OverflowError) as exc:
        raise EncodeError(f"cannot encode {value!r} as {kind.value}: {exc}") from exc
    raise EncodeError(f"unknown AVP type {kind}")  # pragma: no cover


_FIXED_LENGTH = {
    AvpType.INTEGER32: 4,
    AvpType.ENUMERATED: 4,
    AvpType.UNSIGNED32: 4,
    AvpType.INTEGER64: 8,
    AvpType.UNSIGNED64: 8,
    AvpType.FLOAT32: 4,
    AvpType.FLOAT64: 8,
    AvpType.TIME: 4,
}


class _ValueError(Exception):
    def __init__(self, reason: str, result_code: int) -> None:
        self.reason = reason
        self.result_code = result_code


def _decode_scalar(kind: AvpType, data: bytes) -> Value:
    if kind in _STR_TYPES:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _ValueError(
                f"{kind.value} is not valid UTF-8", ResultCode.INVALID_AVP_VALUE
            ) from None
    unpacker = _INT_STRUCTS.get(kind)
    if unpacker is not None and len(data) == unpacker.size:
        return int(unpacker.unpack(data)[0])
    expected = _FIXED_LENGTH.get(kind)
    if expected is not None and len(data) != expected:
        raise _ValueError(
            f"{kind.value} payload is {len(data)} bytes, not {expected}",
            ResultCode.INVALID_AVP_LENGTH,
        )
    if kind is AvpType.OCTET_STRING:
        return data
    if kind in _STR_TYPES:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _ValueError(
                f"{kind.value} is not valid UTF-8", ResultCode.INVALID_AVP_VALUE
            ) from None
    if kind in _INT_STRUCTS:
        return int(_INT_STRUCTS[kind].unpack(data)[0])
    if kind is AvpType.FLOAT32:
        return float(_F32.unpack(data)[0])
    if kind is AvpType.FLOAT64:
        return float(_F64.unpack(data)[0])
    if kind is AvpType.TIME:
        seconds = _VENDOR.unpack(data)[0]
        if seconds < _ERA_SPLIT:
            seconds += 2**32
        return NTP_EPOCH + timedelta(seconds=seconds)
    if kind is AvpType.ADDRESS:
        if len(data) < 2:
            raise _ValueError("Address is shorter than its family", ResultCode.INVALID_AVP_LENGTH)
        family = int.from_bytes(data[:2], "big")
        if family == 1:
            if len(data) != 6:
                raise _ValueError("IPv4 Address is not 4 bytes", ResultCode.INVALID_AVP_LENGTH)
            return IPv4Address(data[2:])
        if family == 2:
            if len(data) != 18:
                raise _ValueError("IPv6 Address is not 16 bytes", ResultCode.INVALID_AVP_LENGTH)
            return IPv6Address(data[2:])
        raise _ValueError(f"unsupported address family {family}", ResultCode.INVALID_AVP_VALUE)
    raise _ValueError(f"unknown AVP type {kind}", ResultCode.UNABLE_TO_COMPLY)  # pragma: no cover


# The fast decoder: how it reads each type, in one entry per dictionary AVP.
_MODE_STR, _MODE_INT, _MODE_OCTETS, _MODE_GROUPED, _MODE_OTHER = range(5)
#: (mode, type, M bit forbidden, (unpack_from, size) for integers else None, recurring)
CodecEntry: TypeAlias = tuple[
    int, AvpType, bool, "tuple[Callable[..., tuple[int]], int] | None", bool
]
#: Decoded AVPs kept by their bytes (see :func:`_decode_fast`); emptied when full.
_MEMO_SIZE = 4096


def codec_entry(kind: AvpType, m_forbidden: bool, recurring: bool = False) -> CodecEntry:
    """How the fast decoder reads an AVP; ``recurring`` AVPs (identities, realms,
    application ids, result codes: a few values seen over and over) are
    decoded once per distinct encoding and the Avp shared."""
    if kind in _STR_TYPES:
        return (_MODE_STR, kind, m_forbidden, None, recurring)
    unpacker = _INT_STRUCTS.get(kind)
    if unpacker is not None:
        return (_MODE_INT, kind, m_forbidden, (unpacker.unpack_from, unpacker.size), recurring)
    if kind is AvpType.OCTET_STRING:
        return (_MODE_OCTETS, kind, m_forbidden, None, recurring)
    if kind is AvpType.GROUPED:
        return (_MODE_GROUPED, kind, m_forbidden, None, recurring)
    return (_MODE_OTHER, kind, m_forbidden, None, recurring)


class _Unusual(Exception):
    """Something the fast decoder leaves to the careful one (which finds the error, if any)."""


def _decode_fast(
    data: bytes,
    table: Mapping[tuple[int, int], CodecEntry],
    strict: bool,
    pos: int,
    end: int,
    memo: dict[bytes, Avp] | None = None,
    runs: dict[bytes, list[tuple[bytes, tuple[Avp, ...]]]] | None = None,
) -> tuple[Avp, ...]:
    """The AVPs of ``data[pos:end]`` when all is well; :class:`_Unusual` otherwise.

    Well means: every length fits, every value decodes as its type, and (with
    ``strict``) no M bit is set where the dictionary says it must not be or
    on an AVP it does not know. The result is then what :func:`decode_avps`
    gives; anything else is left to it.

    ``memo`` (one per dictionary and value of ``strict``) maps the bytes of a
    recurring AVP, decoded well before, to its Avp: it is used again as is.
    ``runs`` (with ``memo``, one per the same) maps the bytes of the first of
    two or more recurring AVPs in a row to (a few) such rows: their bytes
    and Avps. Where the same bytes follow (a peer sends its identities and
    application ids in the same order every time) they are taken at once.
    """
    out: list[Avp] = []
    # the recurring AVPs in a row so far: where they began, their first's bytes
    run_start = -1
    run_key = b""
    append = out.append
    unpack_header = _HEADER.unpack_from
    unpack_vendor = _VENDOR.unpack_from
    get = table.get
    octets = AvpType.OCTET_STRING
    while pos < end:
        if end - pos < 8:
            raise _Unusual
        code, flags_len = unpack_header(data, pos)
        flags = flags_len >> 24
        length = flags_len & 0xFFFFFF
        payload_end = pos + length
        if flags & _V:
            if length < 12 or payload_end > end:
                raise _Unusual
            vendor_id: int = unpack_vendor(data, pos + 8)[0]
            vendor: int | None = vendor_id
            payload_start = pos + 12
            entry = get((code, vendor_id))
        else:
            if length < 8 or payload_end > end:
                raise _Unusual
            vendor = None
            payload_start = pos + 8
            entry = get((code, 0))
        mandatory = bool(flags & _M)
        value: Value
        raw = b""
        if entry is None or not entry[4]:
            if run_start >= 0:
                run_start = _end_run(runs, run_key, data, run_start, pos, out)
        if entry is None:
            if strict and mandatory:
                raise _Unusual
            kind = octets
            value = data[payload_start:payload_end]
        else:
            if entry[4] and memo is not None:
                raw = data[pos:payload_end]
                if run_start < 0:
                    known = runs.get(raw) if runs is not None else None
                    if known is not None:
                        for run_bytes, run_avps in known:
                            if data.startswith(run_bytes, pos) and pos + len(run_bytes) <= end:
                                out += run_avps
                                pos += len(run_bytes)
                                break
                        else:
                            known = None
                        if known is not None:
                            continue
                    run_start, run_key = pos, raw
                hit = memo.get(raw)
                if hit is not None:
                    append(hit)
                    pos += (length + 3) & ~3
                    continue
            mode, kind, forbidden, ints, _ = entry
            if forbidden and strict and mandatory:
                raise _Unusual
            if mode == _MODE_STR:
                try:
                    value = data[payload_start:payload_end].decode("utf-8")
                except UnicodeDecodeError:
                    raise _Unusual from None
            elif mode == _MODE_INT:
                assert ints is not None
                if payload_end - payload_start != ints[1]:
                    raise _Unusual
                value = ints[0](data, payload_start)[0]
            elif mode == _MODE_OCTETS:
                value = data[payload_start:payload_end]
            elif mode == _MODE_GROUPED:
                value = _decode_fast(data, table, strict, payload_start, payload_end, memo)
            else:
                try:
                    value = _decode_scalar(kind, data[payload_start:payload_end])
                except _ValueError:
                    raise _Unusual from None
        avp = Avp(code, value, kind, vendor, mandatory, bool(flags & _P))
        append(avp)
        if raw:
            assert memo is not None
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[raw] = avp
        pos += (length + 3) & ~3
    if run_start >= 0 and pos <= end:  # (not when the last AVP lacks its padding)
        _end_run(runs, run_key, data, run_start, pos, out)
    return tuple(out)


#: Rows of recurring AVPs kept per first AVP (see :func:`_decode_fast`).
_RUNS_PER_KEY = 4


def _end_run(
    runs: dict[bytes, list[tuple[bytes, tuple[Avp, ...]]]] | None,
    key: bytes,
    data: bytes,
    start: int,
    stop: int,
    out: list[Avp],
) -> int:
    """Keep the recurring AVPs of ``data[start:stop]`` (the last of ``out``)
    as a row under ``key``, the bytes of its first, if there are two or more
    and room for it; -1 (no row begun)."""
    if runs is None:
        return -1
    known = runs.get(key)
    if known is not None and len(known) >= _RUNS_PER_KEY:
        return -1
    count = 0
    pos = start
    while pos < stop:  # how many: their lengths, checked already
        pos += (int.from_bytes(data[pos + 5 : pos + 8], "big") + 3) & ~3
        count += 1
    if count < 2:
        return -1
    row = data[start:stop]
    if known is None:
        if len(runs) >= _MEMO_SIZE:
            runs.clear()
        runs[key] = [(row, tuple(out[len(out) - count :]))]
    elif all(row != other for other, _ in known):
        known.append((row, tuple(out[len(out) - count :])))
    return -1


def decode_avps(
    data: bytes,
    dictionary: Dictionary,
    *,
    strict: bool = True,
    start: int = 0,
    end: int | None = None,
    lenient: bool = False,
) -> tuple[Avp, ...]:
    """Decode the AVPs in ``data[start:end]``.

    Raises :class:`DecodeError` with the RFC 6733 result code and a
    Failed-AVP. With ``strict`` (requests), an unknown AVP with the M bit
    raises 5001 DIAMETER_AVP_UNSUPPORTED and an M bit the dictionary forbids
    raises 3009 DIAMETER_INVALID_AVP_BITS; without it (answers) both pass.

    The contents of a Failed-AVP are invalid by nature: a value inside it that
    does not decode as its type is kept as raw octets (``lenient``).
    """
    if end is None:
        end = len(data)
    try:
        return _decode_fast(
            data,
            dictionary.codec_table,
            strict,
            start,
            end,
            dictionary.decode_memo(strict),
            dictionary.decode_runs(strict),
        )
    except _Unusual:
        pass
    return _decode_careful(data, dictionary, strict=strict, start=start, end=end, lenient=lenient)


def _decode_careful(
    data: bytes,
    dictionary: Dictionary,
    *,
    strict: bool,
    start: int,
    end: int,
    lenient: bool,
) -> tuple[Avp, ...]:
    """:func:`decode_avps` one AVP at a time, with the error of the first bad one."""
    out: list[Avp] = []
    pos = start
    unpack_header = _HEADER.unpack_from
    defs_get = dictionary.definitions.get
    while pos < end:
        if end - pos < 8:
            raise DecodeError(
                "truncated AVP header",
                ResultCode.INVALID_AVP_LENGTH,
                Avp(0, bytes(data[pos:end])),
            )
        code, flags_len = unpack_header(data, pos)
        flags = flags_len >> 24
        length = flags_len & 0xFFFFFF
        has_vendor = bool(flags & _V)
        mandatory = bool(flags & _M)
        protected = bool(flags & _P)
        header_len = 12 if has_vendor else 8
        vendor: int | None = None
        if has_vendor:
            if end - pos < 12:
                raise DecodeError(
                    f"AVP {code}: truncated vendor id",
                    ResultCode.INVALID_AVP_LENGTH,
                    Avp(code, b"", mandatory=mandatory),
                )
            vendor = _VENDOR.unpack_from(data, pos + 8)[0]
        if length < header_len or pos + length > end:
            payload = bytes(data[pos + header_len : min(end, pos + max(length, header_len))])
            raise DecodeError(
                f"AVP {code}: length {length} does not fit",
                ResultCode.INVALID_AVP_LENGTH,
                Avp(code, payload, vendor=vendor, mandatory=mandatory, protected=protected),
            )
        payload_start = pos + header_len
        payload_end = pos + length
        definition = defs_get((code, vendor or 0))
        if definition is None:
            if strict and mandatory:
                raise DecodeError(
                    f"unknown AVP {code} (vendor {vendor or 0}) with the M bit",
                    ResultCode.AVP_UNSUPPORTED,
                    Avp(
                        code, bytes(data[payload_start:payload_end]), vendor=vendor, mandatory=True
                    ),
                )
            kind = AvpType.OCTET_STRING
        else:
            kind = definition.type
            if strict and mandatory and definition.m_forbidden:
                raise DecodeError(
                    f"AVP {definition.name} must not carry the M bit",
                    ResultCode.INVALID_AVP_BITS,
                    Avp(
                        code, bytes(data[payload_start:payload_end]), vendor=vendor, mandatory=True
                    ),
                )
        value: Value
        if kind is AvpType.GROUPED:
            try:
                value = _decode_careful(
                    data,
                    dictionary,
                    strict=strict,
                    start=payload_start,
                    end=payload_end,
                    lenient=lenient or (code == AvpCode.FAILED_AVP and not has_vendor),
                )
            except DecodeError as exc:
                if lenient:
                    out.append(
                        Avp(
                            code,
                            bytes(data[payload_start:payload_end]),
                            vendor=vendor,
                            mandatory=mandatory,
                            protected=protected,
                        )
                    )
                    pos += length + (-length % 4)
                    continue
                inner = exc.failed_avp
                exc.failed_avp = Avp(
                    code,
                    (inner,) if inner is not None else (),
                    AvpType.GROUPED,
                    vendor,
                    mandatory,
                    protected,
                )
                raise
        else:
            try:
                value = _decode_scalar(kind, data[payload_start:payload_end])
            except _ValueError as exc:
                if lenient:
                    out.append(
                        Avp(
                            code,
                            bytes(data[payload_start:payload_end]),
                            vendor=vendor,
                            mandatory=mandatory,
                            protected=protected,
                        )
                    )
                    pos += length + (-length % 4)
                    continue
                name = definition.name if definition is not None else str(code)
                raise DecodeError(
                    f"AVP {name}: {exc.reason}",
                    exc.result_code,
                    Avp(
                        code,
                        bytes(data[payload_start:payload_end]),
                        vendor=vendor,
                        mandatory=mandatory,
                        protected=protected,
                    ),
                ) from None
        out.append(Avp(code, value, kind, vendor, mandatory, protected))
        pos += length + (-length % 4)
    # The padding of the last AVP may run past ``end`` (a Grouped whose length leaves
    # it out): that is tolerated, as RFC 6733 asks receivers to be liberal there.
    return tuple(out)
