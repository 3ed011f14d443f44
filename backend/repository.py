"""Every SQL statement the service runs against `generation_jobs`.

Each method is one short transaction. Every write after a claim is fenced by
the job's lease token: if another worker took the job over, the write matches
no row and the caller learns it lost the job.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, literal_column, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.models import Job, JobStatus

NEW_JOB_CHANNEL = "generation_jobs_new"
CANCEL_CHANNEL = "generation_jobs_cancel"

_P = JobStatus.PROCESSING.value
_LIVE = (JobStatus.PENDING.value, JobStatus.PROCESSING.value)


@dataclass(frozen=True)
class NewJob:
    num_images: int
    prompt: str | None
    provider: str
    idempotency_key: str | None = None
    request_hash: str | None = None


@dataclass(frozen=True)
class Cursor:
    """Position after the last job of a page, in (created_at, id) DESC order."""

    created_at: datetime
    id: uuid.UUID


def _seconds(value: float) -> object:
    return func.make_interval(0, 0, 0, 0, 0, 0, value)


def _fenced(job_id: uuid.UUID, token: uuid.UUID) -> tuple[ColumnElement[bool], ...]:
    return (Job.id == job_id, Job.lease_token == token, Job.status == _P)


class JobRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def create(self, new: NewJob) -> tuple[Job, bool]:
        """Insert a job; with an idempotency key, return the existing one instead (created=False)."""
        values = {
            "num_images": new.num_images,
            "prompt": new.prompt,
            "provider": new.provider,
            "idempotency_key": new.idempotency_key,
            "request_hash": new.request_hash,
        }
        async with self.sessions.begin() as session:
            stmt = insert(Job).values(values)
            if new.idempotency_key is not None:
                # Concurrent twins block on the unique index until the first commits.
                stmt = stmt.on_conflict_do_nothing(
                    index_elements=[Job.idempotency_key],
                    index_where=Job.idempotency_key.is_not(None),
                )
            job = (await session.scalars(stmt.returning(Job))).one_or_none()
            if job is not None:
                return job, True
            existing = await session.scalars(select(Job).where(Job.idempotency_key == new.idempotency_key))
            return existing.one(), False

    async def get(self, job_id: uuid.UUID) -> Job | None:
        async with self.sessions() as session:
            return await session.get(Job, job_id)

    async def page(self, *, limit: int, status: JobStatus | None, after: Cursor | None) -> list[Job]:
        stmt = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        if status is not None:
            stmt = stmt.where(Job.status == status.value)
        if after is not None:
            stmt = stmt.where(tuple_(Job.created_at, Job.id) < tuple_(after.created_at, after.id))
        async with self.sessions() as session:
            return list(await session.scalars(stmt))

    async def claim(self, *, limit: int, lease_seconds: float, worker_id: str, providers: list[str]) -> list[Job]:
        """Take up to `limit` due pending jobs this worker can run, in one statement, each with a lease."""
        due = (
            select(Job.id)
            .where(Job.status == JobStatus.PENDING.value, Job.run_after <= func.now(), Job.provider.in_(providers))
            .order_by(Job.run_after)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(Job)
            .where(Job.id.in_(due.scalar_subquery()))
            .values(
                status=_P,
                lease_token=func.gen_random_uuid(),
                lease_expires_at=func.now() + _seconds(lease_seconds),
                attempts=Job.attempts + 1,
                worker_id=worker_id,
                started_at=func.clock_timestamp(),
                updated_at=func.now(),
            )
            .returning(Job)
            .execution_options(synchronize_session=False)
        )
        async with self.sessions.begin() as session:
            return list(await session.scalars(stmt))

    async def renew(self, leases: dict[uuid.UUID, uuid.UUID], lease_seconds: float) -> set[uuid.UUID]:
        """Extend the leases still held (job id -> token); return the ids we still own."""
        if not leases:
            return set()
        stmt = text(
            """
            UPDATE generation_jobs SET lease_expires_at = now() + make_interval(secs => :secs)
            WHERE (id, lease_token) IN (SELECT unnest(CAST(:ids AS uuid[])), unnest(CAST(:tokens AS uuid[])))
              AND status = 'processing'
            RETURNING id
            """
        )
        params = {"secs": lease_seconds, "ids": list(leases), "tokens": list(leases.values())}
        async with self.sessions.begin() as session:
            return set((await session.scalars(stmt, params)).all())

    async def complete(self, job_id: uuid.UUID, token: uuid.UUID, image_keys: list[str], animal: str | None) -> bool:
        return await self._finish(
            job_id,
            token,
            status=JobStatus.COMPLETED.value,
            image_keys=image_keys,
            animal=animal,
            error_code=None,
            error_message=None,
        )

    async def fail(self, job_id: uuid.UUID, token: uuid.UUID, code: str, message: str) -> bool:
        return await self._finish(job_id, token, status=JobStatus.FAILED.value, error_code=code, error_message=message)

    async def _finish(self, job_id: uuid.UUID, token: uuid.UUID, **values: object) -> bool:
        stmt = (
            update(Job)
            .where(*_fenced(job_id, token))
            .values(
                **values,
                lease_token=None,
                lease_expires_at=None,
                completed_at=func.now(),
                updated_at=func.now(),
            )
            .returning(Job.id)
        )
        async with self.sessions.begin() as session:
            return (await session.execute(stmt)).first() is not None

    async def retry_later(self, job_id: uuid.UUID, token: uuid.UUID, delay: float, code: str, message: str) -> bool:
        """Put a job that failed transiently back in the queue, due after `delay` seconds."""
        stmt = (
            update(Job)
            .where(*_fenced(job_id, token))
            .values(
                status=JobStatus.PENDING.value,
                run_after=func.now() + _seconds(delay),
                error_code=code,
                error_message=message,
                lease_token=None,
                lease_expires_at=None,
                updated_at=func.now(),
            )
            .returning(Job.id)
        )
        async with self.sessions.begin() as session:
            return (await session.execute(stmt)).first() is not None

    async def release(self, job_id: uuid.UUID, token: uuid.UUID) -> bool:
        """Hand an interrupted job back to the queue; the interrupted attempt does not count."""
        stmt = (
            update(Job)
            .where(*_fenced(job_id, token))
            .values(
                status=JobStatus.PENDING.value,
                attempts=func.greatest(Job.attempts - 1, 0),
                run_after=func.now(),
                lease_token=None,
                lease_expires_at=None,
                worker_id=None,
                updated_at=func.now(),
            )
            .returning(Job.id)
        )
        async with self.sessions.begin() as session:
            released = (await session.execute(stmt)).first() is not None
            if released:
                await session.execute(select(func.pg_notify(NEW_JOB_CHANNEL, "")))
            return released

    async def cancel(self, job_id: uuid.UUID) -> Job | None:
        """Cancel a live job; None if it does not exist or is already finished."""
        stmt = (
            update(Job)
            .where(Job.id == job_id, Job.status.in_(_LIVE))
            .values(
                status=JobStatus.CANCELED.value,
                lease_token=None,
                lease_expires_at=None,
                completed_at=func.now(),
                updated_at=func.now(),
            )
            .returning(Job)
            .execution_options(synchronize_session=False)
        )
        async with self.sessions.begin() as session:
            job = (await session.scalars(stmt)).one_or_none()
            if job is not None:
                # The worker running it (if any) stops the provider call on this.
                await session.execute(select(func.pg_notify(CANCEL_CHANNEL, str(job_id))))
            return job

    async def reap_expired(self, max_attempts: int) -> int:
        """Return jobs whose worker vanished to the queue, or fail them if out of attempts."""
        stmt = text(
            """
            WITH expired AS (
                SELECT id FROM generation_jobs
                WHERE status = 'processing' AND lease_expires_at < now()
                ORDER BY lease_expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED
            )
            UPDATE generation_jobs j SET
                status = CASE WHEN j.attempts >= :max THEN 'failed' ELSE 'pending' END,
                error_code = 'worker_lost',
                error_message = 'the worker running this job stopped responding',
                completed_at = CASE WHEN j.attempts >= :max THEN now() END,
                run_after = now(), lease_token = NULL, lease_expires_at = NULL, updated_at = now()
            FROM expired WHERE j.id = expired.id
            RETURNING j.status
            """
        )
        async with self.sessions.begin() as session:
            statuses = (await session.scalars(stmt, {"max": max_attempts})).all()
            if JobStatus.PENDING.value in statuses:
                await session.execute(select(func.pg_notify(NEW_JOB_CHANNEL, "")))
            return len(statuses)

    async def prune(self, older_than_seconds: float, batch: int = 1000) -> list[uuid.UUID]:
        """Delete up to `batch` jobs finished longer ago than the retention; return their ids."""
        # The range on created_at walks the list index; only finished jobs qualify, so a job
        # that has been pending or retrying for ages is never touched.
        stmt = text(
            """
            DELETE FROM generation_jobs WHERE id IN (
                SELECT id FROM generation_jobs
                WHERE created_at < now() - make_interval(secs => :age)
                  AND completed_at < now() - make_interval(secs => :age)
                  AND status IN ('completed', 'failed', 'canceled')
                ORDER BY created_at LIMIT :batch FOR UPDATE SKIP LOCKED
            ) RETURNING id
            """
        )
        async with self.sessions.begin() as session:
            return list((await session.scalars(stmt, {"age": older_than_seconds, "batch": batch})).all())

    async def count_by_status(self) -> dict[str, int]:
        """Queue depth: live statuses are counted through their partial indexes."""
        stmt = select(Job.status, func.count()).where(Job.status.in_(_LIVE)).group_by(Job.status)
        async with self.sessions() as session:
            counts = {status: 0 for status in _LIVE}
            counts.update({row[0]: row[1] for row in await session.execute(stmt)})
            return counts

    async def ping(self) -> None:
        async with self.sessions() as session:
            await session.execute(select(literal_column("1")))
