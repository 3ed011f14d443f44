"""Summaries of repeated measurements. Standard library only: both virtualenvs import it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds, and how many samples they summarise."""
    ms = [s * 1000 for s in seconds]
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99), "n": float(len(ms))}


@dataclass(frozen=True)
class Stat:
    """Min, median and max over repetitions."""

    min: float
    median: float
    max: float
    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stat:
        if not samples:
            return cls(math.nan, math.nan, math.nan, ())
        return cls(min(samples), statistics.median(samples), max(samples), tuple(samples))

    def show(self, unit: str) -> str:
        if math.isnan(self.median):
            return "n/a"
        return f"{_num(self.median)} {unit} [{_num(self.min)}-{_num(self.max)}]"


@dataclass
class Figure:
    """One row of the report: a value beside its baseline and its target."""

    key: str
    label: str
    unit: str
    value: Stat
    baseline: Stat | None = None
    baseline_label: str = ""
    target: str = ""
    passed: bool | None = None
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline.median or math.isnan(self.baseline.median):
            return None
        return self.value.median / self.baseline.median

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["result"] = _verdict(self.passed)
        return data


def _verdict(passed: bool | None) -> str:
    return "-" if passed is None else ("pass" if passed else "MISS")


def _num(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(figures: Sequence[Figure]) -> str:
    """The printed report: figure, value, baseline, ratio, target, pass/miss."""
    rows = [("figure", "value (median [min-max])", "baseline", "ratio", "target", "result")]
    for fig in figures:
        baseline = f"{fig.baseline_label}: {fig.baseline.show(fig.unit)}" if fig.baseline else ""
        ratio = f"{fig.ratio:.2f}x" if fig.ratio is not None else ""
        rows.append((fig.label, fig.value.show(fig.unit), baseline, ratio, fig.target, _verdict(fig.passed)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = [f"  * {fig.label}: {fig.note}" for fig in figures if fig.note]
    return "\n".join(lines + (["", "notes:", *notes] if notes else []))
