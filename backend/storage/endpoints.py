"""Serving stored outputs over HTTP: the bytes (local storage) or a redirect to the object store."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from backend.deps import ImageStorage
from backend.errors import PROBLEM_JSON, not_found

router = APIRouter(
    responses={
        404: {"description": "No such output", "content": {PROBLEM_JSON: {}}},
        503: {"description": "Object store unavailable", "content": {PROBLEM_JSON: {}}},
    }
)


@router.get(
    "/images/{job_id}/{name}",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
        302: {"description": "S3 storage: the object store's (presigned or public) URL"},
    },
    tags=["images"],
)
async def get_image(job_id: str, name: str, storage: ImageStorage) -> Response:
    key = f"{job_id}/{name}"
    response = await storage.serve(key)
    if response is None:
        raise not_found(f"image {key!r}")
    return response
