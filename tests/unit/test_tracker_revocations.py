"""The tracker's revocation set."""

from __future__ import annotations

from imsp2pd.bittorrent.revocations import RevocationSet


def test_apply_and_check() -> None:
    r = RevocationSet()
    assert len(r) == 0 and not r.is_revoked("sip:a@x", "t", "10.1/d")
    added = r.apply(
        [
            {"kind": "impu", "value": "sip:a@x", "time": 1},
            {"kind": "token", "value": "t9", "time": 2},
            {"kind": "doi", "value": "10.1/d", "time": 3},
            {"kind": "device", "value": "ab" * 32, "time": 4},
            {"kind": "impu", "value": "sip:a@x", "time": 5},
            {"kind": "impu", "value": ""},
            {"kind": "bogus", "value": "x"},
            {"value": "x"},
            "not a mapping",  # type: ignore[list-item]
        ]
    )
    assert added == 3 and len(r) == 3
    assert r.is_revoked("sip:a@x", "t", None)
    assert r.is_revoked("sip:b@x", "t9", None)
    assert r.is_revoked("sip:b@x", "t", "10.1/d")
    assert not r.is_revoked("sip:b@x", "t", None)
    assert not r.is_revoked("sip:b@x", "t", "10.1/other")
