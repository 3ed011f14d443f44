"""Figure 3: drain rate, no-op jobs completed per second from a pre-filled queue.

The service: 1, 2 and 4 processes (API idle, worker at its defaults) drain rows inserted and
ANALYZEd in one transaction; the clock runs from its commit (whose NOTIFY wakes the workers) to
the last `completed_at`. Baselines, same database, same run, their tables ANALYZEd before the
timed part: PgQueuer with one dequeuer at batch 10 and with its benchmark's defaults (5 x 10),
each run between the service's own repetitions, and Procrastinate with one worker at the
service's concurrency (32).
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
    pgq_args = ("bench.baselines.pgqueuer_drain", "--dsn", ctx.database_url, "--jobs", str(jobs))
    ours: dict[int, list[float]] = {1: [], 2: [], 4: []}
    pgq_one: list[float] = []
    pgq_default: list[float] = []
    # The judged comparison is interleaved repetition by repetition (service, PgQueuer 1x10,
    # PgQueuer 5x10, ...): this machine's speed drifts over minutes, and running one system's
    # repetitions after the other's would charge that drift to whichever ran later.
    async with services(ctx.database_url, 1, ctx.folder("drain-1")):
        for _rep in range(p.repetitions):
            ours[1].append(await _drain_service(ctx, jobs))
            pgq_one.append(await _baseline(*pgq_args, "--dequeuers", "1"))
            pgq_default.append(await _baseline(*pgq_args, "--dequeuers", "5"))
    for count in (2, 4):
        async with services(ctx.database_url, count, ctx.folder(f"drain-{count}")):
            for _rep in range(p.repetitions):
                ours[count].append(await _drain_service(ctx, jobs))
    procrastinate = [
        await _baseline(
            "bench.baselines.procrastinate_drain",
            "--dsn",
            ctx.database_url,
            "--jobs",
            str(p.procrastinate_jobs),
            "--concurrency",
            "32",
        )
        for _ in range(p.repetitions)
    ]

    one, two, four = Stat.of(ours[1]), Stat.of(ours[2]), Stat.of(ours[4])
    pgq1, pgq5 = Stat.of(pgq_one), Stat.of(pgq_default)
    size = f"{jobs:,} jobs, interleaved with PgQueuer's runs" + (
        " (quick profile; the full one uses 50,000)" if jobs < 50_000 else ""
    )
    return [
        _figure("drain_1p_vs_pgq1", "3. drain, 1 process", one, pgq1, "PgQueuer 1x10", True, size),
        _figure("drain_1p_vs_pgq5", "3. drain, 1 process", one, pgq5, "PgQueuer 5x10", True, ""),
        _figure(
            "drain_1p_vs_procrastinate",
            "3. drain, 1 process",
            one,
            Stat.of(procrastinate),
            "Procrastinate c=32",
            False,
            f"Procrastinate drained {p.procrastinate_jobs:,} jobs",
        ),
        _figure("drain_2p", "3. drain, 2 processes", two, pgq1, "PgQueuer 1x10", False, ""),
        _figure("drain_4p", "3. drain, 4 processes", four, pgq1, "PgQueuer 1x10", False, ""),
    ]


async def _drain_service(ctx: Context, jobs: int) -> float:
    """One timed drain by the running service processes: from the insert's commit to the last completion."""
    await db.reset(ctx.conn)
    committed = await db.insert_pending(ctx.conn, jobs)
    await db.wait_drained(ctx.conn, 600)
    rate = jobs / (await db.last_completion(ctx.conn) - committed)
    await db.reset(ctx.conn)
    return rate


async def _baseline(module: str, *args: str) -> float:
    result = await run_json(module, *args, timeout=900)
    if result["left"]:
        raise RuntimeError(f"{module} left {result['left']} jobs undone")
    rate: float = result["rate"]
    return rate


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
