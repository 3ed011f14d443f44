"""Outputs generalized to images and video: kind, request options, the remote job id, outputs.

Revision ID: outputs
Revises: accounts
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "outputs"
down_revision: str | None = "accounts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("generation_jobs", sa.Column("kind", sa.String(8), server_default="image", nullable=False))
    op.add_column("generation_jobs", sa.Column("model", sa.String(128)))
    op.add_column("generation_jobs", sa.Column("duration_seconds", sa.Integer()))
    op.add_column("generation_jobs", sa.Column("aspect_ratio", sa.String(8), server_default="1:1", nullable=False))
    op.add_column("generation_jobs", sa.Column("seed", sa.BigInteger()))
    op.add_column("generation_jobs", sa.Column("params", postgresql.JSONB()))
    op.add_column("generation_jobs", sa.Column("provider_job_id", sa.String(255)))
    # One jsonb array, rewritten whole as each output is stored: a trigger can watch it grow.
    op.add_column("generation_jobs", sa.Column("outputs", postgresql.JSONB()))
    op.create_check_constraint("generation_jobs_kind_check", "generation_jobs", "kind IN ('image', 'video')")
    op.execute(
        """
        UPDATE generation_jobs SET outputs = (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                'key', key,
                'contentType', CASE split_part(key, '.', 2)
                    WHEN 'jpg' THEN 'image/jpeg' WHEN 'webp' THEN 'image/webp' ELSE 'image/png' END
            ) ORDER BY ordinality), '[]'::jsonb)
            FROM unnest(image_keys) WITH ORDINALITY AS k(key, ordinality)
        )
        WHERE image_keys IS NOT NULL
        """
    )
    op.drop_column("generation_jobs", "image_keys")


def downgrade() -> None:
    op.add_column("generation_jobs", sa.Column("image_keys", postgresql.ARRAY(sa.Text())))
    op.execute(
        """
        UPDATE generation_jobs SET image_keys = ARRAY(
            SELECT o->>'key' FROM jsonb_array_elements(outputs) WITH ORDINALITY AS e(o, n) ORDER BY n
        )
        WHERE outputs IS NOT NULL AND kind = 'image'
        """
    )
    op.drop_constraint("generation_jobs_kind_check", "generation_jobs")
    for column in ("outputs", "provider_job_id", "params", "seed", "aspect_ratio", "duration_seconds", "model", "kind"):
        op.drop_column("generation_jobs", column)
