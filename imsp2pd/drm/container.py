"""The protected content file: a header piece, then one AES-GCM segment per piece.

This is the container of DESIGN.md §3. Everything that reads or writes a
protected file goes through this module; others only need the header (for
example ``imsp2p torrent make`` takes the piece length from it, with
:func:`read_header_from_path`).

Byte layout
===========

A container of plaintext length ``L`` with piece length ``P`` is
``P + L + 16 * n`` bytes long, where ``n = max(1, ceil(L / (P - 16)))`` is the
number of segments (an empty plaintext still has one empty segment, so that
the header is always authenticated).

Piece 0 is the header, padded with zero bytes to ``P``. All integers are
unsigned big-endian::

    offset   size  field
    0        8     magic            b"\\x89IMSP2P\\n"
    8        1     version          1
    9        1     scheme           1 = AES-128-GCM segments, HKDF-SHA256 subkey
    10       2     header length H  bytes 0 .. H-1 are the header (76 + d + k)
    12       4     piece length P   a power of two, 16 KiB <= P <= 64 MiB
    16       8     plaintext length L
    24       16    salt             random, made anew by every protect run
    40       16    key check        HKDF-SHA256(K, salt, "imsp2p-container key check", 16)
    56       2     d                length of the DOI (1 .. 1024)
    58       d     DOI              UTF-8, no NUL
    58+d     2     k                length of the key id (1 .. 1024)
    60+d     k     key id           UTF-8, no NUL
    60+d+k   16    header tag       HMAC-SHA256(mac key, bytes 0 .. 59+d+k), first 16 bytes
    H        P-H   zero padding

Piece ``i + 1`` (``i = 0 .. n-1``) is segment ``i``: ``P - 16`` bytes of
plaintext (the last segment: what is left, possibly fewer) encrypted with
AES-128-GCM, followed by the 16-byte tag.

Keys and nonces, from the 128-bit content key ``K``::

    okm      = HKDF-SHA256(ikm=K, salt=salt, info=DOI || 0x00 || key id, length=55)
    subkey   = okm[0:16]       the AES-128-GCM key of every segment
    prefix   = okm[16:23]      7 bytes
    mac key  = okm[23:55]      the key of the header tag
    nonce(i) = prefix || i as 4 bytes || 1 if i is the last segment else 0
    AAD      = the header, bytes 0 .. H-1 (the padding is not in the AAD; it
               must be zero, which the parser checks)

The salt is new at every protect run, so protecting again with the same key
gives a new subkey and never repeats a (key, nonce) pair. The segment index in
the nonce catches reordered pieces, the last-segment flag and the plaintext
length in the authenticated header catch truncation, and the header tag tells
a changed header apart from a corrupt segment. The key check value tells a
wrong key apart from a changed header (a changed salt also reads as a wrong
key: nothing else can tell them apart).

Everything here is pure: no sockets, no reactor. Streaming functions take
binary file objects and use memory proportional to the piece length only.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from hashlib import sha256
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "DEFAULT_PIECE_LENGTH",
    "KEY_SIZE",
    "MAGIC",
    "MAX_PIECE_LENGTH",
    "MIN_PIECE_LENGTH",
    "TAG_SIZE",
    "ContainerError",
    "Fault",
    "Header",
    "HeaderChangedError",
    "HeaderError",
    "KeyMismatchError",
    "Opener",
    "Scheme",
    "Sealer",
    "SegmentCorruptError",
    "SegmentError",
    "SegmentOutOfPlaceError",
    "SourceChangedError",
    "TrailingDataError",
    "TruncatedError",
    "is_container",
    "new_content_key",
    "open_stream",
    "protect_stream",
    "read_header",
    "read_header_from_path",
    "verify_structure",
]

MAGIC = b"\x89IMSP2P\n"
VERSION = 1
KEY_SIZE = 16
TAG_SIZE = 16
SALT_SIZE = 16
KCV_SIZE = 16
HEADER_TAG_SIZE = 16
NONCE_PREFIX_SIZE = 7
MIN_PIECE_LENGTH = 16 * 1024
MAX_PIECE_LENGTH = 64 * 1024 * 1024
DEFAULT_PIECE_LENGTH = 256 * 1024
MAX_NAME_BYTES = 1024
MAX_SEGMENTS = 1 << 32
# How many other segment positions are tried to name a misplaced piece.
OUT_OF_PLACE_SEARCH_LIMIT = 4096

_FIXED = struct.Struct(">8sBBHIQ16s16s")  # up to and including the key check
_U16 = struct.Struct(">H")
_KCV_INFO = b"imsp2p-container key check"
_OKM_LENGTH = KEY_SIZE + NONCE_PREFIX_SIZE + 32


class Scheme(IntEnum):
    """The encryption scheme byte of the header."""

    AES128_GCM_HKDF_SHA256 = 1


class Fault(IntEnum):
    """What is wrong with a container; every :class:`ContainerError` has one."""

    NOT_A_CONTAINER = 1
    UNSUPPORTED = 2
    HEADER_MALFORMED = 3
    WRONG_KEY = 4
    HEADER_CHANGED = 5
    TRUNCATED = 6
    TRAILING_DATA = 7
    SEGMENT_CORRUPT = 8
    SEGMENT_OUT_OF_PLACE = 9
    SOURCE_CHANGED = 10


class ContainerError(ValueError):
    """A protected file (or its key) is not what it should be. One line of text."""

    fault: Fault = Fault.HEADER_MALFORMED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HeaderError(ContainerError):
    """Piece 0 is not a well-formed header of a version this code reads."""

    def __init__(self, message: str, fault: Fault = Fault.HEADER_MALFORMED) -> None:
        super().__init__(message)
        self.fault = fault


class KeyMismatchError(ContainerError):
    fault = Fault.WRONG_KEY


class HeaderChangedError(ContainerError):
    fault = Fault.HEADER_CHANGED


class TruncatedError(ContainerError):
    """The file ends early; ``segment`` is the first missing or short segment."""

    fault = Fault.TRUNCATED

    def __init__(self, message: str, segment: int) -> None:
        super().__init__(message)
        self.segment = segment


class TrailingDataError(ContainerError):
    fault = Fault.TRAILING_DATA


class SegmentError(ContainerError):
    """A segment failed; ``segment`` is its index, ``piece`` the piece holding it."""

    def __init__(self, message: str, segment: int) -> None:
        super().__init__(message)
        self.segment = segment
        self.piece = segment + 1


class SegmentCorruptError(SegmentError):
    fault = Fault.SEGMENT_CORRUPT


class SegmentOutOfPlaceError(SegmentError):
    """The piece at ``segment``'s place holds segment ``found`` (pieces reordered)."""

    fault = Fault.SEGMENT_OUT_OF_PLACE

    def __init__(self, message: str, segment: int, found: int) -> None:
        super().__init__(message, segment)
        self.found = found


class SourceChangedError(ContainerError):
    """The plaintext source did not have the length announced (it changed while read)."""

    fault = Fault.SOURCE_CHANGED


def new_content_key(urandom: Callable[[int], bytes] = os.urandom) -> bytes:
    """A fresh 128-bit content key."""
    return urandom(KEY_SIZE)


def _check_name(what: str, value: str) -> bytes:
    if not isinstance(value, str):
        raise HeaderError(f"{what} must be text")
    raw = value.encode("utf-8")
    if not raw:
        raise HeaderError(f"{what} is empty")
    if len(raw) > MAX_NAME_BYTES:
        raise HeaderError(f"{what} is longer than {MAX_NAME_BYTES} bytes")
    if b"\x00" in raw:
        raise HeaderError(f"{what} contains a NUL character")
    return raw


def check_piece_length(piece_length: int) -> None:
    """Raise :class:`HeaderError` unless ``piece_length`` is a usable piece length."""
    if (
        not isinstance(piece_length, int)
        or piece_length < MIN_PIECE_LENGTH
        or piece_length > MAX_PIECE_LENGTH
        or piece_length & (piece_length - 1)
    ):
        raise HeaderError(
            f"piece length {piece_length} is not a power of two between "
            f"{MIN_PIECE_LENGTH} and {MAX_PIECE_LENGTH}"
        )


@dataclass(frozen=True)
class Header:
    """The decoded header of a container (piece 0)."""

    doi: str
    key_id: str
    salt: bytes
    key_check: bytes
    plaintext_length: int
    piece_length: int
    tag: bytes
    scheme: Scheme = Scheme.AES128_GCM_HKDF_SHA256
    version: int = VERSION

    # -- geometry ---------------------------------------------------------

    @property
    def segment_plaintext_size(self) -> int:
        """Plaintext bytes in every full segment."""
        return self.piece_length - TAG_SIZE

    @property
    def segment_count(self) -> int:
        full = self.segment_plaintext_size
        return max(1, -(-self.plaintext_length // full))

    @property
    def piece_count(self) -> int:
        """Pieces in the container file, the header piece included."""
        return self.segment_count + 1

    @property
    def container_length(self) -> int:
        return self.piece_length + self.plaintext_length + TAG_SIZE * self.segment_count

    def plaintext_size(self, segment: int) -> int:
        """Plaintext bytes in ``segment``."""
        n = self.segment_count
        if not 0 <= segment < n:
            raise IndexError(f"segment {segment} is not in 0..{n - 1}")
        if segment < n - 1:
            return self.segment_plaintext_size
        return self.plaintext_length - (n - 1) * self.segment_plaintext_size

    def piece_size(self, piece: int) -> int:
        """Bytes in container piece ``piece`` (piece 0 is the header)."""
        if piece == 0:
            return self.piece_length
        return self.plaintext_size(piece - 1) + TAG_SIZE

    def plaintext_offset(self, segment: int) -> int:
        """Offset in the plaintext of the first byte of ``segment``."""
        return segment * self.segment_plaintext_size

    # -- encoding ---------------------------------------------------------

    def signed_part(self) -> bytes:
        """The header bytes that the header tag covers (all but the tag)."""
        doi = _check_name("DOI", self.doi)
        key_id = _check_name("key id", self.key_id)
        length = _FIXED.size + 2 + len(doi) + 2 + len(key_id) + HEADER_TAG_SIZE
        return (
            _FIXED.pack(
                MAGIC,
                self.version,
                int(self.scheme),
                length,
                self.piece_length,
                self.plaintext_length,
                self.salt,
                self.key_check,
            )
            + _U16.pack(len(doi))
            + doi
            + _U16.pack(len(key_id))
            + key_id
        )

    def encode(self) -> bytes:
        """The header bytes (unpadded); the AAD of every segment."""
        return self.signed_part() + self.tag

    def to_piece(self) -> bytes:
        """Piece 0: the header padded with zeros to the piece length."""
        raw = self.encode()
        return raw + bytes(self.piece_length - len(raw))

    @classmethod
    def decode(cls, data: bytes, *, check_padding: bool = True) -> Header:
        """Parse a header from ``data`` (piece 0, or at least the header bytes).

        With ``check_padding``, ``data`` must be the whole piece 0 and its
        padding must be zero.
        """
        data = bytes(data)
        if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
            raise HeaderError("not a protected file (bad magic)", Fault.NOT_A_CONTAINER)
        if len(data) < _FIXED.size:
            raise HeaderError("header is cut short")
        magic, version, scheme, length, piece_length, plaintext_length, salt, kcv = (
            _FIXED.unpack_from(data)
        )
        if version != VERSION:
            raise HeaderError(f"container version {version} is not supported", Fault.UNSUPPORTED)
        try:
            scheme_value = Scheme(scheme)
        except ValueError:
            raise HeaderError(f"scheme {scheme} is not supported", Fault.UNSUPPORTED) from None
        check_piece_length(piece_length)
        if len(data) < length:
            raise HeaderError("header is cut short")
        pos = _FIXED.size
        names: list[str] = []
        for what in ("DOI", "key id"):
            if pos + 2 > length:
                raise HeaderError(f"header length {length} leaves no room for the {what}")
            (size,) = _U16.unpack_from(data, pos)
            pos += 2
            if pos + size > length:
                raise HeaderError(f"{what} runs past the header length {length}")
            try:
                text = data[pos : pos + size].decode("utf-8")
            except UnicodeDecodeError:
                raise HeaderError(f"{what} is not UTF-8") from None
            _check_name(what, text)
            names.append(text)
            pos += size
        if pos + HEADER_TAG_SIZE != length:
            raise HeaderError(f"header length {length} does not match its fields")
        header = cls(
            doi=names[0],
            key_id=names[1],
            salt=salt,
            key_check=kcv,
            plaintext_length=plaintext_length,
            piece_length=piece_length,
            tag=data[pos:length],
            scheme=scheme_value,
            version=version,
        )
        if header.segment_count > MAX_SEGMENTS:
            raise HeaderError("plaintext length needs more segments than the nonce can count")
        if check_padding:
            if len(data) != piece_length:
                raise HeaderError(
                    f"header piece is {len(data)} bytes, the piece length is {piece_length}"
                )
            if data[length:].count(0) != piece_length - length:
                raise HeaderError("header padding is not zero")
        return header

    def describe(self) -> list[tuple[str, str]]:
        """The header as (name, value) lines of text, for ``imsp2p drm inspect``."""
        return [
            ("format", f"imsp2p protected content, version {self.version}"),
            ("scheme", f"{int(self.scheme)} ({self.scheme.name})"),
            ("doi", self.doi),
            ("key-id", self.key_id),
            ("salt", self.salt.hex()),
            ("key-check", self.key_check.hex()),
            ("plaintext-length", str(self.plaintext_length)),
            ("piece-length", str(self.piece_length)),
            ("segments", str(self.segment_count)),
            ("pieces", str(self.piece_count)),
            ("container-length", str(self.container_length)),
        ]


# -- key schedule -------------------------------------------------------------


def _info(doi: str, key_id: str) -> bytes:
    return _check_name("DOI", doi) + b"\x00" + _check_name("key id", key_id)


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise ValueError(f"a content key is {KEY_SIZE} bytes")
    return bytes(key)


def key_check_value(key: bytes, salt: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KCV_SIZE, salt=salt, info=_KCV_INFO)
    return hkdf.derive(_check_key(key))


@dataclass(frozen=True)
class _Keys:
    subkey: bytes
    prefix: bytes
    mac_key: bytes


def _derive(key: bytes, salt: bytes, doi: str, key_id: str) -> _Keys:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=_OKM_LENGTH, salt=salt, info=_info(doi, key_id))
    okm = hkdf.derive(_check_key(key))
    return _Keys(
        subkey=okm[:KEY_SIZE],
        prefix=okm[KEY_SIZE : KEY_SIZE + NONCE_PREFIX_SIZE],
        mac_key=okm[KEY_SIZE + NONCE_PREFIX_SIZE :],
    )


def _header_tag(mac_key: bytes, signed_part: bytes) -> bytes:
    return hmac.new(mac_key, signed_part, sha256).digest()[:HEADER_TAG_SIZE]


def nonce(prefix: bytes, segment: int, last: bool) -> bytes:
    """The 12-byte GCM nonce of ``segment``."""
    return prefix + segment.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


# -- sealing and opening (sans-IO) ----------------------------------------------


class Sealer:
    """Encrypts the segments of one container; one protect run, one fresh salt."""

    def __init__(
        self,
        key: bytes,
        *,
        doi: str,
        key_id: str,
        plaintext_length: int,
        piece_length: int = DEFAULT_PIECE_LENGTH,
        urandom: Callable[[int], bytes] = os.urandom,
    ) -> None:
        check_piece_length(piece_length)
        if not isinstance(plaintext_length, int) or plaintext_length < 0:
            raise ValueError("plaintext length must be a non-negative integer")
        salt = urandom(SALT_SIZE)
        keys = _derive(key, salt, doi, key_id)
        draft = Header(
            doi=doi,
            key_id=key_id,
            salt=salt,
            key_check=key_check_value(key, salt),
            plaintext_length=plaintext_length,
            piece_length=piece_length,
            tag=bytes(HEADER_TAG_SIZE),
        )
        if draft.segment_count > MAX_SEGMENTS:
            raise HeaderError("plaintext is too long for this piece length")
        signed = draft.signed_part()
        self.header = Header(
            doi=doi,
            key_id=key_id,
            salt=salt,
            key_check=draft.key_check,
            plaintext_length=plaintext_length,
            piece_length=piece_length,
            tag=_header_tag(keys.mac_key, signed),
        )
        self._aad = self.header.encode()
        self._prefix = keys.prefix
        self._aead = AESGCM(keys.subkey)
        self._last = self.header.segment_count - 1

    def header_piece(self) -> bytes:
        return self.header.to_piece()

    def nonce(self, segment: int) -> bytes:
        return nonce(self._prefix, segment, segment == self._last)

    def seal(self, segment: int, plaintext: bytes | bytearray | memoryview) -> bytes:
        """The piece holding ``segment`` (ciphertext and tag)."""
        expected = self.header.plaintext_size(segment)
        if len(plaintext) != expected:
            raise ValueError(f"segment {segment} takes {expected} bytes, got {len(plaintext)}")
        return self._aead.encrypt(self.nonce(segment), bytes(plaintext), self._aad)

    def seal_into(self, segment: int, plaintext: memoryview, out: bytearray) -> int:
        """Like :meth:`seal`, into ``out`` (exactly plaintext + 16 bytes long)."""
        expected = self.header.plaintext_size(segment)
        if len(plaintext) != expected:
            raise ValueError(f"segment {segment} takes {expected} bytes, got {len(plaintext)}")
        return self._aead.encrypt_into(self.nonce(segment), plaintext, self._aad, out)


class Opener:
    """Verifies and decrypts the pieces of one container, each on its own.

    Building one checks the key against the header's key check value and the
    header tag, so a wrong key and a changed header are told apart before any
    segment is read.
    """

    def __init__(self, key: bytes, header: Header) -> None:
        if not hmac.compare_digest(key_check_value(key, header.salt), header.key_check):
            raise KeyMismatchError(
                "the key does not match this container (wrong key, or the header's "
                "salt or key check was changed)"
            )
        keys = _derive(key, header.salt, header.doi, header.key_id)
        if not hmac.compare_digest(_header_tag(keys.mac_key, header.signed_part()), header.tag):
            raise HeaderChangedError("the header was changed (its tag does not verify)")
        self.header = header
        self._aad = header.encode()
        self._prefix = keys.prefix
        self._aead = AESGCM(keys.subkey)
        self._last = header.segment_count - 1

    @classmethod
    def from_piece0(cls, key: bytes, piece0: bytes) -> Opener:
        return cls(key, Header.decode(piece0))

    def _try(self, segment: int, data: bytes | bytearray | memoryview) -> bytes | None:
        try:
            return self._aead.decrypt(
                nonce(self._prefix, segment, segment == self._last), data, self._aad
            )
        except InvalidTag:
            return None

    def _check_size(self, segment: int, data: bytes | bytearray | memoryview) -> None:
        expected = self.header.plaintext_size(segment) + TAG_SIZE
        if len(data) < expected:
            raise TruncatedError(
                f"segment {segment} (piece {segment + 1}) is {len(data)} bytes, "
                f"expected {expected}: truncated",
                segment,
            )
        if len(data) > expected:
            raise SegmentCorruptError(
                f"segment {segment} (piece {segment + 1}) is {len(data)} bytes, expected {expected}",
                segment,
            )

    def open_segment(self, segment: int, data: bytes | bytearray | memoryview) -> bytes:
        """Verify and decrypt ``segment``; raise a :class:`SegmentError` naming it."""
        if not 0 <= segment < self.header.segment_count:
            raise IndexError(f"segment {segment} is not in 0..{self.header.segment_count - 1}")
        self._check_size(segment, data)
        plain = self._try(segment, data)
        if plain is None:
            raise self._diagnose(segment, data)
        return plain

    def open_piece(self, piece: int, data: bytes | bytearray | memoryview) -> bytes:
        """Verify and decrypt container piece ``piece`` (1 .. segment count)."""
        if piece == 0:
            raise IndexError("piece 0 is the header, not a segment")
        return self.open_segment(piece - 1, data)

    def open_segment_into(self, segment: int, data: memoryview, out: bytearray) -> None:
        """Like :meth:`open_segment`, into ``out`` (exactly the plaintext size long)."""
        self._check_size(segment, data)
        try:
            self._aead.decrypt_into(
                nonce(self._prefix, segment, segment == self._last), data, self._aad, out
            )
        except InvalidTag:
            raise self._diagnose(segment, data) from None

    def _diagnose(self, segment: int, data: bytes | bytearray | memoryview) -> SegmentError:
        """Name why ``segment`` failed: another segment in its place, or corruption."""
        n = self.header.segment_count
        size = len(data) - TAG_SIZE
        for j in _nearest(segment, n, OUT_OF_PLACE_SEARCH_LIMIT):
            if self.header.plaintext_size(j) == size and self._try(j, data) is not None:
                return SegmentOutOfPlaceError(
                    f"piece {segment + 1} holds segment {j}, not segment {segment}: "
                    "pieces were reordered",
                    segment,
                    j,
                )
        return SegmentCorruptError(
            f"segment {segment} (piece {segment + 1}) failed authentication: corrupted",
            segment,
        )


def _nearest(segment: int, count: int, limit: int) -> Iterator[int]:
    """Up to ``limit`` indices in 0..count-1 other than ``segment``, nearest first."""
    given = 0
    distance = 1
    while given < limit and (segment - distance >= 0 or segment + distance < count):
        for j in (segment - distance, segment + distance):
            if 0 <= j < count and given < limit:
                given += 1
                yield j
        distance += 1


# -- streaming ------------------------------------------------------------------


def _read_exactly(src: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``src``; return how many bytes came (short only at EOF)."""
    got = 0
    total = len(view)
    while got < total:
        n = src.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def protect_stream(
    src: BinaryIO,
    dst: BinaryIO,
    key: bytes,
    *,
    doi: str,
    key_id: str,
    plaintext_length: int,
    piece_length: int = DEFAULT_PIECE_LENGTH,
    urandom: Callable[[int], bytes] = os.urandom,
) -> Header:
    """Encrypt exactly ``plaintext_length`` bytes of ``src`` into a container on ``dst``.

    Memory use is two pieces whatever the size. Raises
    :class:`SourceChangedError` if ``src`` holds fewer or more bytes.
    """
    sealer = Sealer(
        key,
        doi=doi,
        key_id=key_id,
        plaintext_length=plaintext_length,
        piece_length=piece_length,
        urandom=urandom,
    )
    header = sealer.header
    dst.write(sealer.header_piece())
    inbuf = bytearray(header.segment_plaintext_size)
    outbuf = bytearray(piece_length)
    inview = memoryview(inbuf)
    outview = memoryview(outbuf)
    for segment in range(header.segment_count):
        size = header.plaintext_size(segment)
        got = _read_exactly(src, inview[:size])
        if got != size:
            raise SourceChangedError(
                f"the input ended at byte {header.plaintext_offset(segment) + got}, "
                f"expected {plaintext_length} bytes"
            )
        if size + TAG_SIZE == piece_length:
            sealer.seal_into(segment, inview[:size], outbuf)
            dst.write(outview)
        else:
            dst.write(sealer.seal(segment, inview[:size]))
    if src.read(1):
        raise SourceChangedError(f"the input is longer than the expected {plaintext_length} bytes")
    return header


def read_header(src: BinaryIO) -> Header:
    """Read and parse piece 0 from ``src`` (positioned at the start of the file)."""
    head = src.read(_FIXED.size)
    if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
        raise HeaderError("not a protected file (bad magic)", Fault.NOT_A_CONTAINER)
    if len(head) < _FIXED.size:
        raise HeaderError("header is cut short")
    piece_length = struct.unpack_from(">I", head, 12)[0]
    check_piece_length(piece_length)
    rest = src.read(piece_length - len(head))
    data = head + rest
    if len(data) < piece_length:
        # Parse what is there first so a malformed header is named as such.
        Header.decode(data, check_padding=False)
        raise TruncatedError("the file ends inside the header piece", 0)
    return Header.decode(data)


def read_header_from_path(path: str | os.PathLike[str]) -> Header:
    """The header of the container at ``path`` (for ``imsp2p torrent make``)."""
    with open(path, "rb") as f:
        return read_header(f)


def is_container(prefix: bytes) -> bool:
    """Does ``prefix`` (the first bytes of a file) start like a container?"""
    return prefix[: len(MAGIC)] == MAGIC


def _iter_pieces(src: BinaryIO, header: Header) -> Iterator[tuple[int, memoryview]]:
    """Yield (segment, piece data) for every segment, raising on a short file."""
    buf = bytearray(header.piece_length)
    view = memoryview(buf)
    for segment in range(header.segment_count):
        size = header.piece_size(segment + 1)
        got = _read_exactly(src, view[:size])
        if got < size:
            raise TruncatedError(
                f"the file is truncated: segment {segment} (piece {segment + 1}) "
                f"{'is missing' if got == 0 else f'has {got} of {size} bytes'}; "
                f"the header announces {header.segment_count} segments",
                segment,
            )
        yield segment, view[:size]
    if src.read(1):
        raise TrailingDataError(
            f"the file has data after its last segment (expected {header.container_length} bytes)"
        )


def verify_structure(src: BinaryIO) -> Header:
    """Check without the key that ``src`` is a whole, well-formed container.

    This catches a bad header, truncation and trailing data; corrupt or
    reordered segments need the key (:func:`open_stream`).
    """
    header = read_header(src)
    for _ in _iter_pieces(src, header):
        pass
    return header


def open_stream(src: BinaryIO, dst: BinaryIO, key: bytes) -> Header:
    """Verify and decrypt the container on ``src`` to ``dst``, streaming.

    Raises a :class:`ContainerError` naming the first fault. ``dst`` may
    already have received the plaintext of the segments before the bad one:
    callers that must leave nothing behind write to a temporary file (see
    :mod:`imsp2pd.drm.files`).
    """
    header = read_header(src)
    opener = Opener(key, header)
    out = bytearray(header.segment_plaintext_size)
    outview = memoryview(out)
    for segment, piece in _iter_pieces(src, header):
        size = len(piece) - TAG_SIZE
        if size == len(out):
            opener.open_segment_into(segment, piece, out)
            dst.write(outview)
        else:
            dst.write(opener.open_segment(segment, piece))
    return header
