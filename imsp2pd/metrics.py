"""Metrics in the Prometheus text exposition format (version 0.0.4).

A :class:`Registry` holds counters and gauges, each with optional label
names; a gauge or a counter may instead be computed at scrape time (``fn``),
returning a number or a mapping of label tuples to numbers. Roles add their metrics to
the registry of the process (``hub.metrics``) when they are built.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from threading import Lock

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

LabelValues = tuple[str, ...]
Sample = float | Mapping[LabelValues, float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


class _Metric:
    kind = "untyped"

    def __init__(
        self,
        name: str,
        help: str,
        labels: tuple[str, ...] = (),
        fn: Callable[[], Sample] | None = None,
    ) -> None:
        if not _NAME.match(name):
            raise ValueError(f"bad metric name {name!r}")
        self.name = name
        self.help = help
        self.labels = tuple(labels)
        self._names = frozenset(self.labels)
        self._fn = fn
        self._values: dict[LabelValues, float] = {}
        self._lock = Lock()

    def _key(self, labels: Mapping[str, str]) -> LabelValues:
        if labels.keys() != self._names:
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(labels)}")
        return tuple([str(labels[n]) for n in self.labels])

    def series(self, **labels: str) -> LabelValues:
        """The series of these label values, checked once, for :meth:`Counter.inc_series`
        (a caller with fixed labels keeps it instead of naming them at every count)."""
        return self._key(labels)

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def remove(self, **labels: str) -> None:
        with self._lock:
            self._values.pop(self._key(labels), None)

    def samples(self) -> Mapping[LabelValues, float]:
        if self._fn is None:
            with self._lock:
                return dict(self._values)
        result = self._fn()
        if isinstance(result, Mapping):
            return result
        return {(): float(result)}

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {_escape(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for key, v in sorted(self.samples().items()):
            if self.labels:
                pairs = ",".join(
                    f'{n}="{_escape(x)}"' for n, x in zip(self.labels, key, strict=True)
                )
                lines.append(f"{self.name}{{{pairs}}} {_format_value(v)}")
            else:
                lines.append(f"{self.name} {_format_value(v)}")
        return lines


class Counter(_Metric):
    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def inc_series(self, series: LabelValues, amount: float = 1.0) -> None:
        """:meth:`inc` for a series from :meth:`series` (its labels are not checked again)."""
        if amount < 0:
            raise ValueError("a counter only goes up")
        with self._lock:
            self._values[series] = self._values.get(series, 0.0) + amount


class Gauge(_Metric):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> _Metric:
        old = self._metrics.get(metric.name)
        if old is not None:
            if type(old) is not type(metric) or old.labels != metric.labels:
                raise ValueError(f"metric {metric.name} registered twice with different shapes")
            return old
        self._metrics[metric.name] = metric
        return metric

    def counter(
        self,
        name: str,
        help: str,
        labels: tuple[str, ...] = (),
        fn: Callable[[], Sample] | None = None,
    ) -> Counter:
        """A counter; with ``fn``, read at scrape time from counts kept elsewhere."""
        m = self._add(Counter(name, help, labels, fn))
        assert isinstance(m, Counter)
        return m

    def gauge(
        self,
        name: str,
        help: str,
        labels: tuple[str, ...] = (),
        fn: Callable[[], Sample] | None = None,
    ) -> Gauge:
        m = self._add(Gauge(name, help, labels, fn))
        assert isinstance(m, Gauge)
        return m

    def get(self, name: str) -> _Metric | None:
        return self._metrics.get(name)

    def render(self) -> str:
        out: list[str] = []
        for name in sorted(self._metrics):
            out += self._metrics[name].render()
        return "\n".join(out) + "\n"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
