"""Every SQL statement the service runs against `generation_jobs`.

Each method is exactly one statement, run in autocommit: one round trip, no
BEGIN/COMMIT around it, and nothing held open between calls. The four per-job hot
statements (insert, get, claim, complete) are plain SQL sent on a connection from a
plain asyncpg pool: SQLAlchemy's execution layer cost 20% of the accepted requests per
second, and checking a connection out of its pool and back another ~0.2 ms of CPU per
statement. The rest is SQLAlchemy Core. Every write after a
claim is fenced by the job's lease token: if another worker took the job over,
the write matches no row and the caller learns it lost the job.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import (
    ColumnElement,
    Executable,
    Text,
    cast,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Result, Row
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db import fetch_pooled, fetch_raw
from backend.jobs.models import Job, JobStatus, jobs
from backend.notify import CANCEL_CHANNEL, DELIVERIES_CHANNEL, EVENTS_CHANNEL, NEW_JOB_CHANNEL, Notifier

_P = JobStatus.PROCESSING.value
_LIVE = (JobStatus.PENDING.value, JobStatus.PROCESSING.value)
_ALL = tuple(jobs.c)


@dataclass(frozen=True)
class NewJob:
    num_images: int
    prompt: str | None
    provider: str
    account_id: uuid.UUID
    idempotency_key: str | None = None
    request_hash: str | None = None
    kind: str = "image"
    model: str | None = None
    duration_seconds: int | None = None
    aspect_ratio: str = "1:1"
    seed: int | None = None
    params: dict[str, Any] | None = None
    webhook_url: str | None = None
    webhook_events: list[str] | None = None
    input_images: list[uuid.UUID] | None = None


@dataclass(frozen=True)
class Completion:
    job_id: uuid.UUID
    token: uuid.UUID
    # Stored outputs: {"key", "contentType", "width", "height", "durationSeconds", "sizeBytes"} each.
    outputs: list[dict[str, Any]] = field(default_factory=list)
    animal: str | None = None


@dataclass(frozen=True)
class Cursor:
    """Position after the last job of a page, in (created_at, id) DESC order."""

    created_at: datetime
    id: uuid.UUID


# Built once: the hot path only binds parameters.
# Only our own column names are interpolated into SQL (hence the S608 ignore in pyproject).
_COLUMNS = ", ".join(column.name for column in _ALL)
_INSERT_SQL = f"""
INSERT INTO generation_jobs
    (num_images, prompt, provider, account_id, kind, model, duration_seconds, aspect_ratio, seed, params,
     webhook_url, webhook_events)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12) RETURNING {_COLUMNS}
"""
# Every read a client makes is scoped to its account: another account's job does not exist.
_GET_SQL = f"SELECT {_COLUMNS} FROM generation_jobs WHERE id = $1 AND account_id = $2"
# A concurrent twin blocks on the unique index until the first commits, then does nothing.
_INSERT_UNLESS_KEY_EXISTS = (
    insert(jobs)
    .on_conflict_do_nothing(
        index_elements=[jobs.c.account_id, jobs.c.idempotency_key], index_where=jobs.c.idempotency_key.is_not(None)
    )
    .returning(*_ALL)
)


def _seconds(value: float) -> ColumnElement[Any]:
    return func.make_interval(0, 0, 0, 0, 0, 0, value)


# The claim: one statement, in its own (auto)commit. SKIP LOCKED lets claims race freely.
# Fair share: `waiting` lists the accounts with pending jobs by skipping through the pending
# index (one probe per account, however long each backlog is); each account offers its oldest
# due jobs, at most its quota's free room ($5 = MAX_CONCURRENT_JOBS_PER_KEY, for accounts
# without their own); and the batch takes the jobs that would be the fewest running for their
# account first, so an account with a backlog of thousands yields the next free slot to an
# account with none running. With one account this is the old claim: its oldest due jobs.
# A job of an account with a quota gets a free slot number; the unique index on
# (account_id, slot) of processing jobs makes an overlapping claim by another replica fail
# (and retry) rather than exceed the quota. The chosen ids reach the UPDATE as one array, so
# it finds them by primary key whatever the planner guesses of the CTEs' sizes (a join on
# `picked` let a generic plan hash-join a sequential scan of the whole table).
_CLAIM_SQL = f"""
WITH RECURSIVE waiting(account_id) AS (
    (SELECT account_id FROM generation_jobs WHERE status = 'pending' ORDER BY account_id LIMIT 1)
    UNION ALL
    SELECT (SELECT j.account_id FROM generation_jobs j
            WHERE j.status = 'pending' AND j.account_id > w.account_id ORDER BY j.account_id LIMIT 1)
    FROM waiting w WHERE w.account_id IS NOT NULL
), shares AS (
    SELECT a.id, coalesce(a.max_concurrent, $5) AS quota, r.running, r.used
    FROM waiting w JOIN accounts a ON a.id = w.account_id
    CROSS JOIN LATERAL (
        SELECT count(*) AS running, coalesce(array_agg(p.slot) FILTER (WHERE p.slot IS NOT NULL), '{{}}') AS used
        FROM generation_jobs p WHERE p.account_id = a.id AND p.status = 'processing'
    ) r
), offered AS (
    SELECT c.id, c.run_after, s.id AS account_id, s.running, s.quota, s.used,
        row_number() OVER (PARTITION BY s.id ORDER BY c.run_after, c.id) AS nth
    FROM shares s CROSS JOIN LATERAL (
        SELECT j.id, j.run_after FROM generation_jobs j
        WHERE j.account_id = s.id AND j.status = 'pending' AND j.run_after <= now() AND j.provider = ANY($4::text[])
        ORDER BY j.run_after
        LIMIT CASE WHEN s.quota IS NULL THEN $1 ELSE greatest(0, least($1, s.quota - s.running)) END
        FOR UPDATE SKIP LOCKED
    ) c
), picked AS (
    SELECT o.id, CASE WHEN o.quota IS NOT NULL THEN (
        ARRAY(SELECT g FROM generate_series(1, least(o.quota, o.running + $1)) g WHERE g <> ALL(o.used) ORDER BY g)
    )[o.nth] END AS slot
    FROM offered o
    ORDER BY o.running + o.nth, o.run_after
    LIMIT $1
), chosen AS (
    SELECT array_agg(id) AS ids, array_agg(slot) AS slots FROM picked
)
UPDATE generation_jobs j SET status = 'processing', slot = chosen.slots[array_position(chosen.ids, j.id)],
    lease_token = gen_random_uuid(),
    lease_expires_at = now() + make_interval(secs => $2), attempts = attempts + 1,
    worker_id = $3, started_at = clock_timestamp(), updated_at = now()
FROM chosen WHERE j.id = ANY(chosen.ids)
RETURNING {", ".join("j." + c.name for c in _ALL)}
"""
_CLAIM_RACES = 5
_COMPLETE_SQL = """
UPDATE generation_jobs j SET status = 'completed', outputs = d.outputs::jsonb,
    animal = d.animal, error_code = NULL, error_message = NULL,
    lease_token = NULL, lease_expires_at = NULL, completed_at = now(), updated_at = now()
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[]) AS d(id, token, outputs, animal)
WHERE j.id = d.id AND j.lease_token = d.token AND j.status = 'processing'
RETURNING j.id, j.account_id, j.webhook_url
"""
# Progress: the whole list so far, so a retried or resumed attempt simply overwrites it.
_OUTPUTS_SQL = """
UPDATE generation_jobs SET outputs = $3::jsonb, updated_at = now()
WHERE id = $1 AND lease_token = $2 AND status = 'processing'
RETURNING id, account_id, webhook_url
"""


# What a write returns so that `_changed` can wake the right listeners.
_CHANGE = (jobs.c.id, jobs.c.account_id, jobs.c.webhook_url)


def _fenced(job_id: uuid.UUID, token: uuid.UUID) -> tuple[ColumnElement[bool], ...]:
    return (jobs.c.id == job_id, jobs.c.lease_token == token, jobs.c.status == _P)


class JobRepository:
    def __init__(
        self,
        engine: AsyncEngine,
        pool: asyncpg.Pool | None = None,
        *,
        default_quota: int | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        # Single statements need no explicit transaction; autocommit saves BEGIN and COMMIT.
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.pool = pool  # for the per-job statements; without it they borrow the engine's pool
        # Jobs processing at once per account without a quota of its own (None = no limit).
        self.default_quota = default_quota
        # Set when the connections leave NOTIFY to us (create_engine/create_pool `notifies`).
        self.notifier = notifier

    def _changed(self, changes: Iterable[tuple[uuid.UUID, str | None]], *, new_work: bool = False) -> None:
        """After a write committed: wake the event streams of the accounts whose jobs changed
        (the trigger wrote their events), the webhook senders if one of those jobs has a webhook,
        and the workers if it left work due. `changes` are (account_id, webhook_url) pairs."""
        if self.notifier is None:
            return
        changes = list(changes)
        for account_id in {account_id for account_id, _ in changes}:
            self.notifier.notify(EVENTS_CHANNEL, str(account_id))
        if any(webhook_url is not None for _, webhook_url in changes):
            self.notifier.notify(DELIVERIES_CHANNEL)
        if new_work:
            self.notifier.notify(NEW_JOB_CHANNEL)

    def _changed_one(self, row: Row[Any] | None, *, new_work: bool = False) -> bool:
        """`_changed` for a fenced write of one job; True if it matched (the job was still ours)."""
        if row is None:
            return False
        self._changed([(row.account_id, row.webhook_url)], new_work=new_work)
        return True

    async def _run(self, stmt: Executable, params: dict[str, Any] | None = None) -> Result[Any]:
        async with self.engine.connect() as connection:
            return await connection.execute(stmt, params)

    async def _fetch_raw(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """The hottest statements skip SQLAlchemy: asyncpg straight from a pool.

        A dropped connection raises what the rest of the code knows as "down". asyncpg's pool
        discards a closed connection on release; SQLAlchemy's must be told to (invalidate).
        """
        if self.pool is None:
            return await fetch_raw(self.engine, sql, *args)
        return await fetch_pooled(self.pool, sql, *args)

    async def _fetch(self, sql: str, *args: object) -> list[Job]:
        return [Job.from_row(record) for record in await self._fetch_raw(sql, *args)]

    async def _jobs(self, stmt: Executable, params: dict[str, Any] | None = None) -> list[Job]:
        return [Job.from_row(row) for row in await self._run(stmt, params)]

    async def create(self, new: NewJob) -> tuple[Job, bool]:
        """Insert a job; with an idempotency key, return the existing one instead (created=False)."""
        job, created = await self._create(new)
        if created:
            self._changed([(job.account_id, job.webhook_url)], new_work=True)
        return job, created

    async def _create(self, new: NewJob) -> tuple[Job, bool]:
        params: dict[str, Any] = {
            "num_images": new.num_images,
            "prompt": new.prompt,
            "provider": new.provider,
            "idempotency_key": new.idempotency_key,
            "request_hash": new.request_hash,
            "account_id": new.account_id,
            "webhook_url": new.webhook_url,
            "webhook_events": new.webhook_events,
            "input_images": new.input_images,
        }
        if new.idempotency_key is None and not new.input_images:
            args = (new.kind, new.model, new.duration_seconds, new.aspect_ratio, new.seed, _json(new.params))
            hooks = (new.webhook_url, new.webhook_events)
            return (
                await self._fetch(_INSERT_SQL, new.num_images, new.prompt, new.provider, new.account_id, *args, *hooks)
            )[0], True
        params |= {
            "kind": new.kind,
            "model": new.model,
            "duration_seconds": new.duration_seconds,
            "aspect_ratio": new.aspect_ratio,
            "seed": new.seed,
            "params": new.params,
        }
        if new.idempotency_key is None:  # a job with inputs: off the hot path
            return (await self._jobs(insert(jobs).returning(*_ALL), params))[0], True
        created = await self._jobs(_INSERT_UNLESS_KEY_EXISTS, params)
        if created:
            return created[0], True
        existing = await self._jobs(
            select(*_ALL).where(jobs.c.account_id == new.account_id, jobs.c.idempotency_key == new.idempotency_key)
        )
        return existing[0], False

    async def get(self, job_id: uuid.UUID, account_id: uuid.UUID) -> Job | None:
        found = await self._fetch(_GET_SQL, job_id, account_id)
        return found[0] if found else None

    async def page(
        self,
        *,
        account_id: uuid.UUID,
        limit: int,
        status: JobStatus | None,
        after: Cursor | None,
        kind: str | None = None,
        oldest_first: bool = False,
    ) -> list[Job]:
        position = tuple_(jobs.c.created_at, jobs.c.id)
        order = (
            (jobs.c.created_at.asc(), jobs.c.id.asc()) if oldest_first else (jobs.c.created_at.desc(), jobs.c.id.desc())
        )
        stmt = select(*_ALL).where(jobs.c.account_id == account_id).order_by(*order).limit(limit)
        if status is not None:
            stmt = stmt.where(jobs.c.status == status.value)
        if kind is not None:
            stmt = stmt.where(jobs.c.kind == kind)
        if after is not None:
            cursor = tuple_(after.created_at, after.id)
            stmt = stmt.where(position > cursor if oldest_first else position < cursor)
        return await self._jobs(stmt)

    async def claim(self, *, limit: int, lease_seconds: float, worker_id: str, providers: list[str]) -> list[Job]:
        """Take up to `limit` due pending jobs this worker can run, each with its own lease,
        fairly across accounts and within each account's quota."""
        for _ in range(_CLAIM_RACES):
            try:
                claimed = await self._fetch(_CLAIM_SQL, limit, lease_seconds, worker_id, providers, self.default_quota)
            except asyncpg.UniqueViolationError:
                # Another replica took the quota slot this claim chose; the next try sees it taken.
                continue
            self._changed((job.account_id, job.webhook_url) for job in claimed)
            return claimed
        return []

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
        return set((await self._run(stmt, params)).scalars())

    async def complete(self, done: list[Completion]) -> set[uuid.UUID]:
        """Record many completions in one statement, each fenced by its own lease token.

        Returns the ids that were still ours. Each job's outputs travel as one JSON text.
        """
        rows = await self._fetch_raw(
            _COMPLETE_SQL,
            [c.job_id for c in done],
            [c.token for c in done],
            [json.dumps(c.outputs, separators=(",", ":")) for c in done],
            [c.animal for c in done],
        )
        self._changed((row[1], row[2]) for row in rows)
        return {row[0] for row in rows}

    async def record_outputs(self, job_id: uuid.UUID, token: uuid.UUID, outputs: list[dict[str, Any]]) -> bool:
        """Publish the outputs stored so far of a running job (fenced); False if the job is no longer ours."""
        rows = await self._fetch_raw(_OUTPUTS_SQL, job_id, token, json.dumps(outputs, separators=(",", ":")))
        self._changed((row[1], row[2]) for row in rows)
        return bool(rows)

    async def record_provider_job(self, job_id: uuid.UUID, token: uuid.UUID, provider_job_id: str | None) -> bool:
        """Commit the remote job's id (or forget it) on a running job we still hold."""
        stmt = (
            update(jobs)
            .where(*_fenced(job_id, token))
            .values(provider_job_id=provider_job_id, updated_at=func.now())
            .returning(jobs.c.id)
        )
        return (await self._run(stmt)).first() is not None

    async def fail(self, job_id: uuid.UUID, token: uuid.UUID, code: str, message: str) -> bool:
        return await self._finish(job_id, token, status=JobStatus.FAILED.value, error_code=code, error_message=message)

    async def _finish(self, job_id: uuid.UUID, token: uuid.UUID, **values: object) -> bool:
        stmt = (
            update(jobs)
            .where(*_fenced(job_id, token))
            .values(
                **values,
                outputs=None,
                lease_token=None,
                lease_expires_at=None,
                completed_at=func.now(),
                updated_at=func.now(),
            )
            .returning(*_CHANGE)
        )
        return self._changed_one((await self._run(stmt)).first())

    async def retry_later(self, job_id: uuid.UUID, token: uuid.UUID, delay: float, code: str, message: str) -> bool:
        """Put a job that failed transiently back in the queue, due after `delay` seconds."""
        stmt = (
            update(jobs)
            .where(*_fenced(job_id, token))
            .values(
                status=JobStatus.PENDING.value,
                run_after=func.now() + _seconds(delay),
                error_code=code,
                error_message=message,
                outputs=None,
                lease_token=None,
                lease_expires_at=None,
                updated_at=func.now(),
            )
            .returning(*_CHANGE)
        )
        return self._changed_one((await self._run(stmt)).first())

    async def release(self, job_id: uuid.UUID, token: uuid.UUID) -> bool:
        """Hand an interrupted job back to the queue (the attempt does not count) and wake a worker."""
        stmt = (
            update(jobs)
            .where(*_fenced(job_id, token))
            .values(
                status=JobStatus.PENDING.value,
                attempts=func.greatest(jobs.c.attempts - 1, 0),
                outputs=None,
                run_after=func.now(),
                lease_token=None,
                lease_expires_at=None,
                worker_id=None,
                updated_at=func.now(),
            )
            .returning(*_CHANGE)
        )
        return self._changed_one((await self._run(stmt)).first(), new_work=True)

    async def cancel(self, job_id: uuid.UUID, account_id: uuid.UUID) -> Job | None:
        """Cancel a live job and tell its worker, in one statement; None if not live."""
        canceled = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.account_id == account_id, jobs.c.status.in_(_LIVE))
            .values(
                status=JobStatus.CANCELED.value,
                outputs=None,
                lease_token=None,
                lease_expires_at=None,
                completed_at=func.now(),
                updated_at=func.now(),
            )
            .returning(*_ALL)
            .cte("canceled")
        )
        # The worker running it (if any) stops the provider call on this notification.
        notify = func.pg_notify(CANCEL_CHANNEL, cast(canceled.c.id, Text))
        row = (await self._run(select(canceled, notify.label("notified")))).first()
        if row is None:
            return None
        job = Job.from_row(row)
        self._changed([(job.account_id, job.webhook_url)])
        return job

    async def delete(self, job_id: uuid.UUID, account_id: uuid.UUID) -> bool:
        """Remove a finished job of this account; False if there is none (or it is still live)."""
        stmt = (
            jobs.delete()
            .where(jobs.c.id == job_id, jobs.c.account_id == account_id, jobs.c.status.not_in(_LIVE))
            .returning(jobs.c.id)
        )
        return (await self._run(stmt)).first() is not None

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
                run_after = now(), outputs = NULL, lease_token = NULL, lease_expires_at = NULL,
                updated_at = now()
            FROM expired WHERE j.id = expired.id
            RETURNING j.id, j.account_id, j.webhook_url, j.status
            """
        )
        rows = (await self._run(stmt, {"max": max_attempts})).all()
        pending = any(row.status == JobStatus.PENDING.value for row in rows)
        self._changed(((row.account_id, row.webhook_url) for row in rows), new_work=pending)
        return len(rows)

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
        return list((await self._run(stmt, {"age": older_than_seconds, "batch": batch})).scalars())

    async def count_by_status(self) -> dict[str, int]:
        """Queue depth: live statuses are counted through their partial indexes."""
        count = func.count().label("count")
        stmt = select(jobs.c.status, count).where(jobs.c.status.in_(_LIVE)).group_by(jobs.c.status)
        counts = {status: 0 for status in _LIVE}
        counts.update({row.status: row.count for row in await self._run(stmt)})
        return counts


def _json(value: object) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))
