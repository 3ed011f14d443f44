"""Create the generation_jobs table.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = "('pending', 'processing', 'completed', 'failed', 'canceled')"


def upgrade() -> None:
    op.create_table(
        "generation_jobs",
        sa.Column("id", postgresql.UUID(), server_default=sa.text("gen_random_uuid()"), primary_key=True),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("num_images", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text()),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("animal", sa.String(64)),
        sa.Column("image_keys", postgresql.ARRAY(sa.Text())),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.Text()),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lease_token", postgresql.UUID()),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.Column("run_after", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("worker_id", sa.String(128)),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("request_hash", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(f"status IN {STATUSES}", name="generation_jobs_status_check"),
        sa.CheckConstraint("num_images > 0", name="generation_jobs_num_images_check"),
        sa.CheckConstraint(
            "status <> 'processing' OR (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)",
            name="generation_jobs_processing_has_lease",
        ),
    )
    # The claim reads only this small partial index, in run order.
    op.create_index(
        "generation_jobs_pending_idx",
        "generation_jobs",
        ["run_after"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    # The reaper finds expired leases without touching finished rows.
    op.create_index(
        "generation_jobs_lease_idx",
        "generation_jobs",
        ["lease_expires_at"],
        postgresql_where=sa.text("status = 'processing'"),
    )
    # Keyset pagination, newest first, with and without a status filter.
    op.create_index("generation_jobs_created_idx", "generation_jobs", [sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_index(
        "generation_jobs_status_created_idx",
        "generation_jobs",
        ["status", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "generation_jobs_idempotency_key_idx",
        "generation_jobs",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    # Wake sleeping workers on any insert, including a DBA's, once per statement.
    op.execute(
        """
        CREATE FUNCTION generation_jobs_notify_new() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('generation_jobs_new', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER generation_jobs_notify_new
            AFTER INSERT ON generation_jobs
            FOR EACH STATEMENT EXECUTE FUNCTION generation_jobs_notify_new();
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS generation_jobs_notify_new ON generation_jobs")
    op.execute("DROP FUNCTION IF EXISTS generation_jobs_notify_new()")
    op.drop_table("generation_jobs")
