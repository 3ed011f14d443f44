"""The chat assistant: chats, messages, options, and the jobs generated from options.

Revision ID: chat
Revises: outputs
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "chat"
down_revision: str | None = "outputs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UUID = postgresql.UUID()
NOW = sa.func.now()


def upgrade() -> None:
    op.create_table(
        "chats",
        sa.Column("id", UUID, server_default=sa.text("gen_random_uuid()"), primary_key=True),
        sa.Column("account_id", UUID, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("title", sa.String(200)),
        sa.Column("message_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_message_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
    )
    # The list: one account's live chats, newest first, walked by keyset.
    op.create_index(
        "chats_account_created_idx",
        "chats",
        ["account_id", sa.text("created_at DESC"), sa.text("id DESC")],
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "chat_messages",
        sa.Column("id", UUID, server_default=sa.text("gen_random_uuid()"), primary_key=True),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False, unique=True),
        sa.Column("chat_id", UUID, sa.ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
        sa.Column("account_id", UUID, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("attachments", postgresql.ARRAY(UUID), server_default="{}", nullable=False),
        sa.Column("render_chunks", postgresql.JSONB(), nullable=False),
        sa.Column("job_id", UUID),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.CheckConstraint("role IN ('user', 'assistant')", name="chat_messages_role_check"),
    )
    op.create_index("chat_messages_chat_seq_idx", "chat_messages", ["chat_id", "seq"])
    # One result message per (chat, job), whoever appends it and however often: exactly once.
    op.create_index(
        "chat_messages_result_idx",
        "chat_messages",
        ["chat_id", "job_id"],
        unique=True,
        postgresql_where=sa.text("job_id IS NOT NULL"),
    )
    op.create_table(
        "chat_options",
        sa.Column("id", UUID, server_default=sa.text("gen_random_uuid()"), primary_key=True),
        sa.Column("chat_id", UUID, sa.ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
        sa.Column("message_id", UUID, sa.ForeignKey("chat_messages.id", ondelete="CASCADE"), nullable=False),
        sa.Column("account_id", UUID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("model_key", sa.String(100), nullable=False),
        sa.Column("tool_type", sa.String(32), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("title", sa.String(100), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("params", postgresql.JSONB(), nullable=False),
        sa.Column("input_images", postgresql.ARRAY(UUID), server_default="{}", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
    )
    op.create_index("chat_options_message_idx", "chat_options", ["message_id"])
    op.create_table(
        "chat_generations",
        sa.Column("job_id", UUID, sa.ForeignKey("generation_jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("option_id", UUID, sa.ForeignKey("chat_options.id", ondelete="CASCADE"), nullable=False),
        sa.Column("chat_id", UUID, sa.ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
        sa.Column("account_id", UUID, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
    )
    op.create_index("chat_generations_option_idx", "chat_generations", ["option_id"])
    op.create_index("chat_generations_chat_idx", "chat_generations", ["chat_id"])
    # The result appender's to-do list stays as small as the number of chat jobs in flight.
    op.create_index(
        "chat_generations_unresolved_idx",
        "chat_generations",
        ["created_at"],
        postgresql_where=sa.text("resolved_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("chat_generations")
    op.drop_table("chat_options")
    op.drop_table("chat_messages")
    op.drop_table("chats")
