"""Accounts, and the account that owns each job.

Revision ID: accounts
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "accounts"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANONYMOUS = "00000000-0000-0000-0000-000000000000"


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", postgresql.UUID(), server_default=sa.text("gen_random_uuid()"), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        # A hash of the API key, never the key; NULL for the built-in anonymous account.
        sa.Column("key_hash", sa.LargeBinary()),
        sa.Column("webhook_secret", sa.Text()),
        sa.Column("rate_limit_per_minute", sa.Integer()),
        sa.Column("max_concurrent", sa.Integer()),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_index("accounts_key_hash_idx", "accounts", ["key_hash"], unique=True)
    op.execute(
        sa.text("INSERT INTO accounts (id, name) VALUES (CAST(:id AS uuid), 'anonymous')").bindparams(id=ANONYMOUS)
    )
    # Existing jobs belong to the anonymous account.
    op.add_column(
        "generation_jobs",
        sa.Column(
            "account_id",
            postgresql.UUID(),
            sa.ForeignKey("accounts.id"),
            server_default=sa.text(f"'{ANONYMOUS}'::uuid"),
            nullable=False,
        ),
    )
    # Lists are per account now: keyset pagination within one account, with and without a status.
    op.drop_index("generation_jobs_status_created_idx", "generation_jobs")
    op.create_index(
        "generation_jobs_account_created_idx",
        "generation_jobs",
        ["account_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "generation_jobs_account_status_created_idx",
        "generation_jobs",
        ["account_id", "status", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    # An idempotency key is the client's: two accounts may use the same one.
    op.drop_index("generation_jobs_idempotency_key_idx", "generation_jobs")
    op.create_index(
        "generation_jobs_idempotency_key_idx",
        "generation_jobs",
        ["account_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("generation_jobs_idempotency_key_idx", "generation_jobs")
    op.create_index(
        "generation_jobs_idempotency_key_idx",
        "generation_jobs",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_index("generation_jobs_account_status_created_idx", "generation_jobs")
    op.drop_index("generation_jobs_account_created_idx", "generation_jobs")
    op.create_index(
        "generation_jobs_status_created_idx",
        "generation_jobs",
        ["status", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.drop_column("generation_jobs", "account_id")
    op.drop_table("accounts")
