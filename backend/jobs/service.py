"""What may happen to a job: the rules between the HTTP routes and the repository."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import uuid
from datetime import datetime

from backend.accounts import Account
from backend.config import Settings
from backend.errors import FieldError, Problem, not_found, validation_problem
from backend.events import guard
from backend.events.models import DEFAULT_WEBHOOK_EVENTS
from backend.jobs.models import FINISHED, Job, JobStatus
from backend.jobs.repository import Cursor, JobRepository, NewJob
from backend.jobs.schemas import PARAMS_MAX_BYTES, GenerationCreate
from backend.metrics import JOBS_CANCELED, JOBS_CREATED
from backend.providers import VIDEO, Provider, kinds_of, seconds_per_output
from backend.storage import Storage, job_prefix
from backend.uploads.service import UploadService

log = logging.getLogger(__name__)


class JobService:
    def __init__(
        self,
        repo: JobRepository,
        providers: dict[str, Provider],
        settings: Settings,
        *,
        storage: Storage,
        uploads: UploadService,
    ) -> None:
        self.repo = repo
        self.providers = providers
        self.settings = settings
        self.storage = storage
        self.uploads = uploads

    async def create(
        self, account: Account, request: GenerationCreate, idempotency_key: str | None
    ) -> tuple[Job, bool]:
        """Accept a job; returns (job, replayed) where replayed means an idempotent repeat."""
        errors = self._check(request)
        provider = request.provider or self.settings.default_provider
        if provider not in self.providers:
            known = ", ".join(sorted(self.providers))
            errors.append(FieldError("provider", f"unknown provider {provider!r}; known: {known}", "unknown"))
        elif request.kind not in kinds_of(self.providers[provider]):
            able = ", ".join(sorted(name for name, p in self.providers.items() if request.kind in kinds_of(p)))
            errors.append(
                FieldError(
                    "kind",
                    f"provider {provider!r} cannot make {request.kind}s; providers that can: {able or 'none enabled'}",
                    "unsupported",
                )
            )
        webhook_events: list[str] | None = None
        if request.webhook_url is not None:
            webhook_events = list(dict.fromkeys(request.webhook_events or DEFAULT_WEBHOOK_EVENTS))
            try:
                await guard.resolve(request.webhook_url, allow_private=self.settings.webhook_allow_private)
            except guard.UnsafeURL as exc:
                errors.append(FieldError("webhookUrl", str(exc), "unsafe_url"))
        elif request.webhook_events is not None:
            errors.append(FieldError("webhookEvents", "needs a webhookUrl to send them to", "missing_webhook_url"))
        if errors:
            raise validation_problem(errors)
        inputs = await self.uploads.claim_inputs(account, request.input_images) if request.input_images else None

        request_hash = _fingerprint(request) if idempotency_key is not None else None
        video = request.kind == VIDEO
        new = NewJob(
            1 if video else request.num_images or 1,
            request.prompt,
            provider,
            account.id,
            idempotency_key,
            request_hash,
            kind=request.kind,
            model=request.model,
            duration_seconds=(request.duration_seconds or 4) if video else None,
            aspect_ratio=request.aspect_ratio,
            seed=request.seed,
            params=request.params,
            input_images=inputs,
            webhook_url=request.webhook_url,
            webhook_events=webhook_events,
        )
        job, created = await self.repo.create(new)
        if created:
            JOBS_CREATED.labels(provider).inc()
            log.info("job %s accepted (%d images, %s)", job.id, job.num_images, provider, extra={"job_id": str(job.id)})
            return job, False
        if job.request_hash != request_hash:
            raise Problem(
                422,
                "idempotency_key_reused",
                "Idempotency key reused",
                "this Idempotency-Key was already used with a different request body",
                [FieldError("Idempotency-Key", "already used with a different body", "reused")],
            )
        return job, True

    def _check(self, request: GenerationCreate) -> list[FieldError]:
        """The rules a schema cannot say: limits from settings, and which fields go with which kind."""
        errors = []
        if request.kind == VIDEO:
            if request.num_images not in (None, 1):
                errors.append(FieldError("numImages", "a video job makes one output; omit numImages", "video"))
        else:
            if request.num_images is None:
                errors.append(FieldError("numImages", "required for image jobs", "missing"))
            elif request.num_images > self.settings.max_images_per_job:
                errors.append(
                    FieldError(
                        "numImages",
                        f"must be at most {self.settings.max_images_per_job} (MAX_IMAGES_PER_JOB)",
                        "less_than_equal",
                    )
                )
            if request.duration_seconds is not None:
                errors.append(FieldError("durationSeconds", "only video jobs have a duration", "video_only"))
        if request.params is not None:
            size = len(json.dumps(request.params, separators=(",", ":")).encode())
            if size > PARAMS_MAX_BYTES:
                errors.append(
                    FieldError("params", f"must be at most {PARAMS_MAX_BYTES} bytes of JSON (got {size})", "too_long")
                )
        return errors

    def retry_after(self, job: Job) -> int:
        """Seconds until polling this job is worthwhile."""
        provider = self.providers.get(job.provider)
        outputs = 1 if job.kind == VIDEO else job.num_images
        estimate = seconds_per_output(provider, job.kind) * outputs if provider else 1.0
        return max(1, math.ceil(estimate))

    async def get(self, account: Account, job_id: str) -> Job:
        parsed = _parse_uuid(job_id)
        job = await self.repo.get(parsed, account.id) if parsed else None
        if job is None:
            raise not_found(f"generation job {job_id!r}")
        return job

    async def list(
        self,
        account: Account,
        *,
        limit: int,
        status: JobStatus | None,
        cursor: str | None,
        kind: str | None = None,
        oldest_first: bool = False,
    ) -> tuple[list[Job], str | None]:
        """One page of the account's jobs, newest first, and the cursor of the next page if there is one."""
        after = decode_cursor(cursor) if cursor else None
        jobs = await self.repo.page(
            account_id=account.id, limit=limit + 1, status=status, after=after, kind=kind, oldest_first=oldest_first
        )
        if len(jobs) <= limit:
            return jobs, None
        jobs = jobs[:limit]
        return jobs, encode_cursor(Cursor(jobs[-1].created_at, jobs[-1].id))

    async def cancel(self, account: Account, job_id: str) -> Job:
        parsed = _parse_uuid(job_id)
        if parsed is None:
            raise not_found(f"generation job {job_id!r}")
        job = await self.repo.cancel(parsed, account.id)
        if job is not None:
            JOBS_CANCELED.labels(job.provider).inc()
            return job
        existing = await self.repo.get(parsed, account.id)
        if existing is None:
            raise not_found(f"generation job {job_id!r}")
        raise Problem(
            409,
            "job_finished",
            "Job already finished",
            f"generation job {job_id} is already {existing.status} and cannot be canceled",
        )

    async def delete(self, account: Account, job_id: str) -> None:
        """Remove a job and its files; a live one is canceled first (its worker stops)."""
        parsed = _parse_uuid(job_id)
        job = await self.repo.get(parsed, account.id) if parsed else None
        if job is None or parsed is None:
            raise not_found(f"generation job {job_id!r}")
        if job.status not in FINISHED and await self.repo.cancel(parsed, account.id) is not None:
            JOBS_CANCELED.labels(job.provider).inc()
        # Files first: if the store is down this answers 503 and the job is still there to retry on.
        await self.storage.delete_prefix(job_prefix(parsed))
        await self.repo.delete(parsed, account.id)
        log.info("job %s deleted", parsed, extra={"job_id": str(parsed)})


def _fingerprint(request: GenerationCreate) -> str:
    canonical = json.dumps(request.model_dump(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def encode_cursor(cursor: Cursor) -> str:
    raw = f"{cursor.created_at.isoformat()}|{cursor.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        created_at, job_id = raw.split("|")
        parsed = Cursor(datetime.fromisoformat(created_at), uuid.UUID(job_id))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise validation_problem(
            [FieldError("cursor", "not a cursor from a Link header of this API", "invalid")]
        ) from None
    if parsed.created_at.tzinfo is None:
        raise validation_problem([FieldError("cursor", "not a cursor from a Link header of this API", "invalid")])
    return parsed
