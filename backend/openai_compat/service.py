"""OpenAI's requests as ordinary jobs: pick the provider, create, wait, and read the results."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from backend.accounts import Account
from backend.errors import FieldError, Problem, not_found, validation_problem
from backend.events.hub import EventHub, Overflow
from backend.events.service import stream
from backend.jobs.models import FINISHED, Job, JobKind, JobStatus
from backend.jobs.schemas import GenerationCreate
from backend.jobs.service import JobService
from backend.openai_compat.schemas import Video, VideoError
from backend.storage import Storage

# Our field names → the OpenAI parameter a client sent, so a 400 names what the client wrote.
_PARAMS = {
    "numImages": "n",
    "provider": "model",
    "kind": "model",
    "durationSeconds": "seconds",
    "aspectRatio": "size",
    "model": "model",
}
_FIRST_POLL = 0.05
# Outputs are our own files; the bound only keeps a corrupted one from filling memory.
MAX_OUTPUT_READ = 256 * 1024 * 1024
_MAX_POLL = 1.0


def generation_request(**fields: Any) -> GenerationCreate:
    """Our job request from what an OpenAI client sent; what it cannot hold is a 400 naming the parameter."""
    try:
        return GenerationCreate(**fields)
    except ValidationError as exc:
        errors = []
        for error in exc.errors():
            field = to_camel(str(error["loc"][0])) if error["loc"] else "body"
            errors.append(FieldError(_PARAMS.get(field, field), error["msg"], error["type"]))
        raise validation_problem(errors) from None


def split_model(model: str | None) -> tuple[str | None, str | None]:
    """`animals` → (animals, its default model); `animals/m` → (animals, m); nothing → the defaults."""
    if not model:
        return None, None
    provider, _, name = model.partition("/")
    return provider, name or None


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


async def wait_finished(service: JobService, hub: EventHub, account: Account, job: Job, seconds: float) -> Job:
    """The job once it finished, or as it is after `seconds`.

    Woken by the job's terminal event from the process's event hub (no polling per request).
    """
    try:
        async with asyncio.timeout(seconds):
            try:
                async for event in stream(hub, account.id, 0, job_id=job.id, job_finished=job.status in FINISHED):
                    if event.terminal:
                        break
            except Overflow:
                # The hub dropped this subscriber (far behind a burst): read the row until it is done.
                await _poll_until_finished(service, account, job)
    except TimeoutError:
        pass
    return await service.get(account, str(job.id))


async def _poll_until_finished(service: JobService, account: Account, job: Job) -> None:
    delay = _FIRST_POLL
    while job.status not in FINISHED:
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, _MAX_POLL)
        job = await service.get(account, str(job.id))


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


# OpenAI's sizes name a shape; ours are aspect ratios. A size within 5% of one of them is that one.
_RATIOS = {"1:1": 1.0, "16:9": 16 / 9, "9:16": 9 / 16}
_SIZES = {"9:16": "720x1280", "16:9": "1280x720", "1:1": "1024x1024"}
_STATUSES: dict[JobStatus, Literal["queued", "in_progress", "completed", "failed"]] = {
    JobStatus.PENDING: "queued",
    JobStatus.PROCESSING: "in_progress",
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELED: "failed",
}


def aspect_ratio(size: str) -> str:
    width, height = (int(side) for side in size.split("x"))
    for name, ratio in _RATIOS.items():
        if height and abs(width / height - ratio) <= ratio * 0.05:
            return name
    sizes = ", ".join(_SIZES.values())
    raise validation_problem(
        [FieldError("size", f"{size} is not a 16:9, 9:16 or square shape (e.g. {sizes}, 1792x1024)", "invalid")]
    )


def video(job: Job, estimate: float) -> Video:
    """The job as OpenAI's video object; `estimate` is the seconds the whole job should take."""
    status: Literal["queued", "in_progress", "completed", "failed"] = _STATUSES[JobStatus(job.status)]
    finished = job.status in FINISHED
    progress = 100 if job.status == JobStatus.COMPLETED else 0
    if job.status == JobStatus.PROCESSING and job.started_at is not None:
        # OpenAI's progress is approximate too; a video has one output, so time is the only measure.
        elapsed = (datetime.now(UTC) - job.started_at).total_seconds()
        progress = min(99, int(100 * elapsed / max(estimate, 1.0)))
    output = job.outputs[0] if job.outputs else None
    size = _SIZES.get(job.aspect_ratio, "1024x1024")
    if output and output.get("width") and output.get("height"):
        size = f"{output['width']}x{output['height']}"
    error = None
    if job.status == JobStatus.CANCELED:
        error = VideoError(code="canceled", message=f"generation job {job.id} was canceled")
    elif job.status == JobStatus.FAILED:
        error = VideoError(code=job.error_code or "generation_failed", message=job.error_message or "")
    return Video(
        id=str(job.id),
        status=status,
        progress=progress,
        model=f"{job.provider}/{job.model}" if job.model else job.provider,
        prompt=job.prompt,
        seconds=str(job.duration_seconds or 4),
        size=size,
        created_at=int(job.created_at.timestamp()),
        completed_at=int(job.completed_at.timestamp()) if finished and job.completed_at else None,
        error=error,
    )


async def video_job(service: JobService, account: Account, video_id: str) -> Job:
    """A video job of the account; any other id (an image job's too) is not a video: 404."""
    try:
        job = await service.get(account, video_id)
    except Problem as problem:
        if problem.status == 404:
            raise not_found(f"video {video_id!r}") from None
        raise
    if job.kind != JobKind.VIDEO:
        raise not_found(f"video {video_id!r}")
    return job
