"""Fair share and concurrency quotas: decided by the claim statement, across every replica."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.accounts import ANONYMOUS_ACCOUNT_ID
from backend.jobs.repository import JobRepository
from tests.conftest import AppFactory
from tests.fakes import ScriptedProvider
from tests.processes import kill_all, start_service
from tests.test_accounts import make_key

pytestmark = pytest.mark.usefixtures("engine")


async def backlog(engine: AsyncEngine, account_id: uuid.UUID, count: int, provider: str = "animals") -> None:
    """`count` pending jobs for one account, oldest first, inserted in one statement."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO generation_jobs (num_images, provider, account_id, run_after, created_at)"
                " SELECT 1, :provider, :account, now() - make_interval(secs => :n - i), now()"
                " FROM generate_series(1, :n) i"
            ),
            {"provider": provider, "account": account_id, "n": count},
        )


async def scalar(engine: AsyncEngine, sql: str, **params: object) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text(sql), params)).scalar_one())


async def claim(repo: JobRepository, limit: int) -> list[uuid.UUID]:
    claimed = await repo.claim(limit=limit, lease_seconds=30, worker_id="test", providers=["animals"])
    return [job.account_id for job in claimed]


async def test_the_claim_serves_the_account_with_fewest_running_first(engine: AsyncEngine) -> None:
    repo = JobRepository(engine)
    a, _ = await make_key(engine, "a")
    b, _ = await make_key(engine, "b")
    await backlog(engine, a.id, 100)
    assert await claim(repo, 3) == [a.id] * 3  # one account: its oldest jobs, as before

    await backlog(engine, b.id, 2)  # newer than all of A's backlog
    assert sorted(map(str, await claim(repo, 3))) == sorted(map(str, [b.id, b.id, a.id]))
    assert await claim(repo, 1) == [a.id]  # B has nothing left; A continues


async def test_a_quota_caps_running_jobs_and_slots_are_distinct(engine: AsyncEngine) -> None:
    repo = JobRepository(engine)
    capped, _ = await make_key(engine, "capped", max_concurrent=2)
    await backlog(engine, capped.id, 10)
    await backlog(engine, ANONYMOUS_ACCOUNT_ID, 3)

    first = await claim(repo, 10)
    assert first.count(capped.id) == 2 and first.count(ANONYMOUS_ACCOUNT_ID) == 3
    assert await claim(repo, 10) == []  # the quota is full; nothing else is pending
    slots = "SELECT count(DISTINCT slot) FROM generation_jobs WHERE account_id = :a AND status = 'processing'"
    assert await scalar(engine, slots, a=capped.id) == 2

    async with engine.begin() as connection:  # one of its jobs finishes
        await connection.execute(
            text(
                "UPDATE generation_jobs SET status = 'completed', lease_token = NULL, lease_expires_at = NULL"
                " WHERE id = (SELECT id FROM generation_jobs WHERE account_id = :a AND status = 'processing' LIMIT 1)"
            ),
            {"a": capped.id},
        )
    assert await claim(repo, 10) == [capped.id]

    # MAX_CONCURRENT_JOBS_PER_KEY is the quota of accounts without one of their own.
    await backlog(engine, ANONYMOUS_ACCOUNT_ID, 5)
    assert await claim(JobRepository(engine, default_quota=4), 10) == [ANONYMOUS_ACCOUNT_ID]


async def test_a_new_account_is_not_stuck_behind_a_backlog(engine: AsyncEngine, make_client: AppFactory) -> None:
    """A has 1,000 jobs waiting; B's new job starts within a few jobs' run time, not after A's backlog."""
    duration = 0.2
    provider = ScriptedProvider(delay=duration, name="scripted")
    client = await make_client({"scripted": provider}, worker_concurrency=4, default_provider="scripted")
    a, _ = await make_key(engine, "a")
    _, b_key = await make_key(engine, "b")
    await backlog(engine, a.id, 1000, provider="scripted")
    running = "SELECT count(*) FROM generation_jobs WHERE status = 'processing'"
    deadline = time.monotonic() + 10
    while await scalar(engine, running) < 4:
        assert time.monotonic() < deadline, "the worker never filled its slots"
        await asyncio.sleep(0.01)

    response = await client.post("/generations", headers={"authorization": f"Bearer {b_key}"}, json={"numImages": 1})
    job_id = response.json()["jobId"]
    started = "SELECT count(*) FROM generation_jobs WHERE id = :id AND started_at IS NOT NULL"
    while not await scalar(engine, started, id=job_id):
        assert time.monotonic() < deadline + 10, "B's job never started"
        await asyncio.sleep(0.01)

    delay = "SELECT extract(epoch FROM started_at - created_at) FROM generation_jobs WHERE id = :id"
    async with engine.connect() as connection:
        waited = float((await connection.execute(text(delay), {"id": job_id})).scalar_one())
    a_pending = await scalar(
        engine, "SELECT count(*) FROM generation_jobs WHERE account_id = :a AND status = 'pending'", a=a.id
    )
    assert a_pending >= 950, "B must not wait for A's backlog"
    assert waited <= 3 * duration, f"B waited {waited:.3f}s behind A's backlog"


@pytest.mark.slow
async def test_the_quota_holds_across_two_processes(tmp_path: Path, database_url: str, engine: AsyncEngine) -> None:
    capped, _ = await make_key(engine, "capped", max_concurrent=2)
    await backlog(engine, capped.id, 40)
    await backlog(engine, ANONYMOUS_ACCOUNT_ID, 40)
    env = {"DATABASE_URL": database_url, "IMAGE_PROVIDER_DELAY": "0.05", "WORKER_CONCURRENCY": "8"}
    services = [start_service(tmp_path / name, env) for name in ("a", "b")]
    samples: list[int] = []
    workers: set[str] = set()
    try:
        for service in services:
            service.wait_ready()
        left = "SELECT count(*) FROM generation_jobs WHERE account_id = :a AND status <> 'completed'"
        deadline = time.monotonic() + 120
        while await scalar(engine, left, a=capped.id):
            assert time.monotonic() < deadline, "the capped account's jobs never finished"
            samples.append(
                await scalar(
                    engine,
                    "SELECT count(*) FROM generation_jobs WHERE account_id = :a AND status = 'processing'",
                    a=capped.id,
                )
            )
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT DISTINCT worker_id FROM generation_jobs WHERE account_id = :a"), {"a": capped.id}
            )
            workers = {row[0] for row in rows}
    finally:
        kill_all(*services)
    assert max(samples) <= 2, f"quota exceeded: {max(samples)} running"
    assert max(samples) == 2  # the quota, not something else, was the limit
    assert len(samples) > 50
    assert len({worker.rsplit(":", 2)[1] for worker in workers}) == 2, "both processes ran the capped account's jobs"
