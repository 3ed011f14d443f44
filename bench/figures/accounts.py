"""Figure 7: accounts — what fair share and auth cost, and what fair share buys.

7a. The claim statement, fair (per-account skip scan, quotas, fewest-running first) beside the
    FIFO claim it replaced, same database, repetitions interleaved: one account's 10,000 noop
    jobs drained by 4 connections claiming 32 at a time (each claim followed by one batched
    completion), and the idle claim's latency (one due job, claimed at once). The FIFO runs get
    the index the FIFO claim had (pending jobs by run_after) and the fair runs do not.
7b. Fairness: one service process, account A's backlog of 10,000 `animals` jobs, then account
    B posts one job at a time; B's pickup delay (202 to `started_at`). Baseline: what FIFO would
    make B wait, A's backlog divided by the measured drain rate.
7c. Accept rate with AUTH_REQUIRED=true, a key and its rate limit (high enough never to refuse)
    beside AUTH_REQUIRED=false without limits, same run, interleaved.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import asyncpg
import httpx

from backend.jobs.repository import _CLAIM_SQL
from bench import db
from bench.context import Context
from bench.load import http_load
from bench.parts import account_key
from bench.service import services
from bench.stats import Figure, Stat, latency_summary, table

FIFO_CLAIM = """
UPDATE generation_jobs SET status = 'processing', lease_token = gen_random_uuid(),
    lease_expires_at = now() + make_interval(secs => $2), attempts = attempts + 1,
    worker_id = $3, started_at = clock_timestamp(), updated_at = now()
WHERE id IN (
    SELECT id FROM generation_jobs
    WHERE status = 'pending' AND run_after <= now() AND provider = ANY($4::text[])
    ORDER BY run_after LIMIT $1
    FOR UPDATE SKIP LOCKED
)
RETURNING id
"""
FAIR_CLAIM = _CLAIM_SQL
FIFO_INDEX = "CREATE INDEX bench_fifo_pending_idx ON generation_jobs (run_after) WHERE status = 'pending'"
COMPLETE = """
UPDATE generation_jobs SET status = 'completed', lease_token = NULL, lease_expires_at = NULL,
    completed_at = now(), updated_at = now()
WHERE id = ANY($1::uuid[])
"""
CLAIMERS = 4
BATCH = 32
SECONDS_PER_JOB = 0.5  # 7b: the animals provider's delay, one image per job
FAIRNESS_CONCURRENCY = 32


async def run(ctx: Context) -> list[Figure]:
    figures: list[Figure] = []
    for part in (_claim_cost, _fairness, _auth_cost):
        figures += await part(ctx)
        print(table(figures), flush=True)  # each part takes minutes: show what is done
    return figures


async def _claim_cost(ctx: Context) -> list[Figure]:
    jobs = ctx.profile.drain_jobs
    drain: dict[str, list[float]] = {"fifo": [], "fair": []}
    idle: dict[str, list[float]] = {"fifo": [], "fair": []}
    pool = await asyncpg.create_pool(ctx.database_url, min_size=CLAIMERS, max_size=CLAIMERS)
    try:
        for _ in range(ctx.profile.repetitions):
            for name, sql in (("fifo", FIFO_CLAIM), ("fair", FAIR_CLAIM)):
                if name == "fifo":
                    await ctx.conn.execute(FIFO_INDEX)
                try:
                    drain[name].append(await _sql_drain(ctx, pool, sql, jobs))
                    idle[name].append(await _idle_claim_ms(ctx, sql))
                finally:
                    await ctx.conn.execute("DROP INDEX IF EXISTS bench_fifo_pending_idx")
    finally:
        await pool.close()
    fair, fifo = Stat.of(drain["fair"]), Stat.of(drain["fifo"])
    fair_idle, fifo_idle = Stat.of(idle["fair"]), Stat.of(idle["fifo"])
    return [
        Figure(
            key="claim_drain_fair_vs_fifo",
            label="7a. claim drain, fair vs FIFO",
            unit="jobs/s",
            value=fair,
            baseline=fifo,
            baseline_label="FIFO claim",
            target=">= 0.9x FIFO",
            passed=fair.median >= 0.9 * fifo.median,
            note=f"{jobs:,} jobs of one account, {CLAIMERS} connections claiming {BATCH} at a time",
        ),
        Figure(
            key="claim_idle_fair_vs_fifo",
            label="7a. idle claim latency p50",
            unit="ms",
            value=fair_idle,
            baseline=fifo_idle,
            baseline_label="FIFO claim",
            note="one due job, claimed by one statement, 200 times per repetition",
        ),
    ]


async def _sql_drain(ctx: Context, pool: asyncpg.Pool, sql: str, jobs: int) -> float:
    await db.reset(ctx.conn)
    await _insert(ctx.conn, jobs, "noop")
    fair = sql is FAIR_CLAIM

    async def claimer(index: int) -> None:
        async with pool.acquire() as conn:
            while True:
                args = [BATCH, 30.0, f"bench-{index}", ["noop"]] + ([None] if fair else [])
                rows = await conn.fetch(sql, *args)
                if not rows:
                    return
                await conn.execute(COMPLETE, [row[0] for row in rows])

    started = time.perf_counter()
    await asyncio.gather(*(claimer(i) for i in range(CLAIMERS)))
    rate = jobs / (time.perf_counter() - started)
    await db.reset(ctx.conn)
    return rate


async def _insert(conn: asyncpg.Connection, count: int, provider: str, account: uuid.UUID | None = None) -> None:
    """`count` due jobs, a few thousand per statement (the events trigger caps one transaction)."""
    for start in range(0, count, 4000):
        await conn.execute(
            "INSERT INTO generation_jobs (num_images, provider, account_id)"
            " SELECT 1, $1, coalesce($2, '00000000-0000-0000-0000-000000000000'::uuid) FROM generate_series(1, $3)",
            provider,
            account,
            min(4000, count - start),
        )
    await conn.execute("ANALYZE generation_jobs")


async def _idle_claim_ms(ctx: Context, sql: str) -> float:
    args: list[object] = [BATCH, 30.0, "bench-idle", ["noop"]] + ([None] if sql is FAIR_CLAIM else [])
    timings = []
    for _ in range(200):
        await ctx.conn.execute("INSERT INTO generation_jobs (num_images, provider) VALUES (1, 'noop')")
        started = time.perf_counter()
        rows = await ctx.conn.fetch(sql, *args)
        timings.append(time.perf_counter() - started)
        await ctx.conn.execute(COMPLETE, [row[0] for row in rows])
    await db.reset(ctx.conn)
    return statistics.median(timings) * 1000


async def _fairness(ctx: Context) -> list[Figure]:
    backlog = ctx.profile.drain_jobs
    settings = {
        "DEFAULT_PROVIDER": "animals",
        "IMAGE_PROVIDER_DELAY": str(SECONDS_PER_JOB),
        "WORKER_CONCURRENCY": str(FAIRNESS_CONCURRENCY),
    }
    a, _ = await account_key(ctx.conn, "bench backlog")
    _, b_key = await account_key(ctx.conn, "bench newcomer")
    delays: list[float] = []
    drain_rates: list[float] = []
    async with (
        services(ctx.database_url, 1, ctx.folder("fairness"), **settings) as (proc,),
        httpx.AsyncClient(base_url=proc.url, timeout=10) as client,
    ):
        for _ in range(ctx.profile.repetitions):
            await db.reset(ctx.conn)
            await _insert(ctx.conn, backlog, "animals", a)
            await asyncio.sleep(2 * SECONDS_PER_JOB)  # the worker is saturated with A's jobs
            done_before = await _completed(ctx.conn)
            clock = time.monotonic()
            for _ in range(10):
                response = await client.post(
                    "/generations",
                    headers={"authorization": f"Bearer {b_key}"},
                    json={"numImages": 1, "provider": "animals"},
                )
                acked = time.time()
                response.raise_for_status()
                picked = await db.started_at(ctx.conn, [response.json()["jobId"]], timeout=60)
                delays.extend(t - acked for t in picked.values())
            drain_rates.append((await _completed(ctx.conn) - done_before) / (time.monotonic() - clock))
            await db.reset(ctx.conn)  # A's rest; the running ones' completions no longer match a row
    summary = latency_summary(delays)
    fifo_wait_ms = backlog / statistics.median(drain_rates) * 1000
    return [
        Figure(
            key=f"fairness_pickup_{q}",
            label=f"7b. newcomer pickup behind a backlog {q}",
            unit="ms",
            value=Stat.of([summary[q]]),
            baseline=Stat.of([fifo_wait_ms]),
            baseline_label="FIFO (computed)",
            target=f"<= a few job durations ({SECONDS_PER_JOB * 1000:.0f} ms each)" if q == "p95" else "",
            passed=summary[q] <= 3 * SECONDS_PER_JOB * 1000 if q == "p95" else None,
            note=(
                f"A: {backlog:,} pending jobs of {SECONDS_PER_JOB:g} s, {FAIRNESS_CONCURRENCY} slots;"
                f" B: {int(summary['n'])} jobs posted one at a time"
                if q == "p50"
                else ""
            ),
        )
        for q in ("p50", "p95")
    ]


async def _completed(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM generation_jobs WHERE status = 'completed'")
    return count


async def _auth_cost(ctx: Context) -> list[Figure]:
    _, key = await account_key(ctx.conn, "bench load", rate_limit=1_000_000)
    on = {"AUTH_REQUIRED": "true", "RATE_LIMIT_PER_MINUTE": "1000000", "MAX_PENDING_JOBS_PER_KEY": "10000"}
    rates: dict[str, list[float]] = {"on": [], "off": []}
    refused = 0
    for _ in range(ctx.profile.repetitions):
        for name, settings in (("off", {}), ("on", on)):
            async with services(ctx.database_url, 1, ctx.folder(f"auth-{name}"), **settings) as (proc,):
                bearer = key if name == "on" else None
                result = await http_load([proc.url], "post", ctx.profile.load_seconds, bearer=bearer)
                rates[name].append(result["rate"])
                refused += sum(v for k, v in result["statuses"].items() if k != "202")
                await db.wait_drained(ctx.conn, 180)
                await db.reset(ctx.conn)
    value, baseline = Stat.of(rates["on"]), Stat.of(rates["off"])
    return [
        Figure(
            key="accept_auth_on_vs_off",
            label="7c. accept rate, auth + rate limit on",
            unit="req/s",
            value=value,
            baseline=baseline,
            baseline_label="auth and limits off",
            note=(
                f"1 process, 32 clients; on: key checked (cached 5 s) and one GCRA upsert + backlog count"
                f" per request; {refused} requests refused"
            ),
        )
    ]
