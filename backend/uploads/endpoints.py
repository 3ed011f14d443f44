"""HTTP routes for uploads: announce one, and (local storage) receive its bytes at a signed URL."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from backend.deps import CurrentAccount, RateLimited, base_url
from backend.errors import PROBLEM_JSON, Problem
from backend.signing import UrlSigner
from backend.uploads.schemas import UploadCreate, UploadInfo, UploadOut
from backend.uploads.service import UploadService

# The one route whose body is not JSON: the JSON-body middleware lets it through.
CONTENT_PATH = re.compile(r"^/uploads/[^/]+/content$")

router = APIRouter(
    tags=["uploads"],
    responses={
        code: {"description": description, "content": {PROBLEM_JSON: {}}}
        for code, description in [
            (403, "Missing, invalid or expired upload signature"),
            (404, "No such upload"),
            (413, "Larger than MAX_UPLOAD_BYTES or than announced"),
            (415, "Not image/png, image/jpeg or image/webp"),
            (422, "Invalid request; `errors` names each field"),
            (503, "Database or object store unavailable"),
        ]
    },
)


async def get_uploads(request: Request) -> UploadService:
    uploads: UploadService = request.app.state.uploads
    return uploads


Uploads = Annotated[UploadService, Depends(get_uploads)]


@router.post("/uploads", status_code=201, response_model=UploadOut, dependencies=[RateLimited])
async def create_upload(body: UploadCreate, request: Request, uploads: Uploads, account: CurrentAccount) -> Response:
    """Announce an input picture; then PUT its bytes to `uploadUrl` with `headers`, before `expiresAt`."""
    upload, target = await uploads.create(account, body.file_name, body.content_type, body.size, base_url(request))
    out = UploadOut(upload_id=upload.id, upload_url=target.url, headers=target.headers, expires_at=target.expires_at)
    return Response(
        out.model_dump_json(by_alias=True),
        201,
        {"Location": f"/uploads/{upload.id}"},
        media_type="application/json",
    )


@router.get("/uploads/{upload_id}", response_model=UploadInfo)
async def get_upload(upload_id: str, uploads: Uploads, account: CurrentAccount) -> UploadInfo:
    """An upload of the caller's account (another account's is a 404)."""
    upload = await uploads.get(account, upload_id)
    return UploadInfo(
        upload_id=upload.id,
        file_name=upload.file_name,
        content_type=upload.content_type,
        size=upload.size,
        created_at=upload.created_at,
        used=upload.used_at is not None,
    )


@router.put(
    "/uploads/{upload_id}/content",
    status_code=204,
    response_class=Response,
    openapi_extra={"requestBody": {"content": {t: {} for t in ("image/png", "image/jpeg", "image/webp")}}},
)
async def put_upload_content(
    upload_id: str,
    request: Request,
    uploads: Uploads,
    expires: Annotated[str | None, Query(max_length=20)] = None,
    signature: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """The signed URL `POST /uploads` hands out with local storage; the signature is the authority."""
    signer: UrlSigner = request.app.state.signer
    if not signer.verify("PUT", request.url.path, expires, signature):
        raise Problem(403, "invalid_signature", "Invalid signature", "this upload URL is not valid or has expired")
    length = request.headers.get("content-length")
    await uploads.receive(
        upload_id,
        request.headers.get("content-type", ""),
        int(length) if length and length.isdigit() else None,
        request.stream(),
    )
    return Response(status_code=204)
