"""The API's request and response bodies (camelCase on the wire)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
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


class GenerationCreate(CamelModel):
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

    @field_validator("prompt", "provider", "model", "params")
    @classmethod
    def _storable_text(cls, value: object) -> object:
        # PostgreSQL text and jsonb hold neither U+0000 nor a lone surrogate (not UTF-8):
        # refuse them here rather than fail the insert.
        for text in _strings(value):
            if "\x00" in text:
                raise ValueError("must not contain the NUL character (U+0000)")
            try:
                text.encode()
            except UnicodeEncodeError:
                raise ValueError("must be valid Unicode (a lone surrogate was sent)") from None
        return value


def _strings(value: object) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


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
