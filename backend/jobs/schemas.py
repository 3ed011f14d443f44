"""The API's request and response bodies (camelCase on the wire)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from backend.jobs.models import JobStatus

PROMPT_MAX_LENGTH = 1000


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class GenerationCreate(CamelModel):
    """A request for `numImages` images; the upper bound is the MAX_IMAGES_PER_JOB setting."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"numImages": 3}]})

    num_images: int = Field(ge=1, description="How many images to generate (1 to MAX_IMAGES_PER_JOB).")
    prompt: Annotated[str, StringConstraints(max_length=PROMPT_MAX_LENGTH)] | None = None
    provider: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        None, description="A configured provider; the default one when omitted."
    )


class JobError(CamelModel):
    code: str
    message: str


class JobOut(CamelModel):
    job_id: uuid.UUID
    status: JobStatus
    num_images: int
    prompt: str | None
    provider: str
    animal: str | None
    image_urls: list[str] | None
    error: JobError | None
    attempts: int
    next_attempt_at: datetime | None = Field(
        description="While a failed attempt waits to be retried: when the next one may start."
    )
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}
