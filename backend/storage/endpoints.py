"""Serving stored outputs over HTTP: the bytes (local storage) or a redirect to the object store."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from backend.deps import CurrentAccount, ImageStorage, Service
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
async def get_image(
    job_id: str, name: str, request: Request, storage: ImageStorage, service: Service, account: CurrentAccount
) -> Response:
    """A job's output. With AUTH_REQUIRED=true: by its signed URL, or with the owner's key."""
    if request.app.state.settings.auth_required and not getattr(request.state, "signed_url", False):
        await service.get(account, job_id)  # another account's job: 404
    key = f"{job_id}/{name}"
    response = await storage.serve(key)
    if response is None:
        raise not_found(f"image {key!r}")
    return response
