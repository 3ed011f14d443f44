"""The benchmark's PostgreSQL (embedded, or BENCH_DATABASE_URL) and the SQL that seeds it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import asyncpg

from backend.db import migrate
from backend.embedded_pg import EmbeddedPostgres, free_port
from backend.events.models import ID_SHIFT

# Busy rows live in these statuses; a queue is drained when none is left.
_LIVE = "status IN ('pending', 'processing')"


@contextlib.asynccontextmanager
async def database(workdir: Path) -> AsyncIterator[str]:
    """A migrated database URL. BENCH_DATABASE_URL must point at a scratch database: it is truncated."""
    url = os.environ.get("BENCH_DATABASE_URL")
    pg: EmbeddedPostgres | None = None
    if not url:
        pg = EmbeddedPostgres(workdir / "postgres", free_port())
        await asyncio.to_thread(pg.start)
        url = pg.url
    try:
        await asyncio.to_thread(migrate, url.replace("postgresql://", "postgresql+asyncpg://", 1))
        yield url
    finally:
        if pg is not None:
            await asyncio.to_thread(pg.stop)


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url)


async def server_version(conn: asyncpg.Connection) -> str:
    version: str = await conn.fetchval("SHOW server_version")
    return version


async def reset(conn: asyncpg.Connection) -> None:
    # And the rows that point at jobs (chat), and the jobs' events: every figure starts from the
    # same empty tables, not from the events of every figure before it.
    await conn.execute("TRUNCATE generation_jobs, events, webhook_deliveries CASCADE")
    await conn.execute("VACUUM ANALYZE generation_jobs")


async def insert_pending(conn: asyncpg.Connection, count: int) -> float:
    """Insert `count` due noop jobs and ANALYZE in one transaction; returns the commit's wall time.

    ANALYZE counts the transaction's own uncommitted rows, so the planner knows the queue's size
    before the first claim, and the workers (woken by the insert trigger's NOTIFY at commit) start
    on a table with statistics — the same courtesy every baseline gets.
    """
    async with conn.transaction():
        # The seed is the benchmark's setup, not clients' requests: it skips the triggers (no
        # job.created events for rows no client made) and wakes the workers itself, at the one commit.
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "INSERT INTO generation_jobs (num_images, provider) SELECT 1, 'noop' FROM generate_series(1, $1)", count
        )
        await conn.execute("SELECT pg_notify('generation_jobs_new', '')")
        await conn.execute("ANALYZE generation_jobs")
    return time.time()


async def insert_finished(conn: asyncpg.Connection, count: int, *, events: bool = False) -> None:
    """Append `count` completed jobs, each 1 ms older than the last, below the oldest row.

    History, not changes: the insert writes no events itself (a million in one statement exceeds
    the events' ids per transaction). With `events`, `insert_history` then gives each of them the
    events its life would have written."""
    oldest = await conn.fetchval("SELECT coalesce(min(created_at), now()) FROM generation_jobs")
    async with conn.transaction():
        await conn.execute("SET LOCAL generation_jobs.events = 'off'")
        await conn.execute(
            """
            INSERT INTO generation_jobs
                (status, num_images, provider, attempts, created_at, updated_at, run_after, started_at, completed_at)
            SELECT 'completed', 1, 'noop', 1, t, t, t, t, t
            FROM (SELECT $2::timestamptz - make_interval(secs => g * 0.001) AS t FROM generate_series(1, $1) AS g) AS s
            """,
            count,
            oldest,
        )
    if events:
        await insert_history(conn, oldest)
    await conn.execute("VACUUM ANALYZE generation_jobs")


# Per job, the three events a no-op job's life writes: its snapshot as the trigger stores it
# (to_jsonb of the row less the lease token and request hash) as it was at each change.
_LIFE = """
    (VALUES (0, 'job.created', jsonb_build_object('status', 'pending', 'attempts', 0, 'started_at', NULL,
                                                   'completed_at', NULL)),
            (1, 'job.started', jsonb_build_object('status', 'processing', 'completed_at', NULL)),
            (2, 'job.completed', '{}'::jsonb)) AS life(k, type, patch)
"""
# 65,536 event ids per transaction (backend/migrations/versions/0011_events_bulk.py), three per job.
_HISTORY_CHUNK = (1 << ID_SHIFT) // 3


async def insert_history(conn: asyncpg.Connection, before: datetime) -> None:
    """The events of every job created before `before` (created, started, completed), oldest
    job first, written as the trigger writes them: ids (transaction id << 16) + ordinal, at most
    65,536 per transaction, so the history sits below every id the product writes afterwards and
    below the readers' horizon once committed. One statement per 21,845 jobs."""
    await conn.execute("CREATE TEMP TABLE history_order (id uuid, n integer) ON COMMIT PRESERVE ROWS")
    try:
        await conn.execute(
            "INSERT INTO history_order SELECT id, (row_number() OVER (ORDER BY created_at, id) - 1)::integer"
            " FROM generation_jobs WHERE created_at < $1",
            before,
        )
        await conn.execute("CREATE INDEX ON history_order (n)")
        await conn.execute("ANALYZE history_order")
        total: int = await conn.fetchval("SELECT count(*) FROM history_order")
        for first in range(0, total, _HISTORY_CHUNK):
            await conn.execute(
                f"""
                INSERT INTO events (id, account_id, type, job_id, data, created_at)
                SELECT (pg_current_xact_id()::text::bigint << {ID_SHIFT}) + (h.n - $1) * 3 + life.k,
                       j.account_id, life.type, j.id,
                       (to_jsonb(j) - 'lease_token' - 'request_hash') || life.patch,
                       CASE life.k WHEN 0 THEN j.created_at WHEN 1 THEN j.started_at ELSE j.completed_at END
                FROM history_order h JOIN generation_jobs j ON j.id = h.id CROSS JOIN {_LIFE}
                WHERE h.n >= $1 AND h.n < $1 + {_HISTORY_CHUNK}
                ORDER BY h.n, life.k
                """,
                first,
            )
    finally:
        await conn.execute("DROP TABLE history_order")
    await conn.execute("VACUUM ANALYZE events")


async def wait_drained(conn: asyncpg.Connection, timeout: float) -> None:
    """Wait until no job is pending or processing (bounded)."""
    deadline = time.monotonic() + timeout
    while await conn.fetchval(f"SELECT count(*) FROM generation_jobs WHERE {_LIVE}"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the queue did not drain within {timeout:.0f}s")
        await asyncio.sleep(0.05)


async def last_completion(conn: asyncpg.Connection) -> float:
    value: float = await conn.fetchval("SELECT extract(epoch FROM max(completed_at))::float8 FROM generation_jobs")
    return value


async def started_at(conn: asyncpg.Connection, ids: list[str], timeout: float) -> dict[str, float]:
    """Claim times (epoch seconds) of these jobs, waiting (bounded) until every one was claimed."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await conn.fetch(
            "SELECT id::text, extract(epoch FROM started_at)::float8 AS t FROM generation_jobs "
            "WHERE id = ANY($1::uuid[]) AND started_at IS NOT NULL",
            ids,
        )
        if len(rows) == len(ids) or time.monotonic() > deadline:
            return {row["id"]: row["t"] for row in rows}
        await asyncio.sleep(0.05)
