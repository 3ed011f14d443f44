"""OpenAI's requests as ordinary jobs: pick the provider, create, wait, and read the results."""

from __future__ import annotations

import asyncio
import base64
import dataclasses

from backend.accounts import Account
from backend.errors import Problem, validation_problem
from backend.jobs.models import FINISHED, Job, JobStatus
from backend.jobs.schemas import GenerationCreate
from backend.jobs.service import JobService
from backend.storage import Storage

# Our field names → the OpenAI parameter a client sent, so a 400 names what the client wrote.
_PARAMS = {"numImages": "n", "provider": "model", "prompt": "prompt"}
_FIRST_POLL = 0.05
# Outputs are our own files; the bound only keeps a corrupted one from filling memory.
MAX_OUTPUT_READ = 256 * 1024 * 1024
_MAX_POLL = 1.0


def provider_of(model: str | None) -> str | None:
    """`animals` or `animals/some-model` → `animals`; nothing → the default provider."""
    if not model:
        return None
    return model.partition("/")[0]


async def create_job(
    service: JobService, account: Account, request: GenerationCreate, idempotency_key: str | None
) -> Job:
    try:
        job, _ = await service.create(account, request, idempotency_key)
    except Problem as problem:
        if not problem.errors:
            raise
        renamed = [dataclasses.replace(e, field=_PARAMS.get(e.field, e.field)) for e in problem.errors]
        raise validation_problem(renamed) from None
    return job


async def wait_finished(service: JobService, account: Account, job: Job, seconds: float) -> Job:
    """The job once it finished, or as it is after `seconds`.

    Polls with backoff: a fresh job is read again within milliseconds, a long one about once a second.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    delay = _FIRST_POLL
    while job.status not in FINISHED:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 1.5, _MAX_POLL)
        job = await service.get(account, str(job.id))
    return job


def raise_unless_completed(job: Job, waited: float) -> None:
    """A job that did not complete becomes the error an OpenAI client expects."""
    if job.status == JobStatus.COMPLETED:
        return
    if job.status == JobStatus.FAILED:
        code = job.error_code or "generation_failed"
        status = 400 if code == "content_policy" else 500
        raise Problem(status, code, "Generation failed", job.error_message or f"generation job {job.id} failed")
    if job.status == JobStatus.CANCELED:
        raise Problem(409, "job_canceled", "Job canceled", f"generation job {job.id} was canceled")
    raise Problem(
        504,
        "timeout",
        "Still generating",
        f"generation job {job.id} is still {job.status} after {waited:g}s (OPENAI_COMPAT_WAIT); "
        f"it keeps running: GET /generations/{job.id}",
    )


async def b64_images(job: Job, storage: Storage) -> list[str]:
    keys = [output["key"] for output in job.outputs or []]
    return [base64.b64encode(await _read(storage, key)).decode() for key in keys]


async def _read(storage: Storage, key: str) -> bytes:
    data = await storage.read(key, MAX_OUTPUT_READ)
    if data is None:
        raise Problem(410, "output_gone", "Output gone", f"the output {key} no longer exists")
    return data
