"""MILENAGE against the test sets of 3GPP TS 35.207/35.208 (conformance of TS 35.206)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imsp2pd.ims.milenage import (
    Milenage,
    MilenageError,
    compute_opc,
    generate_vector,
    make_auts,
    resynchronise,
    verify_autn,
)

h = bytes.fromhex

# K, RAND, SQN, AMF, OP, OPc, f1, f1*, f2, f3, f4, f5, f5*
TEST_SETS = [
    (
        "465b5ce8b199b49faa5f0a2ee238a6bc", "23553cbe9637a89d218ae64dae47bf35", "ff9bb4d0b607",
        "b9b9", "cdc202d5123e20f62b6d676ac72cb318", "cd63cb71954a9f4e48a5994e37a02baf",
        "4a9ffac354dfafb3", "01cfaf9ec4e871e9", "a54211d5e3ba50bf",
        "b40ba9a3c58b2a05bbf0d987b21bf8cb", "f769bcd751044604127672711c6d3441",
        "aa689c648370", "451e8beca43b",
    ),
    (
        "0396eb317b6d1c36f19c1c84cd6ffd16", "c00d603103dcee52c4478119494202e8", "fd8eef40df7d",
        "af17", "ff53bade17df5d4e793073ce9d7579fa", "53c15671c60a4b731c55b4a441c0bde2",
        "5df5b31807e258b0", "a8c016e51ef4a343", "d3a628ed988620f0",
        "58c433ff7a7082acd424220f2b67c556", "21a8c1f929702adb3e738488b9f5c5da",
        "c47783995f72", "30f1197061c1",
    ),
    (
        "fec86ba6eb707ed08905757b1bb44b8f", "9f7c8d021accf4db213ccff0c7f71a6a", "9d0277595ffc",
        "725c", "dbc59adcb6f9a0ef735477b7fadf8374", "1006020f0a478bf6b699f15c062e42b3",
        "9cabc3e99baf7281", "95814ba2b3044324", "8011c48c0c214ed2",
        "5dbdbb2954e8f3cde665b046179a5098", "59a92d3b476a0443487055cf88b2307b",
        "33484dc2136b", "deacdd848cc6",
    ),
]  # fmt: skip


@pytest.mark.parametrize("vector", TEST_SETS)
def test_test_sets(vector: tuple[str, ...]) -> None:
    k, rand, sqn, amf, op, opc, f1, f1s, f2, f3, f4, f5, f5s = map(h, vector)
    assert compute_opc(k, op) == opc
    m = Milenage(k, opc)
    assert m.f1(rand, sqn, amf) == (f1, f1s)
    assert m.f2345(rand) == (f2, f3, f4, f5)
    assert m.f5_star(rand) == f5s
    assert Milenage.from_op(k, op).f2345(rand) == (f2, f3, f4, f5)


def test_vector_and_ue_agree() -> None:
    k, rand, sqn, amf, _, opc, f1, _, f2, f3, f4, f5, _ = map(h, TEST_SETS[0])
    v = generate_vector(k, opc, int.from_bytes(sqn, "big"), amf, rand)
    assert v.autn == bytes(a ^ b for a, b in zip(sqn, f5, strict=True)) + amf + f1
    assert (v.xres, v.ck, v.ik) == (f2, f3, f4)
    assert v.sip_authenticate == rand + v.autn
    assert verify_autn(k, opc, rand, v.autn) == (int.from_bytes(sqn, "big"), f2, f3, f4)


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16),
       st.binary(min_size=16, max_size=16), st.integers(0, 2**48 - 1))  # fmt: skip
def test_resynchronisation_round_trip(k: bytes, opc: bytes, rand: bytes, sqn_ms: int) -> None:
    auts = make_auts(k, opc, rand, sqn_ms)
    assert resynchronise(k, opc, rand, auts) == sqn_ms


def test_tampered_auts_and_autn_are_refused() -> None:
    k, rand, sqn, amf, _, opc, *_ = map(h, TEST_SETS[1])
    auts = bytearray(make_auts(k, opc, rand, 42))
    auts[-1] ^= 1
    with pytest.raises(MilenageError):
        resynchronise(k, opc, rand, bytes(auts))
    autn = bytearray(generate_vector(k, opc, 7, amf, rand).autn)
    autn[0] ^= 0x80
    with pytest.raises(MilenageError):
        verify_autn(k, opc, rand, bytes(autn))


@pytest.mark.parametrize(
    "call",
    [
        lambda: Milenage(b"short", bytes(16)),
        lambda: Milenage(bytes(16), bytes(16)).f2345(bytes(15)),
        lambda: Milenage(bytes(16), bytes(16)).f1(bytes(16), bytes(5), bytes(2)),
        lambda: generate_vector(bytes(16), bytes(16), 2**48, bytes(2), bytes(16)),
        lambda: resynchronise(bytes(16), bytes(16), bytes(16), bytes(13)),
    ],
)
def test_bad_lengths_raise_milenage_error(call: object) -> None:
    with pytest.raises(MilenageError):
        call()  # type: ignore[operator]
