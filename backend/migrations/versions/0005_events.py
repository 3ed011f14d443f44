"""Job events (written by a trigger in the job's own transaction) and the webhook outbox.

Revision ID: events
Revises: chat
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "events"
down_revision: str | None = "chat"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_WEBHOOK_EVENTS = "ARRAY['job.completed', 'job.failed', 'job.canceled']::text[]"

# outputs may be SQL NULL, JSON null (what SQLAlchemy writes for None) or an array.
_OUTPUTS = "CASE jsonb_typeof({row}.outputs) WHEN 'array' THEN jsonb_array_length({row}.outputs) ELSE 0 END"
_CHANGED = {
    "INSERT": "SELECT n.*, 'job.created' AS type FROM new_jobs n",
    # Heartbeats and other bookkeeping updates change none of these and write no event.
    "UPDATE": """
        SELECT n.*, CASE WHEN n.status <> o.status AND n.status = 'processing' THEN 'job.started'
                         WHEN n.status <> o.status AND n.status = 'pending' THEN 'job.retrying'
                         WHEN n.status <> o.status THEN 'job.' || n.status
                         ELSE 'job.progress' END AS type
        FROM new_jobs n JOIN old_jobs o ON o.id = n.id
        WHERE n.status <> o.status
           OR {outputs_n} <> {outputs_o}
    """.format(outputs_n=_OUTPUTS.format(row="n"), outputs_o=_OUTPUTS.format(row="o")),  # noqa: S608 (constants)
}
_WRITE = """
    WITH changed AS ({changed}
    ), numbered AS (
        SELECT c.*, base + row_number() OVER (ORDER BY c.id) - 1 AS event_id FROM changed c
    ), written AS (
        INSERT INTO events (id, account_id, type, job_id, data)
        SELECT event_id, account_id, type, id, to_jsonb(numbered) - 'lease_token' - 'request_hash' - 'type' - 'event_id'
        FROM numbered
        RETURNING id, account_id
    ), hooked AS (
        INSERT INTO webhook_deliveries (event_id, account_id, job_id, url)
        SELECT event_id, account_id, id, webhook_url FROM numbered
        WHERE webhook_url IS NOT NULL AND type = ANY(webhook_events)
        RETURNING id
    )
    SELECT (SELECT count(*) FROM written), (SELECT count(*) FROM hooked),
           (SELECT count(pg_notify('events', a::text)) FROM (SELECT DISTINCT account_id AS a FROM written) d)
      INTO n_written, n_hooks, n_notified;
"""
# A statement's changed rows become its events in one INSERT (plus their webhook deliveries).
#
# Event ids are txid * 4096 + n (n counts the transaction's events so far), so ids follow
# (transaction id, ordinal) order and readers can stop below the oldest running transaction:
# PRODUCTION_ARCHITECTURE.md, "Event ids", has the argument.
RECORD_FUNCTION = f"""
CREATE FUNCTION generation_jobs_record_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    used integer := coalesce(nullif(current_setting('events.n', true), ''), '0')::integer;
    base bigint := (pg_current_xact_id()::text::bigint << 12) + used;
    n_written bigint;
    n_hooks bigint;
    n_notified bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_WRITE.format(changed=_CHANGED["INSERT"])}
    ELSE
        {_WRITE.format(changed=_CHANGED["UPDATE"])}
    END IF;
    IF n_written > 0 THEN
        IF used + n_written > 4096 THEN
            RAISE EXCEPTION 'one transaction may change at most 4096 jobs (event ids per transaction)';
        END IF;
        PERFORM set_config('events.n', (used + n_written)::text, true);
    END IF;
    IF n_hooks > 0 THEN
        PERFORM pg_notify('webhook_deliveries', '');
    END IF;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.add_column("generation_jobs", sa.Column("webhook_url", sa.Text()))
    op.add_column(
        "generation_jobs",
        sa.Column("webhook_events", postgresql.ARRAY(sa.Text()), server_default=sa.text(DEFAULT_WEBHOOK_EVENTS)),
    )
    op.create_table(
        "events",
        # Not a sequence: see RECORD_FUNCTION.
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("account_id", postgresql.UUID(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("job_id", postgresql.UUID()),
        sa.Column("chat_id", postgresql.UUID()),
        # Jobs: a snapshot of the row, rendered like GET /generations/{id} when served
        # (URLs are built, and signed, at read time). Other events: their payload as is.
        sa.Column("data", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("events_account_idx", "events", ["account_id", "id"])
    op.create_index("events_job_idx", "events", ["job_id", "id"], postgresql_where=sa.text("job_id IS NOT NULL"))
    op.create_index("events_chat_idx", "events", ["chat_id", "id"], postgresql_where=sa.text("chat_id IS NOT NULL"))

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", postgresql.UUID(), server_default=sa.text("gen_random_uuid()"), primary_key=True),
        sa.Column("event_id", sa.BigInteger(), sa.ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
        sa.Column("account_id", postgresql.UUID(), nullable=False),
        sa.Column("job_id", postgresql.UUID(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("last_status_code", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="webhook_deliveries_status_check"),
    )
    # The delivery loop's claim reads only this small partial index, in due order.
    op.create_index(
        "webhook_deliveries_due_idx",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("webhook_deliveries_job_idx", "webhook_deliveries", ["job_id", "event_id"])

    op.execute(RECORD_FUNCTION)
    op.execute(
        """
        CREATE TRIGGER generation_jobs_insert_events AFTER INSERT ON generation_jobs
            REFERENCING NEW TABLE AS new_jobs
            FOR EACH STATEMENT EXECUTE FUNCTION generation_jobs_record_events()
        """
    )
    op.execute(
        """
        CREATE TRIGGER generation_jobs_update_events AFTER UPDATE ON generation_jobs
            REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
            FOR EACH STATEMENT EXECUTE FUNCTION generation_jobs_record_events()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS generation_jobs_update_events ON generation_jobs")
    op.execute("DROP TRIGGER IF EXISTS generation_jobs_insert_events ON generation_jobs")
    op.execute("DROP FUNCTION IF EXISTS generation_jobs_record_events()")
    op.drop_table("webhook_deliveries")
    op.drop_table("events")
    op.drop_column("generation_jobs", "webhook_events")
    op.drop_column("generation_jobs", "webhook_url")
