"""The API's request and response bodies (camelCase on the wire)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.alias_generators import to_camel

from backend.jobs.models import JobStatus

PROMPT_MAX_LENGTH = 1000
PARAMS_MAX_BYTES = 4096
ASPECT_RATIOS = ("1:1", "16:9", "9:16")
AspectRatio = Literal["1:1", "16:9", "9:16"]


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


WebhookEventType = Literal[
    "job.created", "job.started", "job.progress", "job.retrying", "job.completed", "job.failed", "job.canceled"
]


def _unstorable(value: object) -> bool:
    """Text PostgreSQL cannot hold: a NUL character, or a lone surrogate (not encodable as UTF-8)."""
    if isinstance(value, str):
        return "\x00" in value or (not value.isascii() and _has_lone_surrogate(value))
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unstorable(item) for item in value)
    return False


def _has_lone_surrogate(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return True
    return False


class RequestBody(CamelModel):
    """A body a client sends: every text in it must be storable, or the request is a 422 naming the field."""

    @field_validator("*")
    @classmethod
    def _storable(cls, value: object) -> object:
        if _unstorable(value):
            raise ValueError("contains a NUL character or an invalid Unicode surrogate")
        return value


class GenerationCreate(RequestBody):
    """A request for `numImages` images or one video; the upper bound is the MAX_IMAGES_PER_JOB setting."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"numImages": 3}, {"kind": "video", "durationSeconds": 4, "prompt": "a fox"}]},
    )

    num_images: int | None = Field(
        None, ge=1, description="How many images to generate (1 to MAX_IMAGES_PER_JOB); required for images."
    )
    prompt: Annotated[str, StringConstraints(max_length=PROMPT_MAX_LENGTH)] | None = None
    provider: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        None, description="A configured provider; the default one when omitted."
    )
    kind: Literal["image", "video"] = Field("image", description="`image` (numImages images) or `video` (one video).")
    duration_seconds: int | None = Field(None, ge=1, le=20, description="Video length in seconds (default 4).")
    aspect_ratio: AspectRatio = "1:1"
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Passed to providers that take one.")
    model: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        None, description="A model of the chosen provider; its configured default when omitted."
    )
    params: dict[str, Any] | None = Field(
        None, description="Provider options, passed through to the service (a JSON object, at most 4 KiB)."
    )
    input_images: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None = Field(
        None, max_length=4, description="Up to 4 upload ids (POST /uploads) whose pictures the job uses."
    )
    webhook_url: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = Field(
        None, description="An http(s) URL that receives this job's events, signed (Standard Webhooks)."
    )
    webhook_events: list[WebhookEventType] | None = Field(
        None,
        min_length=1,
        max_length=7,
        description="Which events to POST to `webhookUrl`; default job.completed, job.failed, job.canceled.",
    )


class OutputOut(CamelModel):
    url: str
    content_type: str
    width: int | None
    height: int | None
    duration_seconds: float | None
    size_bytes: int | None


class JobError(CamelModel):
    code: str
    message: str


class JobOut(CamelModel):
    job_id: uuid.UUID
    status: JobStatus
    kind: Literal["image", "video"]
    num_images: int
    prompt: str | None
    provider: str
    model: str | None
    duration_seconds: int | None
    aspect_ratio: str
    seed: int | None
    params: dict[str, Any] | None
    animal: str | None
    image_urls: list[str] | None = Field(description="Image jobs only: the URLs of `outputs`, in order.")
    outputs: list[OutputOut] | None = Field(description="What is stored so far; complete once `completed`.")
    provider_job_id: str | None = Field(description="The remote service's id for this job, once known.")
    input_images: list[uuid.UUID] = Field(default_factory=list, description="The uploads the job uses as inputs.")
    error: JobError | None
    attempts: int
    next_attempt_at: datetime | None = Field(
        description="While a failed attempt waits to be retried: when the next one may start."
    )
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    webhook_url: str | None = None
    webhook_events: list[str] | None = None


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}
