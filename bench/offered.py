"""A constant offered rate against running services, and the pickup of every job it created.

Pickup here is the server's own `started_at - created_at` of every job created while the load ran
(both stamped by PostgreSQL's clock), so neither the client's clock nor its queueing enters it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from bench.procs import run_json
from bench.stats import latency_summary

# How long after the last request the queue must be empty of unstarted jobs.
BACKLOG_GRACE = 1.0


async def offered_load(
    conn: asyncpg.Connection,
    urls: list[str],
    rate: float,
    seconds: float,
    *,
    connections: int = 64,
    bearer: str | None = None,
    webhook: str | None = None,
) -> dict[str, Any]:
    """POST at `rate` per second for `seconds`; the pickup of every job created meanwhile."""
    args = ["--mode", "post", "--rate", f"{rate:.1f}", "--duration", str(seconds), "--concurrency", str(connections)]
    args += ["--bearer", bearer] if bearer else []
    args += ["--webhook", webhook] if webhook else []
    for url in urls:
        args += ["--url", url]
    window_start = await conn.fetchval("SELECT clock_timestamp()")
    load = await run_json("bench.loadgen", *args, timeout=seconds + 120)
    stopped = time.monotonic()
    await asyncio.sleep(max(0.0, stopped + BACKLOG_GRACE - time.monotonic()))
    backlog = await conn.fetchval(
        "SELECT count(*) FROM generation_jobs WHERE created_at >= $1 AND started_at IS NULL", window_start
    )
    deadline = time.monotonic() + 120
    while await conn.fetchval(
        "SELECT count(*) FROM generation_jobs WHERE created_at >= $1 AND started_at IS NULL", window_start
    ):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    rows = await conn.fetch(
        "SELECT extract(epoch FROM started_at - created_at)::float8 AS pickup FROM generation_jobs "
        "WHERE created_at >= $1 AND started_at IS NOT NULL",
        window_start,
    )
    pickup = latency_summary([row["pickup"] for row in rows])
    return {"load": load, "pickup": pickup, "backlog": int(backlog), "jobs": len(rows)}
