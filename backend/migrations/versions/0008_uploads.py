"""Uploads (input pictures), and the inputs each job names.

Revision ID: uploads
Revises: rate_limits
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "uploads"
down_revision: str | None = "rate_limits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", postgresql.UUID(), server_default=sa.text("gen_random_uuid()"), primary_key=True),
        sa.Column("account_id", postgresql.UUID(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True)),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("content_type IN ('image/png', 'image/jpeg', 'image/webp')", name="uploads_content_type"),
        sa.CheckConstraint("size > 0", name="uploads_size_positive"),
    )
    # The sweep of unused uploads walks only the ones never used, oldest first.
    op.create_index(
        "uploads_unused_created_idx", "uploads", ["created_at"], postgresql_where=sa.text("used_at IS NULL")
    )
    op.add_column("generation_jobs", sa.Column("input_images", postgresql.ARRAY(postgresql.UUID())))


def downgrade() -> None:
    op.drop_column("generation_jobs", "input_images")
    op.drop_table("uploads")
