"""Figure 5: does latency grow with the table? List (first page, and a followed cursor deep in
the table) and claim, with a small and a large number of finished jobs; the ratio must stay flat.

The two sizes live in two databases of the same server, each with its own service process (worker
off), and are timed interleaved, call by call: this machine's speed drifts over minutes, and a
before/after comparison would charge the drift to the larger table. List is timed through HTTP;
claim is the service's own `JobRepository.claim` (one due job among all the finished ones).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import httpx

from backend.config import Settings
from backend.db import create_engine, migrate
from backend.jobs.repository import Cursor, JobRepository
from backend.jobs.service import encode_cursor
from bench import db
from bench.context import Context
from bench.service import services
from bench.stats import Figure, Stat

TARGET = 1.2
WARMUP = 10
LARGE_DATABASE = "bench_growth_large"

Operation = Callable[[], Awaitable[float]]


async def run(ctx: Context) -> list[Figure]:
    p = ctx.profile
    await db.reset(ctx.conn)
    await ctx.conn.execute(f"DROP DATABASE IF EXISTS {LARGE_DATABASE}")
    await ctx.conn.execute(f"CREATE DATABASE {LARGE_DATABASE}")
    # A second database on the same server (BENCH_DATABASE_URL's role needs CREATEDB for this).
    large_url = ctx.database_url.rsplit("/", 1)[0] + "/" + LARGE_DATABASE
    await asyncio.to_thread(migrate, large_url.replace("postgresql://", "postgresql+asyncpg://", 1))
    large_conn = await db.connect(large_url)
    try:
        await db.insert_finished(ctx.conn, p.growth_small)
        await db.insert_finished(large_conn, p.growth_large)
        # Let the bulk load's write-back happen now, not in the timed part.
        await ctx.conn.execute("CHECKPOINT")
        async with (
            _size(ctx, ctx.database_url, ctx.conn, p.growth_small, "small") as small,
            _size(ctx, large_url, large_conn, p.growth_large, "large") as large,
        ):
            results = await _interleaved(ctx, small, large)
    finally:
        await large_conn.close()
        await ctx.conn.execute(f"DROP DATABASE IF EXISTS {LARGE_DATABASE}")
        await db.reset(ctx.conn)

    sizes = f"{p.growth_large:,} vs {p.growth_small:,} finished jobs, timed interleaved"
    if p.growth_large < 1_000_000:
        sizes += " (quick profile; the full one uses 1,000,000)"
    labels = {"first": "5. growth: list first page", "deep": "5. growth: list deep page", "claim": "5. growth: claim"}
    return [
        Figure(
            key=f"growth_{name}",
            label=label,
            unit="ms",
            value=Stat.of(results["large"][name]),
            baseline=Stat.of(results["small"][name]),
            baseline_label=f"at {p.growth_small // 1000}k rows",
            target=f"ratio <= {TARGET}",
            passed=statistics.median(results["large"][name]) <= TARGET * statistics.median(results["small"][name]),
            note=sizes if name == "first" else "",
        )
        for name, label in labels.items()
    ]


class _Size:
    """One table size: its client and repository, and the three timed operations."""

    def __init__(self, conn: asyncpg.Connection, client: httpx.AsyncClient, repo: JobRepository, followed: str):
        self.conn, self.client, self.repo, self.followed = conn, client, repo, followed

    async def first(self) -> float:
        started = time.perf_counter()
        (await self.client.get("/generations", params={"limit": 50})).raise_for_status()
        return time.perf_counter() - started

    async def deep(self) -> float:
        started = time.perf_counter()
        response = await self.client.get(self.followed)
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        assert len(response.json()) == 50
        return elapsed

    async def claim(self) -> float:
        await self.conn.execute("INSERT INTO generation_jobs (num_images, provider) VALUES (1, 'noop')")
        started = time.perf_counter()
        claimed = await self.repo.claim(limit=1, lease_seconds=30, worker_id="bench", providers=["noop"])
        elapsed = time.perf_counter() - started
        assert len(claimed) == 1
        return elapsed


@asynccontextmanager
async def _size(ctx: Context, url: str, conn: asyncpg.Connection, rows: int, tag: str) -> AsyncIterator[_Size]:
    """A service process (worker off) and a repository on one of the two databases."""
    engine = create_engine(Settings(database_url=url, _env_file=None), pool_size=2)  # type: ignore[call-arg]
    try:
        async with (
            services(url, 1, ctx.folder(f"growth-{tag}"), WORKER_ENABLED="false") as procs,
            httpx.AsyncClient(base_url=procs[0].url, timeout=10) as client,
        ):
            middle = await conn.fetchrow(
                "SELECT created_at, id FROM generation_jobs ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1",
                rows // 2,
            )
            assert middle is not None
            deep = await client.get("/generations", params={"limit": 50, "cursor": encode_cursor(Cursor(*middle))})
            deep.raise_for_status()
            # A cursor the API itself handed out, half-way down the table.
            yield _Size(conn, client, JobRepository(engine), deep.links["next"]["url"])
    finally:
        await engine.dispose()


async def _interleaved(ctx: Context, small: _Size, large: _Size) -> dict[str, dict[str, list[float]]]:
    """Per repetition, the median latency (ms) of each operation, small and large taking turns."""
    n = ctx.profile.growth_requests
    results: dict[str, dict[str, list[float]]] = {"small": {}, "large": {}}
    for _ in range(ctx.profile.repetitions):
        for name in ("first", "deep", "claim"):
            ops: dict[str, Operation] = {"small": getattr(small, name), "large": getattr(large, name)}
            for _ in range(WARMUP):
                for op in ops.values():
                    await op()
            timings: dict[str, list[float]] = {"small": [], "large": []}
            for _ in range(n):
                for size, op in ops.items():
                    timings[size].append(await op())
            for size in ops:
                results[size].setdefault(name, []).append(statistics.median(timings[size]) * 1000)
    return results
