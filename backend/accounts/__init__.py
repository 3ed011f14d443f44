"""Accounts: who owns a job. One API key is one account; requests without one are anonymous."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

# The built-in account of requests that present no (valid) key; seeded by the `accounts` migration.
ANONYMOUS_ACCOUNT_ID = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class Account:
    id: uuid.UUID
    name: str
    # The Standard Webhooks secret (`whsec_…`) that signs this account's webhooks.
    webhook_secret: str | None = None
    # Per-key overrides of RATE_LIMIT_PER_MINUTE and MAX_CONCURRENT_JOBS_PER_KEY.
    rate_limit_per_minute: int | None = None
    max_concurrent: int | None = None


ANONYMOUS = Account(ANONYMOUS_ACCOUNT_ID, "anonymous")
