"""The chat API's request and response bodies (camelCase on the wire)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from backend.chat.catalog import CatalogModel, CostTier, LatencyTier, ToolType
from backend.chat.models import Message, Option
from backend.jobs.schemas import CamelModel, OutputOut, RequestBody

TEXT_MAX_LENGTH = 4000
MAX_ATTACHMENTS = 4


class ModelOut(CamelModel):
    """A catalog entry as `GET /models` publishes it."""

    key: str
    tool_type: ToolType
    provider: str
    model: str
    title: str
    description: str
    cost_tier: CostTier
    latency_tier: LatencyTier

    @classmethod
    def of(cls, entry: CatalogModel) -> ModelOut:
        return cls.model_validate(entry.model_dump(exclude={"defaults"}))


class ChatCreate(RequestBody):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"title": "Holiday card"}]})

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = None


class ChatOut(CamelModel):
    id: uuid.UUID
    title: str | None
    message_count: int
    last_message_at: datetime | None
    created_at: datetime


class MessageCreate(RequestBody):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"text": "a fox in the snow, vertical, as a 6 second video"}]},
    )

    text: Annotated[str, StringConstraints(min_length=1, max_length=TEXT_MAX_LENGTH)] = Field(
        description="What you want, in your own words (1 to 4,000 characters)."
    )
    attachments: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        default_factory=list,
        max_length=MAX_ATTACHMENTS,
        description="Upload ids (from POST /uploads) of pictures to work from.",
    )


class TextChunk(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ButtonChunk(CamelModel):
    type: Literal["button"] = "button"
    label: str
    option_id: uuid.UUID


class MediaChunk(CamelModel):
    type: Literal["media"] = "media"
    job_id: uuid.UUID
    outputs: list[OutputOut] = Field(default_factory=list, description="As the job shows them when read.")


RenderChunk = Annotated[TextChunk | ButtonChunk | MediaChunk, Field(discriminator="type")]


class MessageOut(CamelModel):
    id: uuid.UUID
    chat_id: uuid.UUID
    role: Literal["user", "assistant"]
    text: str
    attachments: list[uuid.UUID]
    render_chunks: list[RenderChunk]
    created_at: datetime


class MessagePair(CamelModel):
    user_message: MessageOut
    assistant_message: MessageOut


class OptionOut(CamelModel):
    id: uuid.UUID
    chat_id: uuid.UUID
    message_id: uuid.UUID
    model_key: str
    tool_type: ToolType
    provider: str
    model: str
    title: str
    label: str
    prompt: str
    params: dict[str, Any]
    attachments: list[uuid.UUID]
    job_ids: list[uuid.UUID] = Field(description="Jobs generated from this option, oldest first.")
    created_at: datetime


def message_view(message: Message) -> MessageOut:
    """The message as stored: a media chunk's outputs are filled in by whoever has the job at hand."""
    return MessageOut.model_validate(
        {
            "id": message.id,
            "chatId": message.chat_id,
            "role": message.role,
            "text": message.text,
            "attachments": message.attachments,
            "renderChunks": message.render_chunks,
            "createdAt": message.created_at,
        }
    )


def option_view(option: Option, job_ids: list[uuid.UUID]) -> OptionOut:
    return OptionOut(
        id=option.id,
        chat_id=option.chat_id,
        message_id=option.message_id,
        model_key=option.model_key,
        tool_type=ToolType(option.tool_type),
        provider=option.provider,
        model=option.model,
        title=option.title,
        label=option.label,
        prompt=option.prompt,
        params=option.params,
        attachments=option.input_images,
        job_ids=job_ids,
        created_at=option.created_at,
    )
