"""The one table, generation_jobs: its declaration, and the plain record the code passes around."""

from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ARRAY, BigInteger, DateTime, ForeignKey, Integer, LargeBinary, String, Table, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from backend.accounts import ANONYMOUS_ACCOUNT_ID


class Base(DeclarativeBase):
    pass


class AccountTable(Base):
    """API keys' accounts (one key, one account). Only a hash of each key is stored."""

    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[bytes | None] = mapped_column(LargeBinary, unique=True)
    webhook_secret: Mapped[str | None] = mapped_column(Text)
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


class JobKind(enum.StrEnum):
    IMAGE = "image"
    VIDEO = "video"


FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED})


class JobTable(Base):
    """The table's declaration. Status is plain text with a CHECK so DBAs can read and fix it."""

    __tablename__ = "generation_jobs"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    status: Mapped[str] = mapped_column(String(16), server_default=JobStatus.PENDING.value)
    num_images: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(String(64))
    animal: Mapped[str | None] = mapped_column(String(64))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    lease_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    run_after: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    worker_id: Mapped[str | None] = mapped_column(String(128))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    account_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("accounts.id"), server_default=text(f"'{ANONYMOUS_ACCOUNT_ID}'::uuid")
    )
    kind: Mapped[str] = mapped_column(String(8), server_default=JobKind.IMAGE.value)
    model: Mapped[str | None] = mapped_column(String(128))
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    aspect_ratio: Mapped[str] = mapped_column(String(8), server_default="1:1")
    seed: Mapped[int | None] = mapped_column(BigInteger)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The remote service's id for this job, committed before its first poll so a restart resumes it.
    provider_job_id: Mapped[str | None] = mapped_column(String(255))
    # [{"key", "contentType", "width", "height", "durationSeconds", "sizeBytes"}], rewritten as each is stored.
    outputs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    # Where this job's events are POSTed (Standard Webhooks), and which of them.
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_events: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    # Uploads the job uses as input pictures, in the order the client named them.
    input_images: Mapped[list[uuid.UUID] | None] = mapped_column(ARRAY(UUID(as_uuid=True)))


@dataclass(frozen=True, slots=True)
class Job:
    """A job as read from the database. The repository returns these, not ORM instances:
    building a slotted dataclass from a row costs a fraction of an ORM object's bookkeeping,
    and every statement here is a single autocommitted one anyway."""

    id: uuid.UUID
    status: str
    num_images: int
    prompt: str | None
    provider: str
    animal: str | None
    error_code: str | None
    error_message: str | None
    attempts: int
    lease_token: uuid.UUID | None
    lease_expires_at: datetime | None
    run_after: datetime
    worker_id: str | None
    idempotency_key: str | None
    request_hash: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    account_id: uuid.UUID
    kind: str
    model: str | None
    duration_seconds: int | None
    aspect_ratio: str
    seed: int | None
    params: dict[str, Any] | None
    provider_job_id: str | None
    outputs: list[dict[str, Any]] | None
    webhook_url: str | None
    webhook_events: list[str] | None
    input_images: list[uuid.UUID] | None

    @classmethod
    def from_row(cls, row: Any) -> Job:
        """From a row whose first columns are the table's, in table order (extra ones ignored).

        Plain asyncpg hands jsonb over as text while SQLAlchemy decodes it; both arrive here.
        """
        values = list(row[:_FIELD_COUNT])
        for index in _JSON_FIELDS:
            if isinstance(values[index], str):
                values[index] = json.loads(values[index])
        return cls(*values)


jobs = cast("Table", JobTable.__table__)
_FIELD_COUNT = len(jobs.c)
_JSON_FIELDS = tuple(i for i, column in enumerate(jobs.c) if isinstance(column.type, JSONB))
