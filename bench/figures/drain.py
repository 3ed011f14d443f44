"""Figure 3: drain rate, no-op jobs completed per second from a pre-filled queue.

The service: 1, 2 and 4 processes (API idle, worker at its defaults) drain rows inserted and
ANALYZEd in one transaction; the clock runs from its commit (whose NOTIFY wakes the workers) to
the last `completed_at`. Baselines, same database, same run, their tables ANALYZEd before the
timed part: PgQueuer with one dequeuer at batch 10 and with its benchmark's defaults (5 x 10),
and Procrastinate with one async worker.
"""

from __future__ import annotations

from bench import db
from bench.context import Context
from bench.procs import run_json
from bench.service import services
from bench.stats import Figure, Stat

TARGET = 1.2


async def run(ctx: Context) -> list[Figure]:
    p = ctx.profile
    jobs = p.drain_jobs
    ours: dict[int, Stat] = {}
    for count in (1, 2, 4):
        rates: list[float] = []
        async with services(ctx.database_url, count, ctx.folder(f"drain-{count}")) as _:
            for _rep in range(p.repetitions):
                await db.reset(ctx.conn)
                committed = await db.insert_pending(ctx.conn, jobs)
                await db.wait_drained(ctx.conn, 600)
                rates.append(jobs / (await db.last_completion(ctx.conn) - committed))
        await db.reset(ctx.conn)
        ours[count] = Stat.of(rates)

    pgq_one = await _baseline(ctx, "bench.baselines.pgqueuer_drain", "--jobs", str(jobs), "--dequeuers", "1")
    pgq_default = await _baseline(ctx, "bench.baselines.pgqueuer_drain", "--jobs", str(jobs), "--dequeuers", "5")
    procrastinate = await _baseline(
        ctx, "bench.baselines.procrastinate_drain", "--jobs", str(p.procrastinate_jobs), "--concurrency", "32"
    )

    size = f"{jobs:,} jobs" + (" (quick profile; the full one uses 50,000)" if jobs < 50_000 else "")
    figures = [
        _figure("drain_1p_vs_pgq1", "3. drain, 1 process", ours[1], pgq_one, "PgQueuer 1x10", True, size),
        _figure("drain_1p_vs_pgq5", "3. drain, 1 process", ours[1], pgq_default, "PgQueuer 5x10", True, ""),
        _figure(
            "drain_1p_vs_procrastinate",
            "3. drain, 1 process",
            ours[1],
            procrastinate,
            "Procrastinate c=32",
            False,
            f"Procrastinate drained {p.procrastinate_jobs:,} jobs",
        ),
        _figure("drain_2p", "3. drain, 2 processes", ours[2], pgq_one, "PgQueuer 1x10", False, ""),
        _figure("drain_4p", "3. drain, 4 processes", ours[4], pgq_one, "PgQueuer 1x10", False, ""),
    ]
    return figures


async def _baseline(ctx: Context, module: str, *args: str) -> Stat:
    rates = []
    for _ in range(ctx.profile.repetitions):
        result = await run_json(module, "--dsn", ctx.database_url, *args, timeout=900)
        if result["left"]:
            raise RuntimeError(f"{module} left {result['left']} jobs undone")
        rates.append(result["rate"])
    return Stat.of(rates)


def _figure(key: str, label: str, value: Stat, baseline: Stat, name: str, judged: bool, note: str) -> Figure:
    return Figure(
        key=key,
        label=label,
        unit="jobs/s",
        value=value,
        baseline=baseline,
        baseline_label=name,
        target=f">= {TARGET}x {name}" if judged else "",
        passed=value.median >= TARGET * baseline.median if judged else None,
        note=note,
    )
