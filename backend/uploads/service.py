"""The rules of uploads: what may be announced, received, named as a job's input, and swept."""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
import warnings
from collections.abc import AsyncIterator

from PIL import Image

from backend.accounts import Account
from backend.config import Settings
from backend.db import database_down
from backend.errors import FieldError, Problem, not_found, validation_problem
from backend.storage import ObjectTooLarge, Storage, StorageUnavailable, UploadTarget, upload_key
from backend.uploads.models import ALLOWED_TYPES, Upload
from backend.uploads.repository import UploadRepository

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 60.0
# Pillow's own bomb check stops at ~179 megapixels; an input picture needs far fewer.
MAX_INPUT_PIXELS = 50_000_000
_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


class UploadService:
    def __init__(self, repo: UploadRepository, storage: Storage, settings: Settings) -> None:
        self.repo = repo
        self.storage = storage
        self.settings = settings

    async def create(
        self, account: Account, file_name: str, content_type: str, size: int, base_url: str
    ) -> tuple[Upload, UploadTarget]:
        content_type = content_type.split(";")[0].strip().lower()
        if content_type not in ALLOWED_TYPES:
            raise Problem(
                415,
                "unsupported_media_type",
                "Unsupported media type",
                f"contentType {content_type!r} is not accepted; use one of {', '.join(ALLOWED_TYPES)}",
                [FieldError("contentType", f"must be one of {', '.join(ALLOWED_TYPES)}", "unsupported")],
            )
        if size > self.settings.max_upload_bytes:
            raise self._too_large(size)
        upload = await self.repo.create(account.id, file_name, content_type, size)
        target = await self.storage.upload_target(upload_key(upload.id), content_type, size, base_url)
        return upload, target

    def _too_large(self, size: int) -> Problem:
        limit = self.settings.max_upload_bytes
        return Problem(
            413,
            "upload_too_large",
            "Upload too large",
            f"the upload is {size} bytes; at most {limit} (MAX_UPLOAD_BYTES) are accepted",
            [FieldError("size", f"must be at most {limit} (MAX_UPLOAD_BYTES)", "too_large")],
        )

    async def get(self, account: Account, upload_id: str) -> Upload:
        parsed = _parse_uuid(upload_id)
        upload = await self.repo.get(parsed, account.id) if parsed else None
        if upload is None:
            raise not_found(f"upload {upload_id!r}")
        return upload

    async def receive(
        self, upload_id: str, content_type: str, declared_length: int | None, body: AsyncIterator[bytes]
    ) -> Upload:
        """Store the bytes PUT to a (signature-checked) local upload URL."""
        parsed = _parse_uuid(upload_id)
        upload = await self.repo.get(parsed) if parsed else None
        if upload is None:
            raise not_found(f"upload {upload_id!r}")
        if content_type.split(";")[0].strip().lower() != upload.content_type:
            raise Problem(
                415,
                "unsupported_media_type",
                "Unsupported media type",
                f"send the bytes as {upload.content_type}, the contentType this upload was announced with",
            )
        limit = min(upload.size, self.settings.max_upload_bytes)
        if declared_length is not None and declared_length > limit:
            raise self._too_large(declared_length)
        chunks, size = [], 0
        async for chunk in body:
            size += len(chunk)
            if size > limit:
                raise self._too_large(size)
            chunks.append(chunk)
        await self.storage.save(upload_key(upload.id), b"".join(chunks), upload.content_type)
        await self.repo.mark_uploaded(upload.id)
        return upload

    async def claim_inputs(self, account: Account, raw_ids: list[str]) -> list[uuid.UUID]:
        """Check every input a job names, then mark them used; a 422 names each bad one."""
        errors: list[FieldError] = []
        named: dict[uuid.UUID, int] = {}
        for index, raw in enumerate(raw_ids):
            parsed = _parse_uuid(raw)
            field = f"inputImages.{index}"
            if parsed is None:
                errors.append(FieldError(field, f"{raw!r} is not an upload id", "unknown_upload"))
            elif parsed in named:
                errors.append(FieldError(field, f"upload {raw} is named twice", "duplicate"))
            else:
                named[parsed] = index
        owned = await self.repo.owned(list(named), account.id) if named else {}
        found = await asyncio.gather(
            *(self._check(index, upload_id, owned.get(upload_id)) for upload_id, index in named.items())
        )
        errors.extend(error for error in found if error is not None)
        if errors:
            raise validation_problem(sorted(errors, key=lambda e: e.field))
        await self.repo.mark_used(list(named))
        return list(named)

    async def _check(self, index: int, upload_id: uuid.UUID, upload: Upload | None) -> FieldError | None:
        field, raw = f"inputImages.{index}", str(upload_id)
        if upload is None:
            # Another account's upload is as unknown as one that never existed.
            return FieldError(field, f"upload {raw} does not exist", "unknown_upload")
        limit = min(upload.size, self.settings.max_upload_bytes)
        try:
            data = await self.storage.read(upload_key(upload.id), limit)
        except ObjectTooLarge as exc:
            return FieldError(
                field, f"upload {raw} is {exc.size} bytes, more than the {limit} announced or allowed", "too_large"
            )
        if data is None:
            return FieldError(field, f"upload {raw} has not been uploaded yet (PUT its bytes first)", "not_uploaded")
        problem = await asyncio.to_thread(_decode_problem, data)
        if problem is not None:
            return FieldError(field, f"upload {raw} {problem}", "undecodable")
        return None

    async def sweep(self) -> int:
        """Delete uploads never used within UPLOAD_TTL_HOURS, rows first then their bytes."""
        total = 0
        while expired := await self.repo.take_expired(self.settings.upload_ttl_hours):
            total += len(expired)
            # A store failure here leaves orphaned bytes, never a row whose bytes are gone.
            await self.storage.delete([upload_key(upload_id) for upload_id in expired])
        if total:
            log.info("deleted %d upload(s) unused for %gh", total, self.settings.upload_ttl_hours)
        return total


async def sweep_forever(uploads: UploadService, interval: float = SWEEP_INTERVAL) -> None:
    """The background sweep of unused uploads; an outage of either store only delays it."""
    while True:
        try:
            await uploads.sweep()
        except StorageUnavailable as exc:
            log.warning("upload sweep: %s", exc)
        except Exception as exc:
            if not database_down(exc):
                raise
            log.warning("upload sweep: database unavailable: %s", exc)
        await asyncio.sleep(interval)


def _decode_problem(data: bytes) -> str | None:
    """Why these bytes are not a usable PNG, JPEG or WebP picture; None if they are one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in _FORMATS:
                    return f"is {image.format or 'an unknown format'}, not PNG, JPEG or WebP"
                if image.width * image.height > MAX_INPUT_PIXELS:
                    return f"is {image.width}x{image.height}, more than {MAX_INPUT_PIXELS} pixels"
                image.load()  # decodes every pixel: a truncated or corrupt file fails here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "is not a decodable PNG, JPEG or WebP image"
    return None


def _parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
