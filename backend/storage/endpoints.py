"""Serving stored outputs over HTTP (local storage)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from backend.deps import ImageStorage
from backend.errors import not_found
from backend.storage.local import LocalStorage

router = APIRouter()


@router.get(
    "/images/{job_id}/{name}",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}},
    tags=["images"],
)
async def get_image(job_id: str, name: str, storage: ImageStorage) -> FileResponse:
    key = f"{job_id}/{name}"
    path = storage.path(key) if isinstance(storage, LocalStorage) else None
    if path is None:
        raise not_found(f"image {key!r}")
    # Keys are never reused for other bytes, so clients and proxies may cache forever.
    return FileResponse(
        path,
        media_type=LocalStorage.content_type(key),
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )
