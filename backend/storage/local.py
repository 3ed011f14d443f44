"""The default storage: files under DATA_DIR, served by the app."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import shutil
import uuid
from pathlib import Path

from backend.storage import KEY_PATTERN


class LocalStorage:
    """Files under `root`; written to a temp name and renamed, so readers never see half a file."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def save(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, self.root / key, data)

    async def read(self, key: str) -> bytes:
        return await asyncio.to_thread((self.root / key).read_bytes)

    async def delete_job(self, job_id: uuid.UUID) -> None:
        await asyncio.to_thread(shutil.rmtree, self.root / str(job_id), True)

    def url(self, key: str, base_url: str) -> str:
        return f"{base_url}/images/{key}"

    def path(self, key: str) -> Path | None:
        """The file for a key a client asked for, or None if the key is not one of ours."""
        if not KEY_PATTERN.fullmatch(key):
            return None
        path = self.root / key
        return path if path.is_file() else None

    @staticmethod
    def content_type(key: str) -> str:
        return mimetypes.guess_type(key)[0] or "application/octet-stream"

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
