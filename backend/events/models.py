"""The events table and the webhook outbox: declarations and the records the code passes around."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, Table, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from backend.jobs.models import Base

JOB_EVENT_TYPES = (
    "job.created",
    "job.started",
    "job.progress",
    "job.retrying",
    "job.completed",
    "job.failed",
    "job.canceled",
)
TERMINAL_TYPES = frozenset({"job.completed", "job.failed", "job.canceled"})
DEFAULT_WEBHOOK_EVENTS = ("job.completed", "job.failed", "job.canceled")

# An event id is (transaction id << ID_SHIFT) + ordinal within the transaction: see the migration.
ID_SHIFT = 16


class EventTable(Base):
    """Append-only. Job events are written by a trigger on generation_jobs, in the change's transaction."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    account_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    type: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    chat_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DeliveryTable(Base):
    """The webhook outbox: one row per (event, job's webhook URL), filled by the same trigger."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("events.id", ondelete="CASCADE"))
    account_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


events = cast("Table", EventTable.__table__)
deliveries = cast("Table", DeliveryTable.__table__)


@dataclass(slots=True, eq=False)
class Event:
    """One event as read. `data` stays JSON text until first rendered; the render is memoised
    per base URL, so one event fanned out to hundreds of streams is rendered once."""

    id: int
    account_id: uuid.UUID
    type: str
    job_id: uuid.UUID | None
    chat_id: uuid.UUID | None
    data_json: str
    created_at: datetime
    rendered: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.data_json)
        return parsed

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES


@dataclass(frozen=True, slots=True)
class Delivery:
    id: uuid.UUID
    event_id: int
    account_id: uuid.UUID
    job_id: uuid.UUID
    url: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Delivery:
        return cls(*row[: len(deliveries.c)])
