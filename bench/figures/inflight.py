"""Remote jobs one process babysits while a slow service keeps them running (replicate provider).

A local fake of Replicate's predictions API keeps every prediction `processing` for as long as
the figure runs, so each job stays in flight: created once, then polled with the shared
backoff. With WORKER_CONCURRENCY=1000 the service holds 1,000 remote jobs at once; we read its
CPU and RSS while it polls them (polls back off to POLL_MAX_SECONDS=5 here, far more often
than the default 30 s, so this is a pessimistic load). The fake runs in a process of its own.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import httpx
import psutil

from backend.embedded_pg import free_port
from bench import db
from bench.context import Context
from bench.procs import BenchError, die_with_parent
from bench.service import services
from bench.stats import Figure, Stat
from bench.venv import ROOT

IN_FLIGHT = 1000
SAMPLE_SECONDS = 10.0
TOKEN = "r8_bench"
POLL_MAX = 5


@contextmanager
def slow_replicate() -> Iterator[str]:
    """The fake in a process of its own, so its CPU is neither ours nor the service's."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.slow_replicate", str(port), TOKEN], cwd=ROOT, preexec_fn=die_with_parent
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/stats", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise BenchError("the slow Replicate fake did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


async def stats(url: str) -> dict[str, int]:
    async with httpx.AsyncClient(timeout=10) as client:
        counts: dict[str, int] = (await client.get(f"{url}/stats")).json()
        return counts


async def in_flight(conn: asyncpg.Connection) -> int:
    sql = "SELECT count(*) FROM generation_jobs WHERE status = 'processing' AND provider_job_id IS NOT NULL"
    count: int = await conn.fetchval(sql)
    return count


async def insert_remote_jobs(conn: asyncpg.Connection, count: int) -> None:
    await conn.execute(
        "INSERT INTO generation_jobs (num_images, provider) SELECT 1, 'replicate' FROM generate_series(1, $1)", count
    )


async def run(ctx: Context) -> list[Figure]:
    cpu, rss, per_job, polls, creates = [], [], [], [], []
    for rep in range(ctx.profile.repetitions):
        with slow_replicate() as url:
            settings = {
                "PROVIDERS": "animals,replicate",
                "DEFAULT_PROVIDER": "replicate",
                "REPLICATE_API_TOKEN": TOKEN,
                "REPLICATE_BASE_URL": url,
                "WORKER_CONCURRENCY": str(IN_FLIGHT),
                "POLL_INITIAL_SECONDS": "1",
                "POLL_MAX_SECONDS": str(POLL_MAX),
                "SHUTDOWN_GRACE_SECONDS": "0",
            }
            async with services(ctx.database_url, 1, ctx.folder(f"inflight-{rep}"), **settings) as (proc,):
                idle = proc.rss_mb()
                await insert_remote_jobs(ctx.conn, IN_FLIGHT)
                deadline = time.monotonic() + 180
                while (await in_flight(ctx.conn)) < IN_FLIGHT:
                    if time.monotonic() > deadline:
                        raise BenchError(f"only {await in_flight(ctx.conn)} of {IN_FLIGHT} jobs reached the service")
                    await asyncio.sleep(0.2)
                await asyncio.sleep(5)  # let the first burst of polls settle into the backoff
                process = psutil.Process(proc.process.pid)
                process.cpu_percent(None)
                polls0 = (await stats(url))["polls"]
                await asyncio.sleep(SAMPLE_SECONDS)
                cpu.append(process.cpu_percent(None))
                counts = await stats(url)
                polls.append((counts["polls"] - polls0) / SAMPLE_SECONDS)
                rss.append(proc.rss_mb())
                per_job.append((rss[-1] - idle) * 1024 / IN_FLIGHT)
                creates.append(counts["creates"])
        await db.reset(ctx.conn)
    note = (
        f"{IN_FLIGHT:,} remote jobs in flight in one process, polled every <= {POLL_MAX} s "
        f"({Stat.of(polls).median:.0f} polls/s; remote creates per run {sorted(creates)})"
    )
    return [
        Figure(
            key="inflight_cpu",
            label="remote: CPU, 1,000 jobs polling",
            unit="% of a core",
            value=Stat.of(cpu),
            note=note,
        ),
        Figure(key="inflight_rss", label="remote: RSS, 1,000 jobs polling", unit="MB", value=Stat.of(rss)),
        Figure(key="inflight_per_job", label="remote: memory per job in flight", unit="KiB", value=Stat.of(per_job)),
    ]
