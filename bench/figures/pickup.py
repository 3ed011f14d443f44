"""Figure 2: pickup latency, from a job's acknowledgement to its claim; p50/p95/p99.

Service: the 202's arrival at the client to the job's `started_at` (set by the claim with
clock_timestamp(); same machine, same clock). PgQueuer: its enqueue returning to its entrypoint
running, with one LISTEN/NOTIFY worker at batch 10. Idle: one job at a time. Under load: while
figure 1's 32 clients POST to one service process (for PgQueuer, the same load runs beside it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any

from bench import db
from bench.context import Context
from bench.load import http_load, latencies, probe
from bench.procs import background, run_json
from bench.service import services
from bench.stats import Figure, Stat, latency_summary

GAP = 0.005  # seconds between probes: the worker is idle when each job arrives


async def run(ctx: Context) -> list[Figure]:
    p = ctx.profile
    service_idle: list[dict[str, float]] = []
    async with services(ctx.database_url, 1, ctx.folder("pickup")) as (proc, *_):
        for _ in range(p.repetitions):
            acked = await probe(proc.url, p.pickup_jobs, GAP)
            picked = await db.started_at(ctx.conn, list(acked), timeout=60)
            service_idle.append(latency_summary(latencies(acked, picked)))
            await db.reset(ctx.conn)

    pgq_idle = [await _pgqueuer(ctx, p.pickup_jobs, None) for _ in range(p.repetitions)]
    pgq_load: list[dict[str, float]] = []
    async with services(ctx.database_url, 1, ctx.folder("pickup-load")) as procs:
        for _ in range(p.repetitions):
            pgq_load.append(await _pgqueuer(ctx, 0, [proc.url for proc in procs]))
            await db.wait_drained(ctx.conn, 180)
            await db.reset(ctx.conn)

    figures = []
    for q in ("p50", "p95", "p99"):
        ours, theirs = _stat(service_idle, q), _stat(pgq_idle, q)
        limit = {"p50": 3.0, "p99": 10.0}.get(q)
        figures.append(
            Figure(
                key=f"pickup_idle_{q}",
                label=f"2. pickup idle {q}",
                unit="ms",
                value=ours,
                baseline=theirs,
                baseline_label="PgQueuer",
                target=f"<= {limit:g} ms and <= PgQueuer" if limit else "",
                passed=(ours.median <= limit and ours.median <= theirs.median) if limit else None,
                note=(
                    f"{int(service_idle[0]['n'])} jobs per repetition; below zero means the job was"
                    " claimed before its 202 reached the client"
                    if q == "p50"
                    else ""
                ),
            )
        )
    # Read off figure 1's runs: absent when that step was left out (`--only pickup`). Those runs
    # saturate the process (32 clients posting as fast as it answers), so its queue grows for the
    # whole run and pickup is the time spent in it; no ratio to PgQueuer's worker, which ran in a
    # process of its own beside that load. Pickup at an offered rate below capacity: figure 5.
    for q in ("p50", "p95", "p99") if ctx.pickup_under_load else ():
        pgq = _stat(pgq_load, q)
        figures.append(
            Figure(
                key=f"pickup_load_{q}",
                label=f"2. pickup at saturation {q}",
                unit="ms",
                value=_stat(ctx.pickup_under_load, q),
                note=(
                    f"every job of figure 1 (one ROLE=all process at its maximum accept rate: a growing"
                    f" queue), {_count(ctx.pickup_under_load)}; PgQueuer's own worker process beside the"
                    f" same HTTP load: {pgq.median:.2f} ms; below capacity see figure 5"
                )
                if q == "p50"
                else "",
                extra={"pgqueuer_beside_the_load": pgq.median},
            )
        )
    return figures


async def _pgqueuer(ctx: Context, jobs: int, load_urls: list[str] | None) -> dict[str, float]:
    """One PgQueuer pickup run: a worker process, then a producer (beside an HTTP load, if given)."""
    folder = ctx.folder("pgqueuer-pickup")
    ready, seen = folder / "ready", folder / "seen.json"
    ready.unlink(missing_ok=True)
    seconds = ctx.profile.load_seconds
    expect = jobs or 100_000
    worker_args = ["worker", "--dsn", ctx.database_url, "--expect", str(expect), "--ready", str(ready)]
    worker_args += ["--out", str(seen), "--timeout", str(120 if jobs else seconds + 5)]
    async with background("bench.baselines.pgqueuer_pickup", *worker_args, log=folder / "worker.log") as worker:
        for _ in range(300):
            if ready.exists() or worker.returncode is not None:
                break
            await asyncio.sleep(0.1)
        producer_args = ["producer", "--dsn", ctx.database_url, "--gap", str(0.005)]
        if jobs:
            acked = await run_json("bench.baselines.pgqueuer_pickup", *producer_args, "--jobs", str(jobs), timeout=180)
        else:
            producer_args += ["--jobs", "100000", "--timeout", str(seconds)]
            load = http_load(load_urls or [], "post", seconds)
            acked, _ = await asyncio.gather(
                _after(1.0, run_json("bench.baselines.pgqueuer_pickup", *producer_args, timeout=seconds + 60)), load
            )
        await asyncio.wait_for(worker.wait(), seconds + 130)
    picked: dict[str, float] = json.loads(seen.read_text())
    return latency_summary(latencies(acked, picked))


async def _after(delay: float, work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    await asyncio.sleep(delay)  # the HTTP load's warm-up second
    return await work


def _stat(summaries: list[dict[str, float]], q: str) -> Stat:
    return Stat.of([s[q] for s in summaries])


def _count(summaries: list[dict[str, float]]) -> str:
    return f"{min(int(s['n']) for s in summaries)}-{max(int(s['n']) for s in summaries)} jobs per repetition"
