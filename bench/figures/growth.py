"""Figure 5: does latency grow with the table? List (first page, and a followed cursor deep in
the table), claim, GET by id, and the event streams' replay, with a small and a large number of
finished jobs (each with the events its life wrote); the ratio must stay flat.

The two sizes live in two databases of the same server, each with its own service process (worker
off), and are timed interleaved, call by call: this machine's speed drifts over minutes, and a
before/after comparison would charge the drift to the larger table. HTTP calls go through the
service; claim is the service's own `JobRepository.claim` (one due job among all the finished ones).

GET by id and the replays read jobs drawn at random from the whole history (the same number of
draws at both sizes), not one hot row: at a million jobs most of them are not in PostgreSQL's
buffers, and a client may ask about any of its jobs. Replay is measured as a client does it:
- an account stream resumed deep in the history: `GET /events` with `Last-Event-ID` at a random
  event (every one but the newest thousand), timed until its first REPLAY_EVENTS events arrived
  (a client catching up after it lost its connection; the server reads its replay in pages of
  500, so this is one page's query), then closed;
- a finished job's stream: `GET /generations/{id}/events` without `Last-Event-ID`, which replays
  the job's created, started and completed events and ends by itself (a client opening a job it
  did not watch live); timed until the end.
"""

from __future__ import annotations

import asyncio
import itertools
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
SAMPLE = 1000  # random jobs (and event positions) drawn per size, taken in turn
REPLAY_EVENTS = 100
JOB_EVENTS = 3  # a no-op job's life: created, started, completed
STREAM_TIMEOUT = 30.0

Operation = Callable[[], Awaitable[float]]
LABELS = {
    "first": "5. growth: list first page",
    "deep": "5. growth: list deep page",
    "claim": "5. growth: claim",
    "get": "5. growth: GET by id",
    "replay": f"5. growth: replay {REPLAY_EVENTS} events after Last-Event-ID",
    "job_events": "5. growth: a finished job's event stream",
}


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
        seeded = time.monotonic()
        await db.insert_finished(ctx.conn, p.growth_small, events=True)
        await db.insert_finished(large_conn, p.growth_large, events=True)
        # Let the bulk load's write-back happen now, not in the timed part.
        await ctx.conn.execute("CHECKPOINT")
        seed_seconds = time.monotonic() - seeded
        async with (
            _size(ctx, ctx.database_url, ctx.conn, p.growth_small, "small") as small,
            _size(ctx, large_url, large_conn, p.growth_large, "large") as large,
        ):
            results = await _interleaved(ctx, small, large)
    finally:
        await large_conn.close()
        await ctx.conn.execute(f"DROP DATABASE IF EXISTS {LARGE_DATABASE}")
        await db.reset(ctx.conn)

    sizes = f"{p.growth_large:,} vs {p.growth_small:,} finished jobs (3 events each), timed interleaved"
    if p.growth_large < 1_000_000:
        sizes += " (quick profile; the full one uses 1,000,000)"
    notes = {
        "first": f"{sizes}; seeding took {seed_seconds:.0f} s",
        "get": f"{SAMPLE:,} random jobs of the whole history, in turn",
        "replay": f"GET /events from a random event of the history, until its {REPLAY_EVENTS}th event",
        "job_events": "GET /generations/{id}/events of a random finished job: 3 events replayed, then it ends",
    }
    return [
        Figure(
            key=f"growth_{name}",
            label=label,
            unit="ms",
            value=Stat.of(results["large"][name]),
            baseline=Stat.of(results["small"][name]),
            baseline_label=f"at {p.growth_small // 1000}k jobs",
            target=f"ratio <= {TARGET}",
            passed=statistics.median(results["large"][name]) <= TARGET * statistics.median(results["small"][name]),
            note=notes.get(name, ""),
        )
        for name, label in LABELS.items()
    ]


class _Size:
    """One table size: its client and repository, and the timed operations."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        client: httpx.AsyncClient,
        repo: JobRepository,
        followed: str,
        jobs: list[str],
        events: list[int],
    ):
        self.conn, self.client, self.repo, self.followed = conn, client, repo, followed
        self.jobs, self.events = itertools.cycle(jobs), itertools.cycle(events)

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

    async def get(self) -> float:
        job_id = next(self.jobs)
        started = time.perf_counter()
        response = await self.client.get(f"/generations/{job_id}")
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        return elapsed

    async def replay(self) -> float:
        """Until the REPLAY_EVENTS-th event arrived; then the client hangs up (the stream is live)."""
        headers = {"Last-Event-ID": str(next(self.events))}
        started = time.perf_counter()
        # Bounded: a live stream that stopped short would otherwise wait for events forever.
        got = await asyncio.wait_for(_events(self.client, "/events", headers, REPLAY_EVENTS), STREAM_TIMEOUT)
        elapsed = time.perf_counter() - started
        assert got == REPLAY_EVENTS, got
        return elapsed

    async def job_events(self) -> float:
        """Until the stream ends by itself, after the job's terminal event."""
        started = time.perf_counter()
        path = f"/generations/{next(self.jobs)}/events"
        got = await asyncio.wait_for(_events(self.client, path, {}, JOB_EVENTS + 1), STREAM_TIMEOUT)
        elapsed = time.perf_counter() - started
        assert got == JOB_EVENTS, got
        return elapsed


async def _events(client: httpx.AsyncClient, path: str, headers: dict[str, str], most: int) -> int:
    """Read a server-sent event stream until it ends or `most` events came; how many came."""
    got = 0
    async with client.stream("GET", path, headers=headers) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                got += 1
                if got >= most:
                    break
    return got


@asynccontextmanager
async def _size(ctx: Context, url: str, conn: asyncpg.Connection, rows: int, tag: str) -> AsyncIterator[_Size]:
    """A service process (worker off) and a repository on one of the two databases."""
    engine = create_engine(Settings(database_url=url, _env_file=None), pool_size=2)  # type: ignore[call-arg]
    try:
        async with (
            services(url, 1, ctx.folder(f"growth-{tag}"), WORKER_ENABLED="false") as procs,
            httpx.AsyncClient(base_url=procs[0].url, timeout=30) as client,
        ):
            middle = await conn.fetchrow(
                "SELECT created_at, id FROM generation_jobs ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1",
                rows // 2,
            )
            assert middle is not None
            deep = await client.get("/generations", params={"limit": 50, "cursor": encode_cursor(Cursor(*middle))})
            deep.raise_for_status()
            jobs = await conn.fetch("SELECT id::text FROM generation_jobs ORDER BY random() LIMIT $1", SAMPLE)
            # Every event but the newest thousand leaves a full replay behind it.
            events = await conn.fetch(
                "SELECT id FROM events WHERE id < (SELECT id FROM events ORDER BY id DESC OFFSET 1000 LIMIT 1)"
                " ORDER BY random() LIMIT $1",
                SAMPLE,
            )
            # A cursor the API itself handed out, half-way down the table.
            yield _Size(
                conn,
                client,
                JobRepository(engine),
                deep.links["next"]["url"],
                [row[0] for row in jobs],
                [row[0] for row in events],
            )
    finally:
        await engine.dispose()


async def _interleaved(ctx: Context, small: _Size, large: _Size) -> dict[str, dict[str, list[float]]]:
    """Per repetition, the median latency (ms) of each operation, small and large taking turns."""
    n = ctx.profile.growth_requests
    results: dict[str, dict[str, list[float]]] = {"small": {}, "large": {}}
    for _ in range(ctx.profile.repetitions):
        for name in LABELS:
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
