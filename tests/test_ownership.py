"""Every read and write a client makes is scoped to its account."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.accounts import ANONYMOUS_ACCOUNT_ID
from backend.jobs.repository import JobRepository, NewJob


async def make_account(engine: AsyncEngine, name: str) -> uuid.UUID:
    async with engine.begin() as connection:
        return (
            await connection.execute(text("INSERT INTO accounts (name) VALUES (:n) RETURNING id"), {"n": name})
        ).scalar_one()


async def test_another_accounts_job_is_invisible(engine: AsyncEngine, repo: JobRepository) -> None:
    other = await make_account(engine, "other")
    theirs, _ = await repo.create(NewJob(1, "theirs", "animals", other))
    mine, _ = await repo.create(NewJob(1, "mine", "animals", ANONYMOUS_ACCOUNT_ID))

    assert await repo.get(theirs.id, ANONYMOUS_ACCOUNT_ID) is None
    assert (await repo.get(theirs.id, other)) is not None
    assert await repo.cancel(theirs.id, ANONYMOUS_ACCOUNT_ID) is None
    assert (await repo.get(theirs.id, other)).status == "pending"  # type: ignore[union-attr]
    page = await repo.page(account_id=ANONYMOUS_ACCOUNT_ID, limit=10, status=None, after=None)
    assert [job.id for job in page] == [mine.id]


async def test_idempotency_keys_belong_to_their_account(engine: AsyncEngine, repo: JobRepository) -> None:
    other = await make_account(engine, "other")
    first, created_first = await repo.create(NewJob(1, None, "animals", other, "same-key", "h"))
    second, created_second = await repo.create(NewJob(1, None, "animals", ANONYMOUS_ACCOUNT_ID, "same-key", "h"))
    assert created_first and created_second
    assert first.id != second.id
    replay, created = await repo.create(NewJob(1, None, "animals", other, "same-key", "h"))
    assert (replay.id, created) == (first.id, False)
