"""The protected container (imsp2pd.drm.container): layout, round trips, every fault named."""

from __future__ import annotations

import io
import itertools
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imsp2pd.drm import container as c

KEY = bytes(range(16))
OTHER_KEY = bytes(range(1, 17))
P = c.MIN_PIECE_LENGTH  # 16 KiB: the smallest piece, so tests stay small
SEG = P - c.TAG_SIZE
DOI = "10.5555/film-1"
KEY_ID = "k-0001"


def protect(data: bytes, key: bytes = KEY, piece_length: int = P, **kw) -> bytes:
    out = io.BytesIO()
    c.protect_stream(
        io.BytesIO(data),
        out,
        key,
        doi=kw.get("doi", DOI),
        key_id=kw.get("key_id", KEY_ID),
        plaintext_length=len(data),
        piece_length=piece_length,
        **{k: v for k, v in kw.items() if k == "urandom"},
    )
    return out.getvalue()


def unprotect(blob: bytes, key: bytes = KEY) -> bytes:
    out = io.BytesIO()
    c.open_stream(io.BytesIO(blob), out, key)
    return out.getvalue()


def pieces(blob: bytes, piece_length: int = P) -> list[bytes]:
    return [blob[i : i + piece_length] for i in range(0, len(blob), piece_length)]


# -- layout -------------------------------------------------------------------


def test_header_layout_is_as_documented() -> None:
    blob = protect(b"x" * 100)
    head = blob[:P]
    assert head[:8] == b"\x89IMSP2P\n"
    assert head[8] == 1 and head[9] == 1
    length = int.from_bytes(head[10:12], "big")
    assert length == 76 + len(DOI) + len(KEY_ID)
    assert int.from_bytes(head[12:16], "big") == P
    assert int.from_bytes(head[16:24], "big") == 100
    salt = head[24:40]
    assert head[40:56] == c.key_check_value(KEY, salt)
    d = int.from_bytes(head[56:58], "big")
    assert head[58 : 58 + d].decode() == DOI
    k = int.from_bytes(head[58 + d : 60 + d], "big")
    assert head[60 + d : 60 + d + k].decode() == KEY_ID
    assert head[length:] == bytes(P - length)
    header = c.Header.decode(head)
    assert header.encode() == head[:length]
    assert header.tag == head[length - 16 : length]


def test_segment_is_aes_gcm_with_documented_nonce_and_aad() -> None:
    """An independent decryption from the documented key schedule."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    data = os.urandom(SEG + 10)
    blob = protect(data)
    header = c.Header.decode(blob[:P])
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=55,
        salt=header.salt,
        info=DOI.encode() + b"\x00" + KEY_ID.encode(),
    ).derive(KEY)
    aead = AESGCM(okm[:16])
    aad = blob[: int.from_bytes(blob[10:12], "big")]
    first = aead.decrypt(okm[16:23] + (0).to_bytes(4, "big") + b"\x00", blob[P : 2 * P], aad)
    last = aead.decrypt(okm[16:23] + (1).to_bytes(4, "big") + b"\x01", blob[2 * P :], aad)
    assert first + last == data


@pytest.mark.parametrize(
    ("length", "segments"),
    [(0, 1), (1, 1), (SEG - 1, 1), (SEG, 1), (SEG + 1, 2), (3 * SEG, 3), (3 * SEG + 5, 4)],
)
def test_geometry(length: int, segments: int) -> None:
    blob = protect(os.urandom(length))
    header = c.Header.decode(blob[:P])
    assert header.segment_count == segments
    assert header.piece_count == segments + 1
    assert len(blob) == header.container_length == P + length + 16 * segments
    for i, piece in enumerate(pieces(blob)):
        assert len(piece) == header.piece_size(i)


def test_default_piece_length_and_header_from_path(tmp_path) -> None:
    src = tmp_path / "in"
    src.write_bytes(b"abc")
    out = tmp_path / "out"
    with open(src, "rb") as fi, open(out, "wb") as fo:
        c.protect_stream(fi, fo, KEY, doi=DOI, key_id=KEY_ID, plaintext_length=3)
    header = c.read_header_from_path(out)
    assert header.piece_length == c.DEFAULT_PIECE_LENGTH == 256 * 1024
    assert c.is_container(out.read_bytes()[:16])
    assert not c.is_container(b"d8:announce")


@pytest.mark.parametrize("bad", [0, 1000, 16 * 1024 + 1, 3 * 16 * 1024, 128 * 1024 * 1024])
def test_bad_piece_lengths_refused(bad: int) -> None:
    with pytest.raises(c.HeaderError):
        protect(b"x", piece_length=bad)


@pytest.mark.parametrize("name", ["", "a\x00b", "x" * 1025])
def test_bad_names_refused(name: str) -> None:
    with pytest.raises(c.HeaderError):
        protect(b"x", doi=name)
    with pytest.raises(c.HeaderError):
        protect(b"x", key_id=name)


# -- round trips ----------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=3 * SEG + 100),
    doi=st.text(
        alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
        min_size=1,
        max_size=40,
    ),
    key=st.binary(min_size=16, max_size=16),
)
def test_round_trip(data: bytes, doi: str, key: bytes) -> None:
    blob = protect(data, key=key, doi=doi)
    assert unprotect(blob, key) == data
    assert c.Header.decode(blob[:P]).doi == doi


def test_round_trip_larger_pieces() -> None:
    data = os.urandom(3 * 65536 + 7)
    blob = protect(data, piece_length=65536)
    assert unprotect(blob) == data


def test_every_piece_decrypts_alone_in_any_order() -> None:
    data = os.urandom(5 * SEG + 77)
    blob = protect(data)
    opener = c.Opener.from_piece0(KEY, blob[:P])
    ps = pieces(blob)
    for i in reversed(range(1, len(ps))):
        start = (i - 1) * SEG
        assert opener.open_piece(i, ps[i]) == data[start : start + SEG]


def test_streaming_uses_constant_memory_sized_buffers() -> None:
    """Read calls never ask for more than one piece, whatever the file size."""

    class Recorder(io.BytesIO):
        biggest = 0

        def readinto(self, b) -> int:  # type: ignore[override]
            Recorder.biggest = max(Recorder.biggest, len(b))
            return super().readinto(b)

        def read(self, n: int | None = -1) -> bytes:  # type: ignore[override]
            assert n is not None and 0 <= n <= P
            return super().read(n)

    data = os.urandom(20 * SEG)
    out = io.BytesIO()
    c.protect_stream(
        Recorder(data), out, KEY, doi=DOI, key_id=KEY_ID, plaintext_length=len(data), piece_length=P
    )
    assert Recorder.biggest <= P
    Recorder.biggest = 0
    dst = io.BytesIO()
    c.open_stream(Recorder(out.getvalue()), dst, KEY)
    assert Recorder.biggest <= P
    assert dst.getvalue() == data


def test_source_shorter_or_longer_than_announced() -> None:
    with pytest.raises(c.SourceChangedError):
        c.protect_stream(
            io.BytesIO(b"abc"),
            io.BytesIO(),
            KEY,
            doi=DOI,
            key_id=KEY_ID,
            plaintext_length=4,
            piece_length=P,
        )
    with pytest.raises(c.SourceChangedError):
        c.protect_stream(
            io.BytesIO(b"abcde"),
            io.BytesIO(),
            KEY,
            doi=DOI,
            key_id=KEY_ID,
            plaintext_length=4,
            piece_length=P,
        )


# -- nonces ---------------------------------------------------------------------


def test_no_key_nonce_pair_repeats_across_protect_runs_with_the_same_key() -> None:
    seen: set[tuple[bytes, bytes]] = set()
    salts = set()
    for _run in range(20):
        sealer = c.Sealer(KEY, doi=DOI, key_id=KEY_ID, plaintext_length=5 * SEG, piece_length=P)
        salts.add(sealer.header.salt)
        subkey = c._derive(KEY, sealer.header.salt, DOI, KEY_ID).subkey
        for i in range(sealer.header.segment_count):
            pair = (subkey, sealer.nonce(i))
            assert pair not in seen
            seen.add(pair)
    assert len(salts) == 20
    assert len(seen) == 20 * 5


def test_same_plaintext_twice_gives_different_ciphertext() -> None:
    data = b"same content" * 1000
    a, b = protect(data), protect(data)
    assert a[24:40] != b[24:40]  # fresh salt
    assert not set(pieces(a)[1:]) & set(pieces(b)[1:])


def test_nonce_has_index_and_last_flag() -> None:
    sealer = c.Sealer(KEY, doi=DOI, key_id=KEY_ID, plaintext_length=3 * SEG, piece_length=P)
    nonces = [sealer.nonce(i) for i in range(3)]
    assert len({n[:7] for n in nonces}) == 1
    assert [int.from_bytes(n[7:11], "big") for n in nonces] == [0, 1, 2]
    assert [n[11] for n in nonces] == [0, 0, 1]
    assert all(len(n) == 12 for n in nonces)


def test_urandom_is_asked_for_a_new_salt_every_run() -> None:
    calls: list[int] = []

    def rng(n: int) -> bytes:
        calls.append(n)
        return os.urandom(n)

    protect(b"x", urandom=rng)
    protect(b"x", urandom=rng)
    assert calls == [16, 16]


# -- faults, each named ----------------------------------------------------------


DATA = bytes(range(256)) * ((4 * SEG + 1000) // 256)


@pytest.fixture(scope="module")
def blob() -> bytes:
    return protect(DATA)


def test_wrong_key(blob: bytes) -> None:
    with pytest.raises(c.KeyMismatchError) as e:
        unprotect(blob, OTHER_KEY)
    assert e.value.fault is c.Fault.WRONG_KEY


@pytest.mark.parametrize("offset", [12, 16, 23, 57, 60, 70])
def test_changed_header_field(blob: bytes, offset: int) -> None:
    bad = bytearray(blob)
    bad[offset] ^= 0x01
    with pytest.raises(c.ContainerError) as e:
        unprotect(bytes(bad))
    assert e.value.fault in (c.Fault.HEADER_CHANGED, c.Fault.HEADER_MALFORMED, c.Fault.TRUNCATED)


def test_changed_doi_is_header_changed(blob: bytes) -> None:
    bad = bytearray(blob)
    bad[58] ^= 0x01  # first byte of the DOI
    with pytest.raises(c.HeaderChangedError, match="header was changed"):
        unprotect(bytes(bad))


def test_changed_plaintext_length_is_header_changed(blob: bytes) -> None:
    """Shortening the announced length (to hide truncation) breaks the header tag."""
    header = c.Header.decode(blob[:P])
    forged = c.Header(
        doi=header.doi,
        key_id=header.key_id,
        salt=header.salt,
        key_check=header.key_check,
        plaintext_length=2 * SEG,
        piece_length=P,
        tag=header.tag,
    )
    with pytest.raises(c.HeaderChangedError):
        unprotect(forged.to_piece() + blob[P : 3 * P])


def test_header_padding_must_be_zero(blob: bytes) -> None:
    bad = bytearray(blob)
    bad[P - 1] = 1
    with pytest.raises(c.HeaderError, match="padding"):
        unprotect(bytes(bad))


def test_not_a_container() -> None:
    with pytest.raises(c.HeaderError) as e:
        unprotect(b"hello world" * 3000)
    assert e.value.fault is c.Fault.NOT_A_CONTAINER


def test_unsupported_version(blob: bytes) -> None:
    bad = bytearray(blob)
    bad[8] = 2
    with pytest.raises(c.HeaderError, match="version 2") as e:
        unprotect(bytes(bad))
    assert e.value.fault is c.Fault.UNSUPPORTED


@pytest.mark.parametrize("segment", [0, 2, 4])
def test_flipped_bit_names_the_segment(blob: bytes, segment: int) -> None:
    bad = bytearray(blob)
    bad[P * (segment + 1) + 5] ^= 0x80
    with pytest.raises(c.SegmentCorruptError) as e:
        unprotect(bytes(bad))
    assert e.value.segment == segment and e.value.piece == segment + 1
    assert f"segment {segment}" in str(e.value)


def test_flipped_tag_bit(blob: bytes) -> None:
    bad = bytearray(blob)
    bad[2 * P - 1] ^= 0x01  # last byte of segment 0's tag
    with pytest.raises(c.SegmentCorruptError) as e:
        unprotect(bytes(bad))
    assert e.value.segment == 0


def test_reordered_pieces_are_named(blob: bytes) -> None:
    ps = pieces(blob)
    ps[1], ps[3] = ps[3], ps[1]
    with pytest.raises(c.SegmentOutOfPlaceError) as e:
        unprotect(b"".join(ps))
    assert (e.value.segment, e.value.found) == (0, 2)
    assert "reordered" in str(e.value)


def test_piece_from_another_container_is_corrupt(blob: bytes) -> None:
    other = protect(DATA)  # same key, same content, new salt
    ps = pieces(blob)
    ps[2] = pieces(other)[2]
    with pytest.raises(c.SegmentCorruptError) as e:
        unprotect(b"".join(ps))
    assert e.value.segment == 1


@pytest.mark.parametrize("cut", [1, 16, P, P + 1, 2 * P])
def test_truncation_is_named(blob: bytes, cut: int) -> None:
    with pytest.raises(c.TruncatedError) as e:
        unprotect(blob[:-cut])
    assert e.value.fault is c.Fault.TRUNCATED
    assert "truncated" in str(e.value)


def test_truncation_of_whole_last_pieces_is_named_without_the_key(blob: bytes) -> None:
    header = c.Header.decode(blob[:P])
    short = blob[: P * header.segment_count]  # the last piece is gone
    with pytest.raises(c.TruncatedError) as e:
        c.verify_structure(io.BytesIO(short))
    assert e.value.segment == header.segment_count - 1


def test_truncated_inside_header() -> None:
    with pytest.raises(c.TruncatedError):
        unprotect(protect(b"abc")[: P // 2])


def test_trailing_data(blob: bytes) -> None:
    with pytest.raises(c.TrailingDataError):
        unprotect(blob + b"\x00")


def test_last_flag_stops_a_dropped_tail_from_passing() -> None:
    """A full last segment moved to an earlier index position does not verify as last."""
    data = os.urandom(3 * SEG)  # three full segments
    blob = protect(data)
    opener = c.Opener.from_piece0(KEY, blob[:P])
    ps = pieces(blob)
    with pytest.raises(c.SegmentError):
        opener.open_segment(2, ps[2])  # segment 1 claimed to be the last
    with pytest.raises(c.SegmentOutOfPlaceError):
        opener.open_segment(1, ps[3])


def test_open_piece_checks_size_and_index(blob: bytes) -> None:
    opener = c.Opener.from_piece0(KEY, blob[:P])
    with pytest.raises(c.TruncatedError):
        opener.open_piece(1, blob[P : 2 * P - 1])
    with pytest.raises(c.SegmentCorruptError):
        opener.open_piece(1, blob[P : 2 * P] + b"x")
    with pytest.raises(IndexError):
        opener.open_piece(0, blob[:P])
    with pytest.raises(IndexError):
        opener.open_piece(99, blob[P : 2 * P])


def test_every_single_bit_flip_in_a_small_container_is_caught() -> None:
    blob = protect(b"tiny secret")
    header_len = int.from_bytes(blob[10:12], "big")
    positions = itertools.chain(range(header_len), range(P, len(blob)), [P - 1, header_len + 7])
    for pos in positions:
        for bit in (0x01, 0x80):
            bad = bytearray(blob)
            bad[pos] ^= bit
            with pytest.raises(c.ContainerError):
                unprotect(bytes(bad))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_header_decode_fuzz_raises_only_header_error(data: bytes) -> None:
    try:
        c.Header.decode(c.MAGIC + data, check_padding=False)
    except c.HeaderError:
        pass


@settings(max_examples=100, deadline=None)
@given(pos=st.integers(min_value=0, max_value=200), value=st.integers(0, 255))
def test_mutated_header_raises_only_container_errors(pos: int, value: int) -> None:
    blob = bytearray(protect(b"abc"))
    blob[pos] = value
    try:
        out = unprotect(bytes(blob))
    except c.ContainerError:
        return
    assert out == b"abc"  # only an unchanged byte may pass


def test_describe_lists_header_fields(blob: bytes) -> None:
    text = dict(c.Header.decode(blob[:P]).describe())
    assert text["doi"] == DOI and text["key-id"] == KEY_ID
    assert text["piece-length"] == str(P)
    assert text["plaintext-length"] == str(len(DATA))
    assert len(text["salt"]) == 32
