"""Per-account rate limits held in PostgreSQL, so every replica enforces the same one.

The algorithm is GCRA (the generic cell rate algorithm, a leaky bucket kept as one
timestamp): each account has a "theoretical arrival time" `tat`; a request is allowed when
pushing `tat` one emission interval (60 s / limit) further keeps it within a minute of now.
One row per account and limit, one upsert per request: ON CONFLICT DO UPDATE locks the row and
re-reads its latest version, so two replicas racing for the last request cannot both win.

Job creation also checks the account's backlog (MAX_PENDING_JOBS_PER_KEY) in the same
statement: a full queue takes no token, and a refused request creates nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from backend.accounts import Account
from backend.config import Settings
from backend.db import fetch_pooled
from backend.errors import Problem

WINDOW_SECONDS = 60
POLICY = "create"

# $1 account, $2 limit name, $3 emission interval (s), $4 window (s), $5 backlog cap (0 = none).
# The backlog count stops at the cap, so a huge queue costs no more than a full one.
_TAKE_SQL = """
WITH backlog AS (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM generation_jobs WHERE account_id = $1 AND status = 'pending' AND $5 > 0 LIMIT $5
    ) pending
), prior AS (
    SELECT tat FROM rate_limits WHERE account_id = $1 AND name = $2
), taken AS (
    INSERT INTO rate_limits AS r (account_id, name, tat)
    SELECT $1, $2, now() + make_interval(secs => $3)
    WHERE $3 > 0 AND ($5 = 0 OR (SELECT n FROM backlog) < $5)
    ON CONFLICT (account_id, name) DO UPDATE SET tat = greatest(r.tat, now()) + make_interval(secs => $3)
    WHERE greatest(r.tat, now()) + make_interval(secs => $3) <= now() + make_interval(secs => $4)
    RETURNING tat
)
SELECT (SELECT n FROM backlog) AS backlog, (SELECT tat FROM taken) AS taken,
       (SELECT tat FROM prior) AS prior, now() AS now
"""
_BACKLOG_SQL = """
SELECT count(*) FROM (
    SELECT 1 FROM generation_jobs WHERE account_id = $1 AND status = 'pending' LIMIT $2
) pending
"""


@dataclass(frozen=True)
class Decision:
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        """The IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers)."""
        return {
            "RateLimit-Policy": f'"{POLICY}";q={self.limit};w={WINDOW_SECONDS}',
            "RateLimit": f'"{POLICY}";r={self.remaining};t={self.reset_seconds}',
        }


class RateLimiter:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool  # the hot statements' pool: one more per creating request
        self.default_limit = settings.rate_limit_per_minute
        self.max_pending = settings.max_pending_jobs_per_key

    def limit_of(self, account: Account) -> int:
        return self.default_limit if account.rate_limit_per_minute is None else account.rate_limit_per_minute

    async def take(self, account: Account, *, backlog: bool = False) -> Decision | None:
        """Spend one creating request, or raise 429; None when no limit applies to this account."""
        limit = self.limit_of(account)
        cap = self.max_pending if backlog else 0
        if limit == 0 and cap == 0:
            return None
        if limit == 0:
            (pending,) = (await fetch_pooled(self.pool, _BACKLOG_SQL, account.id, cap))[0]
            if pending >= cap:
                raise queue_full(cap)
            return None
        interval = WINDOW_SECONDS / limit
        row = (await fetch_pooled(self.pool, _TAKE_SQL, account.id, POLICY, interval, WINDOW_SECONDS, cap))[0]
        if cap and row["backlog"] >= cap:
            raise queue_full(cap)
        now: datetime = row["now"]
        if row["taken"] is None:
            prior: datetime | None = row["prior"]
            # When a request may pass again: once `tat` is back within the window.
            wait = (prior - now).total_seconds() + interval - WINDOW_SECONDS if prior else 1.0
            decision = Decision(limit, 0, max(1, math.ceil(wait)))
            raise rate_limited(decision)
        ahead = (row["taken"] - now).total_seconds()  # how far the bucket is from empty
        remaining = max(0, math.floor((WINDOW_SECONDS - ahead) / interval))
        return Decision(limit, remaining, max(0, math.ceil(ahead)))


def rate_limited(decision: Decision) -> Problem:
    return Problem(
        429,
        "rate_limited",
        "Too many requests",
        f"this API key may make {decision.limit} creating requests per minute; retry in {decision.reset_seconds} s",
        headers={**decision.headers(), "Retry-After": str(decision.reset_seconds)},
    )


def queue_full(cap: int) -> Problem:
    return Problem(
        429,
        "queue_full",
        "Too many pending jobs",
        f"this API key already has {cap} pending jobs (MAX_PENDING_JOBS_PER_KEY); retry when some have started",
        headers={"Retry-After": "5"},
    )
