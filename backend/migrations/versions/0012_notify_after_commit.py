"""Wake-ups after commit: the triggers leave NOTIFY to the service's own connections.

A NOTIFY inside a writing transaction serialises commits: PostgreSQL holds a global lock on its
notification queue from pre-commit through the commit's WAL flush, so notifying transactions
commit one at a time. The service's connections set `generation_jobs.notify = 'after_commit'`
and send their wake-ups once the write committed (backend/notify.py); anyone else (a DBA in
pgAdmin, a script) still gets the triggers' NOTIFY in the transaction, as before.

Revision ID: notify_after_commit
Revises: events_bulk
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "notify_after_commit"
down_revision: str | None = "events_bulk"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAKE_FUNCTION = """
CREATE FUNCTION generation_jobs_wake(channel text, payload text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('generation_jobs.notify', true) IS DISTINCT FROM 'after_commit' THEN
        PERFORM pg_notify(channel, payload);
    END IF;
END $$
"""
TRIGGER_FUNCTIONS = ("generation_jobs_record_events", "generation_jobs_notify_new")


def _rewrite(old: str, new: str) -> None:
    """Replace a call in the trigger functions' bodies, keeping everything else as it is."""
    for function in TRIGGER_FUNCTIONS:
        op.execute(
            f"""
            DO $$ BEGIN
                EXECUTE replace(pg_get_functiondef('{function}'::regproc), '{old}', '{new}');
            END $$
            """
        )


def upgrade() -> None:
    op.execute(WAKE_FUNCTION)
    _rewrite("pg_notify(", "generation_jobs_wake(")


def downgrade() -> None:
    _rewrite("generation_jobs_wake(", "pg_notify(")
    op.execute("DROP FUNCTION generation_jobs_wake(text, text)")
