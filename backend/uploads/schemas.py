"""Upload request and response bodies (camelCase on the wire)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints

from backend.jobs.schemas import CamelModel, RequestBody


class UploadCreate(RequestBody):
    """Announce an upload; its bytes go to the returned `uploadUrl`."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"fileName": "cat.png", "contentType": "image/png", "size": 48213}]},
    )

    file_name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    content_type: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        description="image/png, image/jpeg or image/webp."
    )
    size: int = Field(ge=1, description="Bytes, at most MAX_UPLOAD_BYTES.")


class UploadOut(CamelModel):
    upload_id: uuid.UUID
    upload_url: str
    method: Literal["PUT"] = "PUT"
    headers: dict[str, str] = Field(description="Send these headers with the PUT.")
    expires_at: datetime


class UploadInfo(CamelModel):
    upload_id: uuid.UUID
    file_name: str
    content_type: str
    size: int = Field(description="The size announced; the bytes are checked when a job names the upload.")
    created_at: datetime
    used: bool = Field(description="A job names it; unused uploads are deleted after UPLOAD_TTL_HOURS.")
