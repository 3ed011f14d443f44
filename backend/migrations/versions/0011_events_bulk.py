"""Events: 65,536 ids per transaction (bulk statements of up to that many jobs), and an opt-out
for bulk maintenance (`SET LOCAL generation_jobs.events = 'off'`).

Revision ID: events_bulk
Revises: app_secrets
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from alembic import op

revision: str = "events_bulk"
down_revision: str | None = "app_secrets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

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


def _function(shift: int, per_transaction: int, opt_out: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION generation_jobs_record_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    used integer := coalesce(nullif(current_setting('events.n', true), ''), '0')::integer;
    base bigint := (pg_current_xact_id()::text::bigint << {shift}) + used;
    n_written bigint;
    n_hooks bigint;
    n_notified bigint;
BEGIN
    {opt_out}
    IF TG_OP = 'INSERT' THEN
        {_WRITE.format(changed=_CHANGED["INSERT"])}
    ELSE
        {_WRITE.format(changed=_CHANGED["UPDATE"])}
    END IF;
    IF n_written > 0 THEN
        IF used + n_written > {per_transaction} THEN
            RAISE EXCEPTION 'one transaction may change at most {per_transaction} jobs (event ids per transaction)'
                USING HINT = 'split it, or SET LOCAL generation_jobs.events = ''off'' to write no events';
        END IF;
        PERFORM set_config('events.n', (used + n_written)::text, true);
    END IF;
    IF n_hooks > 0 THEN
        PERFORM pg_notify('webhook_deliveries', '');
    END IF;
    RETURN NULL;
END $$
"""


# Ids of events already written (txid << 12) stay below every new one (txid << 16 of a later
# transaction), so order across the change holds. JavaScript reads ids exactly up to 2^53,
# i.e. for 2^37 (1.4e11) write transactions.
OPT_OUT = "IF current_setting('generation_jobs.events', true) = 'off' THEN RETURN NULL; END IF;"


def upgrade() -> None:
    op.execute(_function(16, 65536, OPT_OUT))


def downgrade() -> None:
    op.execute(_function(12, 4096, ""))
