"""Every SQL statement of events and webhook deliveries.

Reads stop at the horizon: the oldest transaction still running, shifted into event-id space.
Every event below it has committed (or never will), and every event that commits later gets a
larger id, so a reader that only moves its cursor below the horizon never skips one.
PRODUCTION_ARCHITECTURE.md, "Event ids", has the argument. Each method is one autocommitted
statement, sent with asyncpg like the job repository's hot statements.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backend.db import fetch_raw
from backend.events.models import ID_SHIFT, TERMINAL_TYPES, Delivery, Event, deliveries

_HORIZON = f"(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {ID_SHIFT})"
_EVENT_COLUMNS = "e.id, e.account_id, e.type, e.job_id, e.chat_id, e.data::text, e.created_at"
# The horizon rides along with the page, so one round trip says both what is there and
# whether some of it must wait for an older transaction to finish.
_PAGE = f"""
SELECT h.horizon, {_EVENT_COLUMNS}
FROM (SELECT {_HORIZON} AS horizon) h
LEFT JOIN LATERAL (SELECT * FROM events WHERE {{where}} AND id > $2 ORDER BY id LIMIT $3) e ON true
"""
_BY_ACCOUNT = _PAGE.format(where="account_id = $1")
_BY_JOB = _PAGE.format(where="job_id = $1")
_BY_CHAT = _PAGE.format(where="chat_id = $1")
_DELIVERY_COLUMNS = ", ".join(f"d.{column.name}" for column in deliveries.c)


@dataclass(frozen=True, slots=True)
class Page:
    """Events after a cursor that are safe to hand out, and whether later committed ones wait."""

    events: list[Event]
    blocked: bool
    full: bool


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery taken by one delivery loop, with what it needs to send it."""

    delivery: Delivery
    event: Event
    secret: str | None


def _page(records: list[asyncpg.Record], limit: int) -> Page:
    horizon = records[0][0]
    found = [Event(*record[1:]) for record in records if record[1] is not None]
    safe = [event for event in found if event.id < horizon]
    return Page(safe, blocked=len(safe) < len(found), full=len(found) == limit)


class EventRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def _fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        return await fetch_raw(self.engine, sql, *args)

    async def horizon(self) -> int:
        """The first event id that might still be committed by a running transaction."""
        return int((await self._fetch(f"SELECT {_HORIZON}"))[0][0])

    async def account_page(self, account_id: uuid.UUID, after: int, limit: int) -> Page:
        return _page(await self._fetch(_BY_ACCOUNT, account_id, after, limit), limit)

    async def job_page(self, job_id: uuid.UUID, after: int, limit: int) -> Page:
        return _page(await self._fetch(_BY_JOB, job_id, after, limit), limit)

    async def chat_page(self, chat_id: uuid.UUID, after: int, limit: int) -> Page:
        return _page(await self._fetch(_BY_CHAT, chat_id, after, limit), limit)

    async def terminal_id(self, job_id: uuid.UUID) -> int | None:
        """The id of the job's terminal event, committed or not yet below the horizon."""
        sql = "SELECT max(id) FROM events WHERE job_id = $1 AND type = ANY($2::text[])"
        found = (await self._fetch(sql, job_id, sorted(TERMINAL_TYPES)))[0][0]
        return int(found) if found is not None else None

    async def append(
        self,
        account_id: uuid.UUID,
        type_: str,
        data: dict[str, Any],
        *,
        job_id: uuid.UUID | None = None,
        chat_id: uuid.UUID | None = None,
    ) -> int:
        """Write one event that no job change writes (chat's), with the same id rule as the trigger."""
        return int((await self._fetch(_APPEND, account_id, type_, job_id, chat_id, data_text(data)))[0][0])

    # Webhook deliveries -----------------------------------------------------------------

    async def claim_deliveries(self, limit: int, lease_seconds: float) -> list[Claimed]:
        """Take due deliveries; the claim pushes next_attempt_at out as a lease, so a process that
        dies mid-delivery leaves the row due again after the lease, for any replica to retry."""
        records = await self._fetch(_CLAIM_DELIVERIES, limit, lease_seconds)
        return [
            Claimed(Delivery.from_row(record), Event(*record[len(deliveries.c) : len(deliveries.c) + 7]), record[-1])
            for record in records
        ]

    async def delivery_done(self, delivery_id: uuid.UUID, attempt: int, status_code: int) -> bool:
        """Record a 2xx; fenced by the attempt number, so a stale sender cannot overwrite a newer one."""
        sql = """
            UPDATE webhook_deliveries SET status = 'delivered', last_status_code = $3, last_error = NULL,
                delivered_at = now(), updated_at = now()
            WHERE id = $1 AND attempts = $2 AND status = 'pending' RETURNING id
        """
        return bool(await self._fetch(sql, delivery_id, attempt, status_code))

    async def delivery_failed(
        self, delivery_id: uuid.UUID, attempt: int, status_code: int | None, error: str, retry_in: float | None
    ) -> bool:
        """Record a failed attempt: due again after `retry_in` seconds, or failed for good (None)."""
        sql = """
            UPDATE webhook_deliveries SET last_status_code = $3, last_error = $4, updated_at = now(),
                status = CASE WHEN $5::float8 IS NULL THEN 'failed' ELSE 'pending' END,
                next_attempt_at = CASE WHEN $5::float8 IS NULL THEN next_attempt_at
                                       ELSE now() + make_interval(secs => $5::float8) END
            WHERE id = $1 AND attempts = $2 AND status = 'pending' RETURNING id
        """
        return bool(await self._fetch(sql, delivery_id, attempt, status_code, error[:1000], retry_in))

    async def list_deliveries(self, job_id: uuid.UUID, after: int, limit: int) -> list[tuple[Delivery, str]]:
        """A job's deliveries in event order (one per event), each with its event's type."""
        sql = (
            f"SELECT {_DELIVERY_COLUMNS}, e.type FROM webhook_deliveries d JOIN events e ON e.id = d.event_id"
            " WHERE d.job_id = $1 AND d.event_id > $2 ORDER BY d.event_id LIMIT $3"
        )
        records = await self._fetch(sql, job_id, after, limit)
        return [(Delivery.from_row(record), record[-1]) for record in records]

    async def redeliver(self, job_id: uuid.UUID, delivery_id: uuid.UUID) -> tuple[Delivery, str] | None:
        """Make a delivery due now with a fresh set of attempts (same webhook-id)."""
        sql = f"""
            WITH again AS (
                UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(),
                    delivered_at = NULL, updated_at = now()
                WHERE id = $1 AND job_id = $2
                RETURNING *
            )
            SELECT {_DELIVERY_COLUMNS}, e.type, pg_notify('webhook_deliveries', '')
            FROM again d JOIN events e ON e.id = d.event_id
        """
        records = await self._fetch(sql, delivery_id, job_id)
        return (Delivery.from_row(records[0]), records[0][-2]) if records else None

    async def account_secret(self, account_id: uuid.UUID, generated: str) -> str:
        """The account's webhook secret; one is generated and kept the first time it is needed."""
        sql = """
            UPDATE accounts SET webhook_secret = coalesce(webhook_secret, $2) WHERE id = $1
            RETURNING webhook_secret
        """
        records = await self._fetch(sql, account_id, generated)
        return str(records[0][0]) if records else generated


async def append_in(
    connection: AsyncConnection,
    account_id: uuid.UUID,
    type_: str,
    data: dict[str, Any],
    *,
    job_id: uuid.UUID | None = None,
    chat_id: uuid.UUID | None = None,
) -> int:
    """As EventRepository.append, inside the caller's open transaction: the event commits (or
    vanishes) with the change it reports, and follows the trigger's id rule within it."""
    raw: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
    records = await raw.fetch(_APPEND, account_id, type_, job_id, chat_id, data_text(data))
    return int(records[0][0])


def data_text(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), default=str)


_APPEND = f"""
WITH n AS (
    SELECT coalesce(nullif(current_setting('events.n', true), ''), '0')::integer AS used
), ins AS (
    INSERT INTO events (id, account_id, type, job_id, chat_id, data)
    SELECT (pg_current_xact_id()::text::bigint << {ID_SHIFT}) + n.used, $1, $2, $3, $4, $5::jsonb FROM n
    RETURNING id, account_id
)
SELECT ins.id, set_config('events.n', ((SELECT used FROM n) + 1)::text, true), pg_notify('events', ins.account_id::text)
FROM ins
"""
_CLAIM_DELIVERIES = f"""
WITH due AS (
    SELECT id FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at LIMIT $1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries d SET attempts = d.attempts + 1, updated_at = now(),
        next_attempt_at = now() + make_interval(secs => $2::float8)
    FROM due WHERE d.id = due.id
    RETURNING d.*
)
SELECT {_DELIVERY_COLUMNS}, {_EVENT_COLUMNS}, a.webhook_secret
FROM claimed d JOIN events e ON e.id = d.event_id LEFT JOIN accounts a ON a.id = d.account_id
"""
