"""HTTP routes: parse the request, call the service, answer."""

from __future__ import annotations

from typing import Annotated, Literal, cast

from fastapi import APIRouter, Header, Query, Request, Response

from backend.deps import CurrentAccount, ImageStorage, JobRateLimited, Service, base_url, hot_deps
from backend.errors import PROBLEM_JSON
from backend.jobs.models import FINISHED, Job, JobStatus
from backend.jobs.schemas import GenerationCreate, JobError, JobOut, OutputOut
from backend.storage import Storage

PROBLEM_RESPONSES: dict[int | str, dict[str, object]] = {
    code: {"description": description, "content": {PROBLEM_JSON: {}}}
    for code, description in [
        (404, "No such job"),
        (413, "Body larger than 64 KiB"),
        (415, "Body is not JSON"),
        (422, "Invalid request; `errors` names each field"),
        (503, "Database unavailable"),
    ]
}


Kind = Literal["image", "video"]  # what the kind column holds (a CHECK in the table)
router = APIRouter(responses=PROBLEM_RESPONSES)


def job_out(job: Job, storage: Storage, base: str) -> JobOut:
    """The job as the API shows it. Built with `model_construct`: the values come typed from our
    own row, and validating them again cost a tenth of a GET's CPU."""
    finished = job.status in FINISHED
    outputs = (
        [
            OutputOut.model_construct(
                url=storage.url(output["key"], base),
                content_type=output["contentType"],
                width=output.get("width"),
                height=output.get("height"),
                duration_seconds=output.get("durationSeconds"),
                size_bytes=output.get("sizeBytes"),
            )
            for output in job.outputs
        ]
        if job.outputs is not None
        else None
    )
    return JobOut.model_construct(
        job_id=job.id,
        status=JobStatus(job.status),
        kind=cast("Kind", job.kind),
        num_images=job.num_images,
        prompt=job.prompt,
        provider=job.provider,
        model=job.model,
        duration_seconds=job.duration_seconds,
        aspect_ratio=job.aspect_ratio,
        seed=job.seed,
        params=job.params,
        animal=job.animal,
        image_urls=[output.url for output in outputs] if outputs is not None and job.kind == "image" else None,
        outputs=outputs,
        provider_job_id=job.provider_job_id,
        input_images=job.input_images or [],
        # A transient error stays visible while the job waits for its retry.
        error=(
            JobError.model_construct(code=job.error_code, message=job.error_message or "") if job.error_code else None
        ),
        attempts=job.attempts,
        next_attempt_at=job.run_after if job.status == JobStatus.PENDING and job.attempts > 0 else None,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        completed_at=job.completed_at if finished else None,
        webhook_url=job.webhook_url,
        webhook_events=job.webhook_events if job.webhook_url is not None else None,
    )


def json_response(job: JobOut, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """The job as JSON. `response_model` still documents it; returning bytes skips FastAPI
    validating the model a second time on the hot paths."""
    return Response(job.model_dump_json(by_alias=True), status, headers, media_type="application/json")


@router.post(
    "/generations",
    status_code=202,
    response_model=JobOut,
    tags=["generations"],
    dependencies=[JobRateLimited],
    responses={429: {"description": "Rate limited or too many pending jobs", "content": {PROBLEM_JSON: {}}}},
)
async def create_generation(
    body: GenerationCreate,
    request: Request,
    service: Service,
    account: CurrentAccount,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="Repeat a request safely: the same key and body return the same job.",
        ),
    ] = None,
) -> Response:
    """Accept a job at once; poll its `Location` until it is `completed`."""
    job, replayed = await service.create(account, body, idempotency_key)
    headers = {"Location": f"/generations/{job.id}", "Retry-After": str(service.retry_after(job))}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(job_out(job, service.storage, base_url(request)), 202, headers)


@router.get("/generations/{job_id}", response_model=JobOut, tags=["generations"])
async def get_generation(job_id: str, request: Request) -> Response:
    # The hottest read resolves its service and account itself: each FastAPI dependency costs
    # about 4 % of this route's CPU (measured), and these two are attribute lookups.
    service, account = hot_deps(request)
    return json_response(job_out(await service.get(account, job_id), service.storage, base_url(request)))


@router.get("/generations", response_model=list[JobOut], tags=["generations"])
async def list_generations(
    request: Request,
    response: Response,
    service: Service,
    storage: ImageStorage,
    account: CurrentAccount,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
    cursor: Annotated[
        str | None, Query(max_length=200, description="From the `Link: rel=next` header of the previous page.")
    ] = None,
) -> list[JobOut]:
    """Jobs, newest first. The next page's URL is in the `Link` header."""
    jobs, next_cursor = await service.list(account, limit=limit, status=status, cursor=cursor)
    if next_cursor is not None:
        next_url = request.url.include_query_params(cursor=next_cursor, limit=limit)
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    base = base_url(request)
    return [job_out(job, storage, base) for job in jobs]


@router.post("/generations/{job_id}/cancel", response_model=JobOut, tags=["generations"])
async def cancel_generation(
    job_id: str, request: Request, service: Service, storage: ImageStorage, account: CurrentAccount
) -> JobOut:
    """Cancel a pending or running job. A finished job answers 409."""
    return job_out(await service.cancel(account, job_id), storage, base_url(request))


@router.delete("/generations/{job_id}", status_code=204, response_class=Response, tags=["generations"])
async def delete_generation(job_id: str, service: Service, account: CurrentAccount) -> Response:
    """Delete a job and its files; a pending or running one is canceled first."""
    await service.delete(account, job_id)
    return Response(status_code=204)
