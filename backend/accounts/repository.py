"""Every SQL statement about accounts and their keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.accounts import ANONYMOUS_ACCOUNT_ID, Account

_ACCOUNT = "id, name, webhook_secret, rate_limit_per_minute, max_concurrent"


@dataclass(frozen=True)
class KeyInfo:
    """What `keys list` shows: never the key, only a hint to tell keys apart."""

    id: uuid.UUID
    name: str
    key_hint: str | None
    rate_limit_per_minute: int | None
    max_concurrent: int | None
    created_at: datetime
    revoked_at: datetime | None


def _account(row: Any) -> Account:
    return Account(row.id, row.name, row.webhook_secret, row.rate_limit_per_minute, row.max_concurrent)


class AccountRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def create(
        self,
        *,
        name: str,
        key_hash: bytes,
        key_hint: str,
        webhook_secret: str,
        rate_limit_per_minute: int | None,
        max_concurrent: int | None,
    ) -> Account:
        stmt = text(
            f"""
            INSERT INTO accounts (name, key_hash, key_hint, webhook_secret, rate_limit_per_minute, max_concurrent)
            VALUES (:name, :key_hash, :key_hint, :webhook_secret, :rate, :max_concurrent)
            RETURNING {_ACCOUNT}
            """
        )
        params = {
            "name": name,
            "key_hash": key_hash,
            "key_hint": key_hint,
            "webhook_secret": webhook_secret,
            "rate": rate_limit_per_minute,
            "max_concurrent": max_concurrent,
        }
        async with self.engine.connect() as connection:
            return _account((await connection.execute(stmt, params)).one())

    async def by_key_hash(self, key_hash: bytes) -> Account | None:
        """The live account holding this key; None when unknown or revoked."""
        stmt = text(f"SELECT {_ACCOUNT} FROM accounts WHERE key_hash = :hash AND revoked_at IS NULL")
        async with self.engine.connect() as connection:
            row = (await connection.execute(stmt, {"hash": key_hash})).first()
        return _account(row) if row is not None else None

    async def get(self, account_id: uuid.UUID) -> Account | None:
        stmt = text(f"SELECT {_ACCOUNT} FROM accounts WHERE id = :id")
        async with self.engine.connect() as connection:
            row = (await connection.execute(stmt, {"id": account_id})).first()
        return _account(row) if row is not None else None

    async def keys(self) -> list[KeyInfo]:
        stmt = text(
            """
            SELECT id, name, key_hint, rate_limit_per_minute, max_concurrent, created_at, revoked_at
            FROM accounts WHERE id <> :anonymous ORDER BY created_at, id
            """
        )
        async with self.engine.connect() as connection:
            rows = await connection.execute(stmt, {"anonymous": ANONYMOUS_ACCOUNT_ID})
            return [KeyInfo(*row) for row in rows]

    async def revoke(self, account_id: uuid.UUID) -> bool:
        """Revoke the account's key; False when there is no such key (or it is the anonymous account)."""
        stmt = text(
            """
            UPDATE accounts SET revoked_at = coalesce(revoked_at, now())
            WHERE id = :id AND key_hash IS NOT NULL RETURNING id
            """
        )
        async with self.engine.connect() as connection:
            return (await connection.execute(stmt, {"id": account_id})).first() is not None
