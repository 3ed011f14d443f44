"""Where outputs and uploads live: the storage interface, and the key scheme every backend shares."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from starlette.responses import Response

    from backend.config import Settings
    from backend.signing import UrlSigner

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "video/mp4": "mp4"}
# Output keys are "<job uuid>/<attempt>-<index>.<ext>" ("<job uuid>/<index>.<ext>" before
# attempts had their own): nothing a client sends can name another path.
KEY_PATTERN = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/(\d{1,6}-)?\d{1,4}\.(png|jpg|webp|mp4)$"
)


def image_key(job_id: uuid.UUID, attempt: int, index: int, content_type: str) -> str:
    """Each attempt writes its own files: a worker that lost its lease and cleans up after
    itself cannot touch what the attempt that took the job over wrote."""
    return f"{job_id}/{attempt}-{index}.{EXTENSIONS.get(content_type, 'png')}"


def job_prefix(job_id: uuid.UUID) -> str:
    return f"{job_id}/"


def upload_key(upload_id: uuid.UUID) -> str:
    return f"uploads/{upload_id}"


class StorageUnavailable(Exception):
    """The object store could not be reached or failed; the request or job may be retried."""

    code = "storage_unavailable"


class ObjectTooLarge(Exception):
    """An object is larger than the caller is willing to read."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the object is {size} bytes")
        self.size = size


@dataclass(frozen=True)
class UploadTarget:
    """Where and how a client sends an upload's bytes."""

    url: str
    headers: dict[str, str]
    expires_at: datetime


class Storage(Protocol):
    """An object store for outputs (`<job>/<i>.<ext>`) and uploads (`uploads/<id>`).

    Every method that talks to the store raises StorageUnavailable when it cannot.
    """

    name: str

    async def save(self, key: str, data: bytes, content_type: str) -> None: ...

    async def read(self, key: str, limit: int) -> bytes | None:
        """The object's bytes, None if absent; ObjectTooLarge if it holds more than `limit` bytes."""
        ...

    async def delete(self, keys: list[str]) -> None: ...

    async def delete_prefix(self, prefix: str) -> None:
        """Remove every object under a prefix (a job's outputs)."""
        ...

    def url(self, key: str, base_url: str) -> str:
        """The URL handed to clients for an output; it works for as long as the object exists."""
        ...

    async def serve(self, key: str) -> Response | None:
        """The answer to GET on the app's own URL for a key (the bytes, or a redirect); None if absent."""
        ...

    async def upload_target(self, key: str, content_type: str, size: int, base_url: str) -> UploadTarget:
        """A URL the client PUTs an upload's bytes to, valid for a while."""
        ...

    async def close(self) -> None: ...


def build_storage(settings: Settings, signer: UrlSigner) -> Storage:
    """The backend STORAGE_BACKEND names."""
    if settings.storage_backend == "s3":
        from backend.storage.s3 import S3Storage

        return S3Storage(settings)
    from backend.storage.local import LocalStorage

    return LocalStorage(settings.data_dir / "images", signer)
