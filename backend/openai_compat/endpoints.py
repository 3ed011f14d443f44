"""OpenAI-compatible routes under /v1. Errors here speak OpenAI's shape (see errors.py)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from backend.deps import CurrentAccount, ImageStorage, JobRateLimited, Service, base_url
from backend.errors import FieldError, Problem, not_found, validation_problem
from backend.jobs.endpoints import job_out
from backend.jobs.models import JobKind, JobStatus
from backend.jobs.repository import Cursor
from backend.jobs.service import encode_cursor
from backend.openai_compat import service as compat
from backend.openai_compat.schemas import (
    ImageData,
    ImageGenerationRequest,
    ImagesResponse,
    Video,
    VideoCreateRequest,
    VideoList,
)

# Every error under /v1 answers in OpenAI's shape, `{"error": {"message", "type", "code", "param"}}`.
router = APIRouter(
    prefix="/v1",
    tags=["openai-compatible"],
    responses={
        status: {"description": description, "content": {"application/json": {}}}
        for status, description in [
            (400, "Invalid request (OpenAI error shape)"),
            (401, "Missing or invalid API key"),
            (404, "No such object"),
            (429, "Rate limited"),
            (503, "Database unavailable"),
        ]
    },
)


@router.post(
    "/images/generations",
    response_model=ImagesResponse,
    response_model_exclude_none=True,
    dependencies=[JobRateLimited],
)
async def generate_images(
    body: ImageGenerationRequest,
    request: Request,
    service: Service,
    storage: ImageStorage,
    account: CurrentAccount,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)] = None,
) -> ImagesResponse:
    """OpenAI's images API: runs an ordinary job and answers when it is done (up to OPENAI_COMPAT_WAIT)."""
    provider, model = compat.split_model(body.model)
    request_ = compat.generation_request(num_images=body.n, prompt=body.prompt, provider=provider, model=model)
    created = await compat.create_job(service, account, request_, idempotency_key)
    waited = request.app.state.settings.openai_compat_wait
    job = await compat.wait_finished(service, request.app.state.events, account, created, waited)
    compat.raise_unless_completed(job, waited)
    if body.response_format == "b64_json":
        data = [ImageData(b64_json=encoded) for encoded in await compat.b64_images(job, storage)]
    else:
        data = [ImageData(url=url) for url in job_out(job, storage, base_url(request)).image_urls or []]
    return ImagesResponse(created=int(job.created_at.timestamp()), data=data)


@router.post("/videos", response_model=Video, dependencies=[JobRateLimited])
async def create_video(
    request: Request,
    service: Service,
    account: CurrentAccount,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)] = None,
) -> Video:
    """OpenAI's videos API: a `kind: video` job, answered at once as a `queued` video object.

    Takes JSON or a form (OpenAI's SDK sends multipart/form-data): prompt, model, seconds, size.
    """
    body = await _video_request(request)
    provider, model = compat.split_model(body.model)
    job = await compat.create_job(
        service,
        account,
        compat.generation_request(
            kind="video",
            prompt=body.prompt,
            provider=provider,
            model=model,
            duration_seconds=body.seconds,
            aspect_ratio=compat.aspect_ratio(body.size),
        ),
        idempotency_key,
    )
    return compat.video(job, service.retry_after(job))


@router.get("/videos", response_model=VideoList)
async def list_videos(
    service: Service,
    account: CurrentAccount,
    after: Annotated[str | None, Query(max_length=100, description="The last id of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> VideoList:
    """The account's videos, newest first (`order=asc`: oldest first), `after` an id for the next page."""
    cursor = None
    if after is not None:
        try:
            last = await compat.video_job(service, account, after)
            cursor = encode_cursor(Cursor(last.created_at, last.id))
        except Problem as problem:
            raise validation_problem([FieldError("after", problem.detail, "unknown")]) from None
    jobs, next_cursor = await service.list(
        account, limit=limit, status=None, cursor=cursor, kind=JobKind.VIDEO, oldest_first=order == "asc"
    )
    data = [compat.video(job, service.retry_after(job)) for job in jobs]
    return VideoList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=next_cursor is not None,
    )


@router.get("/videos/{video_id}", response_model=Video)
async def retrieve_video(video_id: str, response: Response, service: Service, account: CurrentAccount) -> Video:
    job = await compat.video_job(service, account, video_id)
    if job.status not in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED):
        # OpenAI's SDK `poll()` waits this long between reads.
        response.headers["openai-poll-after-ms"] = str(min(service.retry_after(job), 5) * 1000)
    return compat.video(job, service.retry_after(job))


@router.get(
    "/videos/{video_id}/content",
    response_class=Response,
    responses={200: {"content": {"video/mp4": {}}}},
)
async def download_video(
    video_id: str,
    service: Service,
    storage: ImageStorage,
    account: CurrentAccount,
    variant: Annotated[str, Query(max_length=20)] = "video",
) -> Response:
    """The MP4 of a completed video."""
    if variant != "video":
        raise validation_problem([FieldError("variant", f"only 'video' is available here, not {variant!r}", "invalid")])
    job = await compat.video_job(service, account, video_id)
    if job.status != JobStatus.COMPLETED or not job.outputs:
        raise Problem(409, "video_not_ready", "Video not ready", f"video {video_id} is {job.status}, not completed")
    served = await storage.serve(job.outputs[0]["key"])
    if served is None:
        raise not_found(f"the file of video {video_id!r}")
    return served


async def _video_request(request: Request) -> VideoCreateRequest:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: dict[str, Any]
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form()
        if any(isinstance(value, UploadFile) for value in form.values()):
            raise validation_problem(
                [FieldError("input_reference", "reference images are not supported here yet", "unsupported")]
            )
        fields = {key: value for key, value in form.items()}
    else:
        try:
            fields = json.loads(await request.body() or b"null")
        except ValueError as exc:
            raise validation_problem([FieldError("body", f"not valid JSON ({exc})", "json_invalid")]) from None
        if not isinstance(fields, dict):
            raise validation_problem([FieldError("body", "a JSON object body is required", "type")])
    if "input_reference" in fields:
        raise validation_problem(
            [FieldError("input_reference", "reference images are not supported here yet", "unsupported")]
        )
    try:
        return VideoCreateRequest.model_validate(fields)
    except ValidationError as exc:
        # The app's validation handler names each field, as it does for any body.
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
