"""The default storage: files under DATA_DIR, served by the app; uploads go to a signed app URL."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from starlette.responses import FileResponse, Response

from backend.signing import UrlSigner
from backend.storage import KEY_PATTERN, ObjectTooLarge, UploadTarget

UPLOAD_URL_TTL = 3600


class LocalStorage:
    """Files under `root`; written to a temp name and renamed, so readers never see half a file."""

    name = "local"

    def __init__(self, root: Path, signer: UrlSigner) -> None:
        self.root = root
        self.signer = signer

    async def save(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._write, self.root / key, data)

    async def read(self, key: str, limit: int) -> bytes | None:
        return await asyncio.to_thread(self._read, self.root / key, limit)

    async def delete(self, keys: list[str]) -> None:
        await asyncio.to_thread(_unlink_all, [self.root / key for key in keys])

    async def delete_prefix(self, prefix: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.root / prefix, True)

    def url(self, key: str, base_url: str) -> str:
        return f"{base_url}/images/{key}"

    async def serve(self, key: str) -> Response | None:
        path = self.path(key)
        if path is None:
            return None
        # Keys are never reused for other bytes, so clients and proxies may cache forever.
        return FileResponse(
            path,
            media_type=self.content_type(key),
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )

    async def upload_target(self, key: str, content_type: str, size: int, base_url: str) -> UploadTarget:
        upload_id = key.removeprefix("uploads/")
        path = f"/uploads/{upload_id}/content"
        expires = int(time.time()) + UPLOAD_URL_TTL
        return UploadTarget(
            url=f"{base_url}{path}?{self.signer.query('PUT', path, expires)}",
            headers={"Content-Type": content_type},
            expires_at=datetime.fromtimestamp(expires, UTC),
        )

    async def close(self) -> None:
        return None

    def path(self, key: str) -> Path | None:
        """The file for an output key a client asked for, or None if the key is not one of ours."""
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

    @staticmethod
    def _read(path: Path, limit: int) -> bytes | None:
        try:
            with path.open("rb") as file:
                data = file.read(limit + 1)
        except FileNotFoundError:
            return None
        if len(data) > limit:
            raise ObjectTooLarge(path.stat().st_size)
        return data


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
