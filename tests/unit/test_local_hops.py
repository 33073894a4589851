"""imsp2pd.local_hops: what a process sent itself, taken instead of decoded."""

from __future__ import annotations

import pytest

from imsp2pd.local_hops import CHECK_ENV, LocalHops, checking, for_process
from imsp2pd.metrics import Registry


def test_only_what_goes_to_a_local_address_is_kept_and_taken_once() -> None:
    hops: LocalHops[str] = LocalHops()
    hops.add_address("127.0.0.1", 5060)
    hops.put(b"to-self", "m1", "127.0.0.1", 5060)
    hops.put(b"elsewhere", "m2", "127.0.0.1", 5070)
    assert len(hops) == 1
    assert hops.take(b"elsewhere") is None
    assert hops.take(b"to-self") == "m1"
    assert hops.take(b"to-self") is None  # a second copy of the bytes is decoded
    assert hops.taken == 1
    hops.remove_address("127.0.0.1", 5060)
    hops.put(b"to-self", "m1", "127.0.0.1", 5060)
    assert len(hops) == 0


def test_bounded_the_oldest_goes_first() -> None:
    hops: LocalHops[int] = LocalHops(limit=3)
    hops.add_address("h", 1)
    for i in range(5):
        hops.put(b"%d" % i, i, "h", 1)
    assert len(hops) == 3
    assert hops.take(b"0") is None and hops.take(b"1") is None
    assert [hops.take(b"%d" % i) for i in (2, 3, 4)] == [2, 3, 4]
    hops.put(b"a", 1, "h", 1)
    hops.put(b"a", 2, "h", 1)  # the same bytes again: replaced, nothing pushed out
    assert len(hops) == 1 and hops.take(b"a") == 2
    with pytest.raises(ValueError):
        LocalHops(limit=0)


def test_the_check_decodes_compares_and_prefers_the_decoding() -> None:
    hops: LocalHops[str] = LocalHops(check=lambda data: data.decode())
    hops.add_address("h", 1)
    hops.put(b"same", "same", "h", 1)
    assert hops.take(b"same") == "same" and hops.mismatches == 0
    hops.put(b"wire", "kept", "h", 1)
    assert hops.take(b"wire") == "wire" and hops.mismatches == 1

    def fails(data: bytes) -> str:
        raise ValueError("bad")

    failing: LocalHops[str] = LocalHops(check=fails)
    failing.add_address("h", 1)
    failing.put(b"x", "x", "h", 1)
    assert failing.take(b"x") is None  # decoded by the caller, who meets the error
    assert failing.mismatches == 1


def test_checking_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHECK_ENV, "1")
    assert checking(bytes.decode) is bytes.decode
    monkeypatch.delenv(CHECK_ENV)
    assert checking(bytes.decode) is None


class _Hub:
    def __init__(self) -> None:
        self.metrics = Registry()
        self.objects: dict[str, object] = {}

    def lookup(self, name: str) -> object:
        return self.objects.get(name)

    def provide(self, name: str, obj: object) -> None:
        self.objects[name] = obj


def test_one_per_process_and_protocol_with_counts_on_metrics() -> None:
    hub = _Hub()
    sip = for_process(hub, "sip", bytes.decode)
    assert for_process(hub, "sip", bytes.decode) is sip
    diameter = for_process(hub, "diameter", bytes.decode)
    assert diameter is not sip
    sip.add_address("h", 1)
    sip.put(b"m", "m", "h", 1)
    sip.take(b"m")
    text = hub.metrics.render()
    assert 'imsp2p_local_hops_total{protocol="sip",kind="taken"} 1' in text
    assert 'imsp2p_local_hops_total{protocol="diameter",kind="taken"} 0' in text
