"""The chat tables: chats, their messages, the options an answer offers, and the jobs run from them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = MetaData()

chats = Table(
    "chats",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    Column("account_id", UUID(as_uuid=True), ForeignKey("accounts.id"), nullable=False),
    Column("title", String(200)),
    Column("message_count", Integer, nullable=False, server_default="0"),
    Column("last_message_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # A deleted chat is gone for its reader; the row stays so its options answer "deleted", not "unknown".
    Column("deleted_at", DateTime(timezone=True)),
)

messages = Table(
    "chat_messages",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    # Insert order: messages of one transaction share now(), so time alone cannot order them.
    Column("seq", BigInteger, Identity(), nullable=False, unique=True),
    Column("chat_id", UUID(as_uuid=True), ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
    Column("account_id", UUID(as_uuid=True), nullable=False),
    Column("role", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("attachments", ARRAY(UUID(as_uuid=True)), nullable=False, server_default="{}"),
    Column("render_chunks", JSONB, nullable=False),
    # Set on the assistant's result message: unique per chat, which is what makes it exactly once.
    Column("job_id", UUID(as_uuid=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

options = Table(
    "chat_options",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")),
    Column("chat_id", UUID(as_uuid=True), ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
    Column("message_id", UUID(as_uuid=True), ForeignKey("chat_messages.id", ondelete="CASCADE"), nullable=False),
    Column("account_id", UUID(as_uuid=True), nullable=False),
    Column("position", Integer, nullable=False),
    Column("model_key", String(100), nullable=False),
    Column("tool_type", String(32), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("model", String(200), nullable=False),
    Column("title", String(100), nullable=False),
    Column("label", String(200), nullable=False),
    Column("prompt", Text, nullable=False),
    Column("params", JSONB, nullable=False),
    Column("input_images", ARRAY(UUID(as_uuid=True)), nullable=False, server_default="{}"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

generations = Table(
    "chat_generations",
    metadata,
    Column(
        "job_id",
        UUID(as_uuid=True),
        ForeignKey("generation_jobs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("option_id", UUID(as_uuid=True), ForeignKey("chat_options.id", ondelete="CASCADE"), nullable=False),
    Column("chat_id", UUID(as_uuid=True), ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
    Column("account_id", UUID(as_uuid=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # NULL until the result message is in the chat: the durable to-do list of the result appender.
    Column("resolved_at", DateTime(timezone=True)),
)


@dataclass(frozen=True, slots=True)
class Chat:
    id: uuid.UUID
    account_id: uuid.UUID
    title: str | None
    message_count: int
    last_message_at: datetime | None
    created_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class Message:
    id: uuid.UUID
    seq: int
    chat_id: uuid.UUID
    account_id: uuid.UUID
    role: str
    text: str
    attachments: list[uuid.UUID]
    render_chunks: list[dict[str, Any]]
    job_id: uuid.UUID | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Option:
    id: uuid.UUID
    chat_id: uuid.UUID
    message_id: uuid.UUID
    account_id: uuid.UUID
    position: int
    model_key: str
    tool_type: str
    provider: str
    model: str
    title: str
    label: str
    prompt: str
    params: dict[str, Any]
    input_images: list[uuid.UUID]
    created_at: datetime
