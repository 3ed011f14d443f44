"""Figure 6: the service process's RSS before and after a run of jobs (API and worker, noop).

Full profile: 3 repetitions of 100,000 jobs, about 2.5 minutes each through HTTP on the 2-core VM.
"""

from __future__ import annotations

import statistics

from bench import db
from bench.context import Context
from bench.load import http_load
from bench.service import services
from bench.stats import Figure, Stat

TARGET_MB = 20.0
WARMUP_JOBS = 500


async def run(ctx: Context) -> list[Figure]:
    jobs = ctx.profile.memory_jobs
    before: list[float] = []
    growth: list[float] = []
    for rep in range(ctx.profile.repetitions):
        async with services(ctx.database_url, 1, ctx.folder(f"memory-{rep}")) as (proc, *_):
            # Warm up first: imports, pools and caches that fill once are not a leak.
            await http_load([proc.url], "post", total=WARMUP_JOBS)
            await db.wait_drained(ctx.conn, 120)
            rss0 = proc.rss_mb()
            result = await http_load([proc.url], "post", total=jobs)
            if result["ok"] != jobs:  # loadgen stops at its time bound: the figure is per `jobs` jobs
                raise RuntimeError(f"{result['ok']:,} of {jobs:,} jobs accepted: {result['statuses']}")
            await db.wait_drained(ctx.conn, 300)
            rss1 = proc.rss_mb()
        await db.reset(ctx.conn)
        before.append(rss0)
        growth.append(rss1 - rss0)
    size = f"{jobs:,} jobs" + (" (quick profile; the full one uses 100,000)" if jobs < 100_000 else "")
    return [
        Figure(
            key="rss_growth",
            label="6. RSS growth",
            unit="MB",
            value=Stat.of(growth),
            target=f"<= {TARGET_MB:g} MB",
            passed=statistics.median(growth) <= TARGET_MB,
            note=f"{size} after a {WARMUP_JOBS:,}-job warm-up; RSS before {statistics.median(before):.0f} MB",
        )
    ]
