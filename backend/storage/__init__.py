"""Where outputs live: the storage interface, and the key scheme every backend shares."""

from __future__ import annotations

import re
import uuid
from typing import Protocol

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
# Keys are "<job uuid>/<index>.<ext>": nothing a client sends can name another path.
KEY_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/\d{1,4}\.(png|jpg|webp)$")


def image_key(job_id: uuid.UUID, index: int, content_type: str) -> str:
    return f"{job_id}/{index}.{EXTENSIONS.get(content_type, 'png')}"


class Storage(Protocol):
    async def save(self, key: str, data: bytes) -> None: ...

    async def read(self, key: str) -> bytes: ...

    async def delete_job(self, job_id: uuid.UUID) -> None: ...

    def url(self, key: str, base_url: str) -> str: ...
