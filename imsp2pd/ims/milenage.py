"""MILENAGE (3GPP TS 35.206): the AKA functions f1, f1*, f2, f3, f4, f5, f5*.

Used by the HSS for Digest-AKAv1-MD5 (RFC 3310): :func:`generate_vector` makes
an authentication vector (RAND, XRES, CK, IK, AUTN) from K, OPc and SQN, and
:func:`resynchronise` recovers the UE's SQN from AUTS (TS 33.102 section 6.3.5).
Pure: no I/O, no clock; the caller supplies RAND.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class MilenageError(ValueError):
    """Bad key material, or an AUTS whose MAC-S does not verify."""


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _rot(x: bytes, bits: int) -> bytes:
    """Rotate a 128-bit block left by ``bits`` (a multiple of 8 in MILENAGE)."""
    n = (bits // 8) % 16
    return x[n:] + x[:n]


def _c(i: int) -> bytes:
    return bytes(15) + bytes([i])


_R = (64, 0, 32, 64, 96)
_C = (_c(0), _c(1), _c(2), _c(4), _c(8))


def _check(name: str, value: bytes, length: int) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != length:
        raise MilenageError(f"{name} must be {length} bytes")


class Milenage:
    """The MILENAGE functions for one subscriber key K and operator variant OPc."""

    def __init__(self, k: bytes, opc: bytes) -> None:
        _check("K", k, 16)
        _check("OPc", opc, 16)
        self._aes = Cipher(algorithms.AES(bytes(k)), modes.ECB())
        self.opc = bytes(opc)

    @classmethod
    def from_op(cls, k: bytes, op: bytes) -> Milenage:
        return cls(k, compute_opc(k, op))

    def _e(self, block: bytes) -> bytes:
        enc = self._aes.encryptor()
        return enc.update(block) + enc.finalize()

    def _temp(self, rand: bytes) -> bytes:
        _check("RAND", rand, 16)
        return self._e(_xor(rand, self.opc))

    def _out(self, temp: bytes, i: int) -> bytes:
        return _xor(self._e(_xor(_rot(_xor(temp, self.opc), _R[i]), _C[i])), self.opc)

    def f1(self, rand: bytes, sqn: bytes, amf: bytes) -> tuple[bytes, bytes]:
        """(MAC-A, MAC-S)."""
        _check("SQN", sqn, 6)
        _check("AMF", amf, 2)
        temp = self._temp(rand)
        in1 = bytes(sqn) + bytes(amf) + bytes(sqn) + bytes(amf)
        out1 = _xor(self._e(_xor(temp, _rot(_xor(in1, self.opc), _R[0]))), self.opc)
        return out1[:8], out1[8:]

    def f2345(self, rand: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        """(RES, CK, IK, AK)."""
        temp = self._temp(rand)
        out2 = self._out(temp, 1)
        return out2[8:], self._out(temp, 2), self._out(temp, 3), out2[:6]

    def f5_star(self, rand: bytes) -> bytes:
        """AK for resynchronisation."""
        return self._out(self._temp(rand), 4)[:6]


def compute_opc(k: bytes, op: bytes) -> bytes:
    _check("K", k, 16)
    _check("OP", op, 16)
    enc = Cipher(algorithms.AES(bytes(k)), modes.ECB()).encryptor()
    return _xor(enc.update(bytes(op)) + enc.finalize(), bytes(op))


@dataclass(frozen=True, slots=True)
class AuthVector:
    rand: bytes
    xres: bytes
    ck: bytes
    ik: bytes
    autn: bytes

    @property
    def sip_authenticate(self) -> bytes:
        """RAND || AUTN, the SIP-Authenticate of a Digest-AKAv1-MD5 MAA (TS 29.229)."""
        return self.rand + self.autn


SQN_MAX = 2**48 - 1


def generate_vector(k: bytes, opc: bytes, sqn: int, amf: bytes, rand: bytes) -> AuthVector:
    """One authentication vector: AUTN = SQN xor AK || AMF || MAC-A."""
    if not 0 <= sqn <= SQN_MAX:
        raise MilenageError("SQN must fit in 48 bits")
    m = Milenage(k, opc)
    sqn_bytes = sqn.to_bytes(6, "big")
    mac_a, _ = m.f1(rand, sqn_bytes, amf)
    res, ck, ik, ak = m.f2345(rand)
    return AuthVector(bytes(rand), res, ck, ik, _xor(sqn_bytes, ak) + bytes(amf) + mac_a)


def resynchronise(k: bytes, opc: bytes, rand: bytes, auts: bytes) -> int:
    """The SQN_MS in AUTS = (SQN_MS xor AK*) || MAC-S, after checking MAC-S.

    MAC-S is computed with AMF 0x0000 (TS 33.102 6.3.3). The HSS continues
    from SQN_MS + 1.
    """
    _check("AUTS", auts, 14)
    m = Milenage(k, opc)
    sqn_ms = _xor(bytes(auts[:6]), m.f5_star(rand))
    _, mac_s = m.f1(rand, sqn_ms, b"\0\0")
    if mac_s != bytes(auts[6:]):
        raise MilenageError("AUTS does not verify (MAC-S mismatch)")
    return int.from_bytes(sqn_ms, "big")


def make_auts(k: bytes, opc: bytes, rand: bytes, sqn_ms: int) -> bytes:
    """What a UE sends to resynchronise (for tests and the lab client)."""
    m = Milenage(k, opc)
    sqn_bytes = sqn_ms.to_bytes(6, "big")
    _, mac_s = m.f1(rand, sqn_bytes, b"\0\0")
    return _xor(sqn_bytes, m.f5_star(rand)) + mac_s


def verify_autn(k: bytes, opc: bytes, rand: bytes, autn: bytes) -> tuple[int, bytes, bytes, bytes]:
    """The UE side: check AUTN's MAC-A; returns (SQN, RES, CK, IK). For tests and the client."""
    _check("AUTN", autn, 16)
    m = Milenage(k, opc)
    res, ck, ik, ak = m.f2345(rand)
    sqn = _xor(bytes(autn[:6]), ak)
    mac_a, _ = m.f1(rand, sqn, bytes(autn[6:8]))
    if mac_a != bytes(autn[8:]):
        raise MilenageError("AUTN does not verify (MAC-A mismatch)")
    return int.from_bytes(sqn, "big"), res, ck, ik
