"""Every SQL statement about uploads; each one statement in autocommit."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Executable, func, insert, select, text, update
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.uploads.models import Upload, uploads


class UploadRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def _run(self, stmt: Executable, params: dict[str, Any] | None = None) -> Result[Any]:
        async with self.engine.connect() as connection:
            return await connection.execute(stmt, params)

    async def create(self, account_id: uuid.UUID, file_name: str, content_type: str, size: int) -> Upload:
        stmt = (
            insert(uploads)
            .values(account_id=account_id, file_name=file_name, content_type=content_type, size=size)
            .returning(*uploads.c)
        )
        return Upload.from_row((await self._run(stmt)).one())

    async def get(self, upload_id: uuid.UUID, account_id: uuid.UUID | None = None) -> Upload | None:
        """One upload; with `account_id`, only if that account owns it."""
        stmt = select(*uploads.c).where(uploads.c.id == upload_id)
        if account_id is not None:
            stmt = stmt.where(uploads.c.account_id == account_id)
        row = (await self._run(stmt)).first()
        return Upload.from_row(row) if row is not None else None

    async def owned(self, ids: list[uuid.UUID], account_id: uuid.UUID) -> dict[uuid.UUID, Upload]:
        stmt = select(*uploads.c).where(uploads.c.id.in_(ids), uploads.c.account_id == account_id)
        return {upload.id: upload for upload in map(Upload.from_row, await self._run(stmt))}

    async def mark_uploaded(self, upload_id: uuid.UUID) -> None:
        await self._run(update(uploads).where(uploads.c.id == upload_id).values(uploaded_at=func.now()))

    async def mark_used(self, ids: list[uuid.UUID]) -> None:
        stmt = update(uploads).where(uploads.c.id.in_(ids), uploads.c.used_at.is_(None)).values(used_at=func.now())
        await self._run(stmt)

    async def take_expired(self, older_than_hours: float, batch: int = 500) -> list[uuid.UUID]:
        """Delete up to `batch` never-used uploads older than the TTL; return their ids.

        SKIP LOCKED lets every replica sweep at once without handing one upload to two of them.
        """
        stmt = text(
            """
            DELETE FROM uploads WHERE id IN (
                SELECT id FROM uploads
                WHERE used_at IS NULL AND created_at < now() - make_interval(secs => :secs)
                ORDER BY created_at LIMIT :batch FOR UPDATE SKIP LOCKED
            ) RETURNING id
            """
        )
        return list((await self._run(stmt, {"secs": older_than_hours * 3600, "batch": batch})).scalars())
