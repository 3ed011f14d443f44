"""Fair share and concurrency quotas in the claim.

The pending index leads with the account, so the claim can list the accounts that have
work (a skip scan) and take each one's oldest due jobs. A processing job of an account
with a quota holds a numbered slot, unique per account while processing: two replicas
that race for an account's last free slot cannot both win, whatever their snapshots saw.

Revision ID: fair_share
Revises: uploads
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fair_share"
down_revision: str | None = "uploads"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("generation_jobs", sa.Column("slot", sa.Integer()))
    op.create_index(
        "generation_jobs_account_pending_idx",
        "generation_jobs",
        ["account_id", "run_after"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_index("generation_jobs_pending_idx", "generation_jobs")
    # Also how the claim counts an account's running jobs.
    op.create_index(
        "generation_jobs_account_slot_idx",
        "generation_jobs",
        ["account_id", "slot"],
        unique=True,
        postgresql_where=sa.text("status = 'processing'"),
    )


def downgrade() -> None:
    op.drop_index("generation_jobs_account_slot_idx", "generation_jobs")
    op.create_index(
        "generation_jobs_pending_idx",
        "generation_jobs",
        ["run_after"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_index("generation_jobs_account_pending_idx", "generation_jobs")
    op.drop_column("generation_jobs", "slot")
