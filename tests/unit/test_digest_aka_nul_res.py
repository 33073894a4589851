"""The sipp AKAv1-MD5 intermittent (issue 4), reproduced without sipp.

A RAND whose RES has a 0x00 byte: our HSS, S-CSCF and digest code take all
8 bytes of RES as the password (RFC 3310 §3.4), while sipp 3.6.1 (Debian's
sip-tester) cuts it at the NUL.  The exchange below is one that failed in
the conformance test, byte for byte: sipp's response is the digest of the
two bytes before the NUL, so the S-CSCF rightly answered 403.
"""

from __future__ import annotations

import base64

from imsp2pd.ims.milenage import compute_opc, generate_vector, verify_autn
from imsp2pd.sip.digest import (
    Credentials,
    answer_challenge,
    challenge,
    compute_ha1,
    verify_credentials,
)
from imsp2pd.sip.headers import parse_auth
from tests.conformance.test_cscf_sipp import OP, K, sipp_answerable_rand

IMPI = "bob@ims.example.org"
REALM = "ims.example.org"
# the lab subscriber's AKA credentials, and a RAND and SQN the lab HSS once drew
LAB_K, LAB_OPC = K.encode(), compute_opc(K.encode(), OP.encode())
RAND = bytes.fromhex("3bca496c9673d77dd3a99a38954aae04")
SQN = 20
NONCE = "O8pJbJZz133TqZo4lUquBNAxK90bZQAAQenKlieUyo9B2sH7p+8knbgBoY8jNAAuez/GO8/84IqXIsfwJNc3Jw=="
# the Authorization sipp sent back (from its -trace_msg log)
SIPP_AUTHORIZATION = (
    'Digest username="bob@ims.example.org",realm="ims.example.org",cnonce="6b8b4567",'
    'nc=00000001,qop=auth,uri="sip:ims.example.org",nonce="' + NONCE + '",'
    'response="9273eb8c27748ec128a15b8014729496",algorithm=AKAv1-MD5'
)


def _vector() -> tuple[bytes, bytes]:
    v = generate_vector(LAB_K, LAB_OPC, SQN, b"\0\0", RAND)
    return v.rand + v.autn, v.xres


def test_the_failing_rand_has_a_nul_in_its_res() -> None:
    rand_autn, xres = _vector()
    assert base64.b64decode(NONCE)[:32] == rand_autn  # the nonce the S-CSCF issued
    assert xres == bytes.fromhex("9be9002eb7018710")
    assert verify_autn(LAB_K, LAB_OPC, RAND, rand_autn[16:])[:2] == (SQN, xres)


def test_sipp_answered_with_res_cut_at_the_nul_and_the_full_res_is_what_verifies() -> None:
    _, xres = _vector()
    creds = Credentials.from_header(parse_auth(SIPP_AUTHORIZATION))
    scscf_ha1 = compute_ha1(IMPI, REALM, xres, "AKAv1-MD5")  # as the S-CSCF computes it
    assert not verify_credentials(creds, method="REGISTER", ha1=scscf_ha1)  # the 403
    cut = xres.split(b"\0")[0]
    assert cut == bytes.fromhex("9be9")
    assert verify_credentials(
        creds, method="REGISTER", ha1=compute_ha1(IMPI, REALM, cut, "AKAv1-MD5")
    )
    # a UE that uses all of RES (ours, and RFC 3310) is accepted with the same nonce
    chal = challenge(realm=REALM, nonce=NONCE, algorithm="AKAv1-MD5")
    good = answer_challenge(
        chal, method="REGISTER", uri="sip:ims.example.org", username=IMPI, password=xres
    )
    assert verify_credentials(Credentials.from_header(good), method="REGISTER", ha1=scscf_ha1)


def test_the_sipp_lab_rand_source_never_draws_a_res_with_a_nul() -> None:
    draw = sipp_answerable_rand(K.encode(), OP.encode())
    for _ in range(2000):  # ~60 NUL-bearing RESes would come up among as many plain RANDs
        rand = draw(16)
        v = generate_vector(LAB_K, LAB_OPC, 1, b"\0\0", rand)
        assert len(rand) == 16 and 0 not in v.xres
    assert len(draw(8)) == 8  # other random draws are left alone
