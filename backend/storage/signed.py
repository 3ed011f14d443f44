"""Expiring app URLs for stored files, for AUTH_REQUIRED=true: `<img src>` needs no header.

Wraps any storage: the URLs it hands out that point at the app itself (`/images/…`) carry
`expires` and `signature` (see backend/signing.py); public object-store URLs are left alone.
A guessed, altered or expired URL is refused by AuthMiddleware (403).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from backend.signing import UrlSigner
from backend.storage import Storage, UploadTarget

if TYPE_CHECKING:
    from starlette.responses import Response


class SignedUrlStorage:
    def __init__(self, inner: Storage, signer: UrlSigner, ttl: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.signer = signer
        self.ttl = ttl

    def url(self, key: str, base_url: str) -> str:
        url = self.inner.url(key, base_url)
        if not url.startswith(base_url + "/"):
            return url
        path = url[len(base_url) :]
        # Rounded up to the minute: a page listing many jobs gets the same URL for a file across
        # requests for a while, so browsers can cache it.
        expires = (int(time.time()) + self.ttl) // 60 * 60 + 60
        return f"{url}?{self.signer.query('GET', path, expires)}"

    async def save(self, key: str, data: bytes, content_type: str) -> None:
        await self.inner.save(key, data, content_type)

    async def read(self, key: str, limit: int) -> bytes | None:
        return await self.inner.read(key, limit)

    async def delete(self, keys: list[str]) -> None:
        await self.inner.delete(keys)

    async def delete_prefix(self, prefix: str) -> None:
        await self.inner.delete_prefix(prefix)

    async def serve(self, key: str) -> Response | None:
        return await self.inner.serve(key)

    async def upload_target(self, key: str, content_type: str, size: int, base_url: str) -> UploadTarget:
        return await self.inner.upload_target(key, content_type, size, base_url)

    async def close(self) -> None:
        await self.inner.close()
