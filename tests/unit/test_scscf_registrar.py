"""The registrar's index against the straightforward one it replaced (a removal
scanned the whole index for the keys naming the IMPU)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from imsp2pd.ims.scscf import Registrar, Registration, aor_of

IMPUS = [f"sip:u{i}@ims.example.org" for i in range(5)] + ["tel:+1234", "sip:U0@IMS.example.org"]


class Reference:
    def __init__(self) -> None:
        self.by_impu: dict[str, Registration] = {}
        self.index: dict[str, str] = {}

    def put(self, reg: Registration) -> None:
        self.by_impu[reg.impu] = reg
        for impu in (reg.impu, *reg.associated):
            self.index[aor_of(impu)] = reg.impu

    def remove(self, impu: str) -> Registration | None:
        reg = self.by_impu.pop(impu, None)
        if reg is not None:
            for key in [k for k, v in self.index.items() if v == impu]:
                del self.index[key]
        return reg

    def find(self, impu: str) -> Registration | None:
        key = self.index.get(aor_of(impu))
        return self.by_impu.get(key) if key else None


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("put"),
            st.sampled_from(IMPUS[:5]),
            st.lists(st.sampled_from(IMPUS), max_size=3).map(tuple),
        ),
        st.tuples(st.just("remove"), st.sampled_from(IMPUS), st.just(())),
    ),
    max_size=25,
)


@settings(max_examples=300)
@given(ops)
def test_the_index_answers_as_the_reference(steps: list[tuple[str, str, tuple[str, ...]]]) -> None:
    fast, ref = Registrar(), Reference()
    regs: dict[str, Registration] = {}
    for op, impu, associated in steps:
        if op == "put":
            # a registration is put again with another implicit set, as on re-registration
            reg = regs.setdefault(impu, Registration(impu, impu[4:], ()))
            reg.associated = associated
            fast.put(reg)
            ref.put(reg)
        else:
            assert fast.remove(impu) is ref.remove(impu)
        assert fast._index == ref.index
        for name in IMPUS:
            assert fast.find(name) is ref.find(name)
