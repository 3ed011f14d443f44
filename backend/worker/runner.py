"""The job worker: a claim loop, a stop event, leases, and a heartbeat.

One worker runs per process. It claims due jobs in one statement, runs up to
WORKER_CONCURRENCY of them as tasks, renews their leases in one statement per
heartbeat, and wakes on LISTEN/NOTIFY instead of waiting for its poll tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

from backend.config import Settings
from backend.db import database_down
from backend.jobs.models import Job
from backend.jobs.repository import Completion, JobRepository
from backend.metrics import (
    CLAIM_BATCH,
    CLAIM_LATENCY,
    JOB_DURATION,
    JOBS_COMPLETED,
    JOBS_FAILED,
    JOBS_IN_FLIGHT,
    JOBS_RECLAIMED,
    JOBS_RETRIED,
    JOBS_WAITING_FOR_STORAGE,
    SLOTS_IN_USE,
)
from backend.notify import CANCEL_CHANNEL, NEW_JOB_CHANNEL
from backend.providers import (
    GeneratedOutput,
    GenerationSpec,
    PermanentProviderError,
    Provider,
    ProviderError,
    RemoteJob,
    TransientProviderError,
)
from backend.storage import ObjectTooLarge, Storage, StorageUnavailable, image_key, job_prefix, upload_key

log = logging.getLogger(__name__)
T = TypeVar("T")

# What ends a running job from outside; the task's cleanup depends on which.
CANCELED, LEASE_LOST, SHUTDOWN = "canceled", "lease_lost", "shutdown"
PRUNE_INTERVAL = 60.0
MAX_RETRY_AFTER = 600.0


@dataclass
class Running:
    job: Job
    token: uuid.UUID
    task: asyncio.Task[None] = field(init=False)
    stop_reason: str | None = None
    finishing: bool = False


class Worker:
    def __init__(
        self,
        repo: JobRepository,
        providers: dict[str, Provider],
        storage: Storage,
        settings: Settings,
    ) -> None:
        self.repo = repo
        self.providers = providers
        self.storage = storage
        self.settings = settings
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.running: dict[uuid.UUID, Running] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0  # provider calls in flight: what WORKER_CONCURRENCY bounds
        self._completions: list[tuple[Completion, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.listening = False

    @property
    def alive(self) -> bool:
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    def start(self) -> None:
        if self.repo.notifier is not None:
            # Jobs created in this process wake its worker directly (ROLE=all).
            self.repo.notifier.listen(NEW_JOB_CHANNEL, lambda _: self._wake.set())
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="worker-claim"),
            asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat"),
            asyncio.create_task(self._listen_loop(), name="worker-listen"),
            asyncio.create_task(self._reap_loop(), name="worker-reap"),
        ]
        for task in self._tasks:
            task.add_done_callback(_report_crash)
        log.info("worker %s started (concurrency %d)", self.id, self.settings.worker_concurrency)

    async def stop(self) -> None:
        """Stop claiming, let running jobs finish within the grace period, hand back the rest."""
        self._stopping.set()
        self._wake.set()
        claim_loop, *helpers = self._tasks
        await asyncio.gather(claim_loop, return_exceptions=True)
        tasks = [r.task for r in self.running.values()]
        if tasks:
            log.info("waiting up to %.1fs for %d running job(s)", self.settings.shutdown_grace_seconds, len(tasks))
            await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_seconds)
        for job_id in list(self.running):
            self._interrupt(job_id, SHUTDOWN)
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        log.info("worker %s stopped", self.id)

    async def _claim_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._wake.clear()
            free = self.settings.worker_concurrency - self._busy
            want = min(free, self.settings.worker_claim_batch)
            if want > 0:
                try:
                    jobs = await self.repo.claim(
                        limit=want,
                        lease_seconds=self.settings.lease_seconds,
                        worker_id=self.id,
                        providers=list(self.providers),
                    )
                    failures = 0
                except Exception as exc:
                    if not database_down(exc):
                        raise
                    failures += 1
                    await self._pause(_backoff(failures, 0.1, 5.0), "claim", exc)
                    continue
                CLAIM_BATCH.observe(len(jobs))
                for job in jobs:
                    self._start_job(job)
                if len(jobs) == want:
                    continue  # there may be more due work; claim again at once
            # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own, which
            # costs the worker an extra turn of a loop it shares with every HTTP request.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.worker_poll_interval):
                    await self._wake.wait()

    def _start_job(self, job: Job) -> None:
        assert job.lease_token is not None
        assert job.started_at is not None
        CLAIM_LATENCY.observe(max(0.0, (job.started_at - job.run_after).total_seconds()))
        running = Running(job, job.lease_token)
        running.task = asyncio.create_task(self._run_job(running), name=f"job-{job.id}")
        self.running[job.id] = running
        self._busy += 1
        SLOTS_IN_USE.set(self._busy)
        JOBS_IN_FLIGHT.set(len(self.running))

    async def _run_job(self, running: Running) -> None:
        job, token = running.job, running.token
        started = time.monotonic()
        outcome = "failed"
        error: ProviderError | None = None
        keys: list[str] = []
        outputs: list[dict[str, Any]] = []
        animal: str | None = None
        try:
            try:
                async with asyncio.timeout(self.settings.job_timeout):
                    animal = await self._generate(running, keys, outputs)
            except asyncio.CancelledError:
                outcome = running.stop_reason or SHUTDOWN
                await self._discard(job, keys)
                if outcome == SHUTDOWN:
                    await self._write(lambda: self.repo.release(job.id, token))
                    log.info("job %s handed back to the queue", job.id, extra=_extra(job))
                raise
            except TimeoutError:
                error = TransientProviderError(
                    "provider_timeout", f"the attempt took longer than JOB_TIMEOUT ({self.settings.job_timeout:g}s)"
                )
            except ProviderError as exc:
                error = exc
            except Exception as exc:
                log.exception("job %s crashed", job.id, extra=_extra(job))
                # Internal details stay in the log; the client gets the code.
                error = PermanentProviderError("internal_error", f"internal error ({type(exc).__name__})")

            # From here on the fenced write decides the outcome; a cancel must not cut it short.
            # The provider is done, so its slot is free: the next claim overlaps this write.
            self._release_slot(running)
            if error is not None:
                await self._discard(job, keys)
                await self._failed(running, error)
            elif await self._complete(Completion(job.id, token, outputs, animal)):
                outcome = "completed"
                JOBS_COMPLETED.labels(job.provider).inc()
                log.info("job %s completed (%d images)", job.id, len(keys), extra=_extra(job))
            else:
                outcome = LEASE_LOST
                await self._discard(job, keys)
        finally:
            JOB_DURATION.labels(job.provider, outcome).observe(time.monotonic() - started)
            self._release_slot(running)
            self.running.pop(job.id, None)
            JOBS_IN_FLIGHT.set(len(self.running))

    def _release_slot(self, running: Running) -> None:
        if not running.finishing:
            running.finishing = True
            self._busy -= 1
            SLOTS_IN_USE.set(self._busy)
            self._wake.set()

    async def _generate(self, running: Running, keys: list[str], outputs: list[dict[str, Any]]) -> str | None:
        """Run the provider, storing each output as it arrives; returns the animal, if any."""
        job = running.job
        provider = self.providers.get(job.provider)
        if provider is None:
            raise PermanentProviderError("unknown_provider", f"provider {job.provider!r} is not enabled here")
        animal: str | None = None
        spec = self._spec(running, await self._inputs(job))
        async for output in provider.generate(spec):
            key = image_key(job.id, job.attempts, len(keys), output.content_type)
            keys.append(key)  # before the write, so a cancel mid-write still cleans it up
            await self._stored(job, lambda: self.storage.save(key, output.data, output.content_type))  # noqa: B023
            outputs.append(_described(key, output))
            animal = output.animal or animal
            # Progress for watchers; the last output lands with the (batched) completion instead.
            if len(outputs) < spec.outputs:
                await self._write(lambda: self.repo.record_outputs(job.id, running.token, outputs))
        return animal

    def _spec(self, running: Running, inputs: tuple[bytes, ...]) -> GenerationSpec:
        job, token = running.job, running.token

        async def record(remote_id: str | None) -> None:
            # Committed before the provider polls: a worker that takes the job over resumes it.
            if not await self._write(lambda: self.repo.record_provider_job(job.id, token, remote_id)):
                raise PermanentProviderError("lease_lost", "this worker no longer holds the job")

        return GenerationSpec(
            job.id,
            job.num_images,
            job.prompt,
            job.attempts,
            kind=job.kind,
            duration_seconds=job.duration_seconds or 4,
            aspect_ratio=job.aspect_ratio,
            seed=job.seed,
            model=job.model,
            params=job.params or {},
            remote=RemoteJob(job.provider_job_id, record, lambda: running.stop_reason == CANCELED),
            input_images=inputs,
        )

    async def _inputs(self, job: Job) -> tuple[bytes, ...]:
        """The input pictures' bytes, read from storage (they were validated when the job was created)."""
        inputs = []
        for upload_id in job.input_images or []:
            key = upload_key(upload_id)
            try:
                data = await self._stored(job, lambda: self.storage.read(key, self.settings.max_upload_bytes))  # noqa: B023
            except ObjectTooLarge as exc:
                raise PermanentProviderError("input_invalid", f"input {upload_id} is too large") from exc
            if data is None:
                raise PermanentProviderError("input_missing", f"input {upload_id} no longer exists")
            inputs.append(data)
        return tuple(inputs)

    async def _stored(self, job: Job, operation: Callable[[], Awaitable[T]]) -> T:
        """Run a storage operation, waiting out an outage of the store for STORAGE_WAIT_SECONDS.

        An outage of the store is not the job's fault: it must not spend one of the job's
        attempts, nor throw away an output the provider already made (and may have charged for).
        The job keeps its slot and its lease (the heartbeat renews it) while it waits; a cancel
        or a lost lease still stops it at once. A longer outage fails the attempt as transient.
        """
        deadline = time.monotonic() + self.settings.storage_wait_seconds
        tries = 0
        try:
            while True:
                try:
                    return await operation()
                except StorageUnavailable as exc:
                    tries += 1
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TransientProviderError(StorageUnavailable.code, str(exc)) from exc
                    if tries == 1:
                        JOBS_WAITING_FOR_STORAGE.inc()
                        log.warning("job %s waits for the object store: %s", job.id, exc, extra=_extra(job))
                    await asyncio.sleep(min(left, _backoff(tries, 0.2, 2.0)))
        finally:
            if tries:
                JOBS_WAITING_FOR_STORAGE.dec()

    async def _complete(self, completion: Completion) -> bool:
        """Queue a completion; True if it landed (we still held the lease)."""
        landed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._completions.append((completion, landed))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_completions(), name="worker-complete")
        return await landed

    async def _flush_completions(self) -> None:
        # Natural batching: whatever queued up while the previous write was in flight
        # goes out in the next one. Idle, that is one job per write and no added delay.
        while self._completions:
            batch, self._completions = self._completions, []
            completions = [completion for completion, _ in batch]
            owned = await self._write(lambda: self.repo.complete(completions))  # noqa: B023 (awaited here)
            for completion, landed in batch:
                landed.set_result(owned is not None and completion.job_id in owned)

    async def _failed(self, running: Running, error: ProviderError) -> None:
        job, token = running.job, running.token
        transient, extra = error.transient, _extra(job)
        if transient and job.attempts < self.settings.max_attempts:
            delay = _backoff(job.attempts, self.settings.retry_base_delay, self.settings.retry_max_delay)
            # The service's own Retry-After wins over our backoff (bounded: a bogus hour is not honoured).
            delay = max(delay, min(error.retry_after or 0.0, MAX_RETRY_AFTER))
            if await self._write(lambda: self.repo.retry_later(job.id, token, delay, error.code, error.message)):
                JOBS_RETRIED.labels(job.provider, error.code).inc()
                log.warning(
                    "job %s attempt %d failed (%s); retry in %.1fs",
                    job.id,
                    job.attempts,
                    error.code,
                    delay,
                    extra=extra,
                )
            return
        message = error.message
        if transient:
            message = f"{message} (gave up after {job.attempts} attempts)"
        if await self._write(lambda: self.repo.fail(job.id, token, error.code, message)):
            JOBS_FAILED.labels(job.provider, error.code).inc()
            log.warning("job %s failed: %s: %s", job.id, error.code, message, extra=extra)

    async def _discard(self, job: Job, keys: list[str]) -> None:
        """Remove the files this attempt wrote (only those: another attempt may own the job now)."""
        if not keys:
            return
        try:
            await self.storage.delete(keys)
        except StorageUnavailable as exc:
            log.warning("could not delete the files of job %s: %s", job.id, exc, extra=_extra(job))

    async def _delete_objects(self, job_id: uuid.UUID) -> bool:
        """Remove a job's files; an unreachable store leaves them (orphans cost space, not correctness)."""
        try:
            await self.storage.delete_prefix(job_prefix(job_id))
        except StorageUnavailable as exc:
            log.warning("could not delete the files of job %s: %s", job_id, exc, extra={"job_id": str(job_id)})
            return False
        return True

    async def _write(self, write: Callable[[], Awaitable[T]]) -> T | None:
        """Run a fenced write, retrying through a database outage for as long as a lease lasts."""
        deadline = time.monotonic() + self.settings.lease_seconds
        attempt = 0
        while True:
            try:
                return await write()
            except Exception as exc:
                attempt += 1
                if not database_down(exc) or time.monotonic() > deadline:
                    # The lease will expire and another worker will run the job again.
                    log.error("could not record a job's outcome: %s", exc)
                    return None
                await asyncio.sleep(_backoff(attempt, 0.05, 2.0))

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            leases = {job_id: r.token for job_id, r in self.running.items()}
            try:
                owned = await self.repo.renew(leases, self.settings.lease_seconds)
            except Exception as exc:
                if not database_down(exc):
                    raise
                log.warning("heartbeat failed: %s", exc)
                continue
            for job_id in leases.keys() - owned:
                self._interrupt(job_id, LEASE_LOST)

    async def _reap_loop(self) -> None:
        """Each poll: reclaim jobs whose worker vanished. Now and then: prune old jobs."""
        next_prune = time.monotonic()
        while True:
            try:
                reclaimed = await self.repo.reap_expired(self.settings.max_attempts)
                if reclaimed:
                    JOBS_RECLAIMED.inc(reclaimed)
                    log.warning("reclaimed %d job(s) whose lease expired", reclaimed)
                if self.settings.job_retention_seconds and time.monotonic() >= next_prune:
                    await self._prune(self.settings.job_retention_seconds)
                    next_prune = time.monotonic() + PRUNE_INTERVAL
            except Exception as exc:
                if not database_down(exc):
                    raise
            await asyncio.sleep(self.settings.worker_poll_interval)

    async def _prune(self, retention: float) -> None:
        while pruned := await self.repo.prune(retention):
            # Rows first: a failure here leaves orphaned files, never a job whose images are gone.
            for job_id in pruned:
                await self._delete_objects(job_id)
            log.info("pruned %d finished job(s) older than %gs", len(pruned), retention)

    async def _listen_loop(self) -> None:
        """Keep one LISTEN connection open, reconnecting after an outage."""
        failures = 0
        while True:
            try:
                connection = await asyncpg.connect(self.settings.asyncpg_dsn, timeout=5)
            except Exception as exc:
                failures += 1
                await self._pause(_backoff(failures, 0.1, 5.0), "listen", exc)
                continue
            closed = asyncio.Event()
            try:
                connection.add_termination_listener(lambda _, closed=closed: closed.set())
                await connection.add_listener(NEW_JOB_CHANNEL, self._on_notify)
                await connection.add_listener(CANCEL_CHANNEL, self._on_notify)
                self.listening, failures = True, 0
                self._wake.set()  # notifications sent while we were away are lost: look now
                await closed.wait()
            except Exception as exc:
                if not database_down(exc):
                    raise
            finally:
                self.listening = False
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), 2)

    def _on_notify(self, _conn: object, pid: int, channel: str, payload: str) -> None:
        if self.repo.notifier is not None and self.repo.notifier.sent_by_us(pid):
            return
        if channel == CANCEL_CHANNEL:
            with contextlib.suppress(ValueError):
                self._interrupt(uuid.UUID(payload), CANCELED)
        else:
            self._wake.set()

    def _interrupt(self, job_id: uuid.UUID, reason: str) -> None:
        running = self.running.get(job_id)
        if running is not None and running.stop_reason is None and not running.finishing:
            log.info("stopping job %s: %s", job_id, reason, extra={"job_id": str(job_id)})
            running.stop_reason = reason
            running.task.cancel()

    async def _pause(self, seconds: float, what: str, exc: BaseException) -> None:
        log.warning("database unavailable (%s): %s; retrying in %.2fs", what, exc, seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


def _report_crash(task: asyncio.Task[None]) -> None:
    """A worker loop only ends on stop; anything else is a bug, and /readyz turns 503."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.critical("worker loop %s crashed", task.get_name(), exc_info=exc)


def _described(key: str, output: GeneratedOutput) -> dict[str, Any]:
    return {
        "key": key,
        "contentType": output.content_type,
        "width": output.width,
        "height": output.height,
        "durationSeconds": output.duration_seconds,
        "sizeBytes": len(output.data),
    }


def _extra(job: Job) -> dict[str, str]:
    return {"job_id": str(job.id)}


def _backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter (the AWS architecture blog's variant)."""
    return random.uniform(0, min(cap, base * 2 ** max(0, attempt - 1)))
