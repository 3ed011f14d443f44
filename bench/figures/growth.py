"""Figure 5: does latency grow with the table? List (first page, and a followed cursor deep in
the table) and claim, with a small and a large number of finished jobs; the ratio must stay flat.

List is timed through HTTP against one process whose worker is off; claim is the service's own
`JobRepository.claim` (one due job among all the finished ones), called from here.
"""

from __future__ import annotations

import statistics
import time

import httpx

from backend.config import Settings
from backend.db import create_engine
from backend.repository import Cursor, JobRepository
from backend.service import encode_cursor
from bench import db
from bench.context import Context
from bench.service import services
from bench.stats import Figure, Stat

TARGET = 1.2
WARMUP = 10


async def run(ctx: Context) -> list[Figure]:
    p = ctx.profile
    await db.reset(ctx.conn)
    engine = create_engine(Settings(database_url=ctx.database_url, _env_file=None))  # type: ignore[call-arg]
    repo = JobRepository(engine)
    try:
        async with (
            services(ctx.database_url, 1, ctx.folder("growth"), WORKER_ENABLED="false") as procs,
            httpx.AsyncClient(base_url=procs[0].url, timeout=10) as client,
        ):
            await db.insert_finished(ctx.conn, p.growth_small)
            small = await _measure(ctx, client, repo, p.growth_small)
            await db.insert_finished(ctx.conn, p.growth_large - p.growth_small)
            large = await _measure(ctx, client, repo, p.growth_large)
    finally:
        await engine.dispose()
        await db.reset(ctx.conn)

    sizes = f"{p.growth_large:,} vs {p.growth_small:,} finished jobs"
    if p.growth_large < 1_000_000:
        sizes += " (quick profile; the full one uses 1,000,000)"
    labels = {
        "first": "5. growth: list first page",
        "deep": "5. growth: list deep page",
        "claim": "5. growth: claim",
    }
    return [
        Figure(
            key=f"growth_{name}",
            label=label,
            unit="ms",
            value=Stat.of(large[name]),
            baseline=Stat.of(small[name]),
            baseline_label=f"at {p.growth_small // 1000}k rows",
            target=f"ratio <= {TARGET}",
            passed=statistics.median(large[name]) <= TARGET * statistics.median(small[name]),
            note=sizes if name == "first" else "",
        )
        for name, label in labels.items()
    ]


async def _measure(ctx: Context, client: httpx.AsyncClient, repo: JobRepository, rows: int) -> dict[str, list[float]]:
    """Per repetition, the median latency (ms) of each operation over growth_requests calls."""
    n = ctx.profile.growth_requests
    middle = await ctx.conn.fetchrow(
        "SELECT created_at, id FROM generation_jobs ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1", rows // 2
    )
    assert middle is not None
    deep = await client.get("/generations", params={"limit": 50, "cursor": encode_cursor(Cursor(*middle))})
    deep.raise_for_status()
    followed = deep.links["next"]["url"]  # a cursor the API itself handed out, half-way down the table

    async def first() -> float:
        started = time.perf_counter()
        (await client.get("/generations", params={"limit": 50})).raise_for_status()
        return time.perf_counter() - started

    async def follow() -> float:
        started = time.perf_counter()
        response = await client.get(followed)
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        assert len(response.json()) == 50
        return elapsed

    async def claim() -> float:
        await ctx.conn.execute("INSERT INTO generation_jobs (num_images, provider) VALUES (1, 'noop')")
        started = time.perf_counter()
        claimed = await repo.claim(limit=1, lease_seconds=30, worker_id="bench", providers=["noop"])
        elapsed = time.perf_counter() - started
        assert len(claimed) == 1
        return elapsed

    results: dict[str, list[float]] = {"first": [], "deep": [], "claim": []}
    for _ in range(ctx.profile.repetitions):
        for name, call in (("first", first), ("deep", follow), ("claim", claim)):
            for _ in range(WARMUP):
                await call()
            timings = [await call() for _ in range(n)]
            results[name].append(statistics.median(timings) * 1000)
    await ctx.conn.execute(
        "UPDATE generation_jobs SET status = 'completed', lease_token = NULL, lease_expires_at = NULL, "
        "completed_at = now() WHERE status = 'processing'"
    )
    await ctx.conn.execute("VACUUM ANALYZE generation_jobs")
    return results
