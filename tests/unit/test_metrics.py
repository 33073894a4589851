import pytest

from imsp2pd.metrics import Registry


def test_render_prometheus_text() -> None:
    r = Registry()
    c = r.counter("imsp2pd_things_total", "Things done", ("kind",))
    c.inc(kind="a")
    c.inc(2, kind='b"q')
    r.gauge("imsp2pd_level", "A level", fn=lambda: 1.5)
    r.gauge("imsp2pd_by", "By label", ("x",), fn=lambda: {("1",): 3})
    text = r.render()
    assert "# TYPE imsp2pd_things_total counter" in text
    assert 'imsp2pd_things_total{kind="a"} 1' in text
    assert 'imsp2pd_things_total{kind="b\\"q"} 2' in text
    assert "imsp2pd_level 1.5" in text
    assert 'imsp2pd_by{x="1"} 3' in text
    assert text.endswith("\n")


def test_misuse() -> None:
    r = Registry()
    c = r.counter("a_total", "a", ("l",))
    with pytest.raises(ValueError):
        c.inc(-1, l="x")
    with pytest.raises(ValueError):
        c.inc(m="x")
    with pytest.raises(ValueError):
        r.gauge("a_total", "a")
    assert r.counter("a_total", "a", ("l",)) is c
    with pytest.raises(ValueError):
        r.counter("bad name", "x")


def test_a_kept_series_counts_as_its_labels_do() -> None:
    r = Registry()
    c = r.counter("n_total", "n", ("node", "command"))
    one = c.series(node="hss", command=300)  # type: ignore[arg-type]
    assert one == ("hss", "300")
    c.inc_series(one)
    c.inc_series(one, 2)
    c.inc(node="hss", command="300")
    assert c.value(node="hss", command="300") == 4
    assert 'n_total{node="hss",command="300"} 4' in r.render()
    with pytest.raises(ValueError):
        c.series(node="hss")
    with pytest.raises(ValueError):
        c.series(node="hss", command="1", other="x")
    with pytest.raises(ValueError):
        c.inc_series(one, -1)


def test_a_counter_read_at_scrape_time() -> None:
    r = Registry()
    counts = {"in": 3}
    r.counter(
        "imsp2pd_seen_total",
        "Seen",
        ("kind",),
        fn=lambda: {(k,): float(n) for k, n in counts.items()},
    )
    counts["in"] = 5
    text = r.render()
    assert "# TYPE imsp2pd_seen_total counter" in text
    assert 'imsp2pd_seen_total{kind="in"} 5' in text
