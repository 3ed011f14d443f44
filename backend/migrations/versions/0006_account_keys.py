"""A hint of each account's key, so `keys list` can tell keys apart without storing them.

Revision ID: account_keys
Revises: events
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "account_keys"
down_revision: str | None = "events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("key_hint", sa.String(32)))


def downgrade() -> None:
    op.drop_column("accounts", "key_hint")
