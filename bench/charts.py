"""`python -m bench.charts`: PNG charts of bench/results/latest.json, written to docs/bench/.

Draws what the last run measured, and nothing it did not: the latency figures (p50/p95/p99,
ours beside the baseline, the bar at the median repetition and the whisker over min-max), and
the rates (accept rate against the number of service processes, every other rate beside its
baseline). matplotlib lives in the bench venv (bench/requirements.txt); run from the app's venv,
this module re-runs itself there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from bench.venv import ROOT, bench_python

RESULTS = ROOT / "bench" / "results" / "latest.json"
OUT = ROOT / "docs" / "bench"
QUANTILES = ("p50", "p95", "p99")
OURS, THEIRS = "#1f77b4", "#bbbbbb"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.charts", description=__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    try:
        import matplotlib
    except ImportError:
        python = str(bench_python())
        os.execv(python, [python, "-m", "bench.charts", *argv])
    matplotlib.use("Agg")  # files only, no display
    if not args.results.exists():
        print(f"no {args.results}: run `make bench` first", file=sys.stderr)
        return 1
    report: dict[str, Any] = json.loads(args.results.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    written = [path for path in (_latencies(report, args.out), _rates(report, args.out)) if path]
    for path in written:
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0 if written else 1


def _caption(report: dict[str, Any]) -> str:
    machine = report.get("machine", {})
    return (
        f"{report.get('date', '?')} · profile {report.get('profile', '?')} · "
        f"{machine.get('nproc', '?')} cores · PostgreSQL {machine.get('postgres', '?')} · {report.get('reproduce', '')}"
    )


def _latency_groups(figures: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{group key: {quantile: figure}} for every millisecond figure named <group>_<pNN>."""
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for figure in figures:
        key: str = figure["key"]
        group, _, quantile = key.rpartition("_")
        if figure["unit"] == "ms" and quantile in QUANTILES:
            groups.setdefault(group, {})[quantile] = figure
    return groups


def _label(figure: dict[str, Any]) -> str:
    label: str = figure["label"]
    for quantile in QUANTILES:
        label = label.removesuffix(f" {quantile}")
    return label.rstrip(", ")


def _latencies(report: dict[str, Any], out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    groups = _latency_groups(report["figures"])
    if not groups:
        return None
    columns = 2
    rows = (len(groups) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(11, 3.2 * rows), squeeze=False)
    for ax, figures in zip(axes.flat, groups.values(), strict=False):
        quantiles = [q for q in QUANTILES if q in figures]
        xs = range(len(quantiles))
        has_baseline = any(figures[q]["baseline"] for q in quantiles)
        width = 0.38 if has_baseline else 0.6
        shift = width / 2 if has_baseline else 0.0
        _bars(ax, [x - shift for x in xs], [figures[q]["value"] for q in quantiles], width, OURS, "this service")
        if has_baseline:
            baselines = [figures[q]["baseline"] or _EMPTY for q in quantiles]
            label = next(figures[q]["baseline_label"] for q in quantiles if figures[q]["baseline"])
            _bars(ax, [x + shift for x in xs], baselines, width, THEIRS, label)
        ax.set_xticks(list(xs), quantiles)
        ax.set_ylabel("ms")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(_label(figures[quantiles[0]]), fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    fig.suptitle("Latency distributions (bar: median repetition; whisker: min-max)", fontsize=12)
    fig.text(0.5, 0.005, _caption(report), ha="center", fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    path = out / "latency.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


_EMPTY = {"median": 0.0, "min": 0.0, "max": 0.0}


def _bars(ax: Any, xs: list[float], stats: list[dict[str, Any]], width: float, color: str, label: str) -> None:
    medians = [_finite(s["median"]) for s in stats]
    low = [m - _finite(s["min"]) for m, s in zip(medians, stats, strict=True)]
    high = [_finite(s["max"]) - m for m, s in zip(medians, stats, strict=True)]
    ax.bar(xs, medians, width, color=color, label=label, yerr=[low, high], capsize=3, ecolor="#333333")
    for x, m in zip(xs, medians, strict=True):
        ax.annotate(f"{m:.3g}", (x, m), ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")


def _finite(value: object) -> float:
    number = float(value) if isinstance(value, int | float) else 0.0
    return number if number == number else 0.0  # NaN (no samples) draws as nothing


def _rates(report: dict[str, Any], out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    rates = [f for f in report["figures"] if f["unit"].endswith("/s")]
    if not rates:
        return None
    scaling = sorted(
        (int(f["key"].removeprefix("accept_rate_").removesuffix("p")), f)
        for f in rates
        if f["key"].startswith("accept_rate_")
    )
    others = [f for f in rates if not f["key"].startswith("accept_rate_") and f["key"] != "client_ceiling"]
    panels = (1 if scaling else 0) + (1 if others else 0)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 3.2 + 0.25 * len(others)), squeeze=False)
    ax_iter = iter(axes.flat)
    if scaling:
        ax = next(ax_iter)
        counts = [count for count, _ in scaling]
        for count, figure in scaling:
            ax.scatter([count] * len(figure["value"]["samples"]), figure["value"]["samples"], color=OURS, s=12)
        ax.plot(counts, [f["value"]["median"] for _, f in scaling], marker="o", color=OURS, label="POST /generations")
        baseline = scaling[0][1]["baseline"]
        if baseline:
            ax.axhline(baseline["median"], color="#888888", linestyle="--", label=scaling[0][1]["baseline_label"])
        ceiling = next((f for f in rates if f["key"] == "client_ceiling"), None)
        if ceiling:
            ax.axhline(ceiling["value"]["median"], color="#d62728", linestyle=":", label="load generator ceiling")
        ax.set_xticks(counts)
        ax.set_xlabel("service processes (32 keep-alive clients)")
        ax.set_ylabel("req/s")
        ax.set_ylim(bottom=0)
        ax.set_title("Accept rate vs processes (dots: repetitions)", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if others:
        ax = next(ax_iter)
        ys = range(len(others))
        ax.barh([y + 0.2 for y in ys], [_finite(f["value"]["median"]) for f in others], 0.4, color=OURS, label="ours")
        ax.barh(
            [y - 0.2 for y in ys],
            [_finite((f["baseline"] or _EMPTY)["median"]) for f in others],
            0.4,
            color=THEIRS,
            label="baseline",
        )
        ax.set_yticks(list(ys), [f"{f['label']} ({f['unit']})" for f in others], fontsize=8)
        ax.set_title("Other rates, beside their baselines", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.text(0.5, 0.005, _caption(report), ha="center", fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = out / "rates.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
