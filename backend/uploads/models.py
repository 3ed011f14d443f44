"""The uploads table and its record."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, DateTime, ForeignKey, String, Table, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from backend.jobs.models import Base

ALLOWED_TYPES = ("image/png", "image/jpeg", "image/webp")


class UploadTable(Base):
    """One upload a client announced; its bytes live in storage under `uploads/<id>`."""

    __tablename__ = "uploads"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    account_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("accounts.id"))
    file_name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Set when the app received the bytes itself (local storage); S3 uploads are checked on use.
    uploaded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set when a job first names it: a used upload is an input of that job and is kept.
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True, slots=True)
class Upload:
    id: uuid.UUID
    account_id: uuid.UUID
    file_name: str
    content_type: str
    size: int
    created_at: datetime
    uploaded_at: datetime | None
    used_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Upload:
        return cls(*row[: len(uploads.c)])


uploads = cast("Table", UploadTable.__table__)
