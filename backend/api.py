"""HTTP routes: parse the request, call the service, answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import FileResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from backend.db import current_revision, database_down
from backend.errors import PROBLEM_JSON, not_found
from backend.metrics import QUEUE_DEPTH
from backend.models import FINISHED, Job, JobStatus
from backend.schemas import GenerationCreate, Health, JobError, JobOut
from backend.service import JobService
from backend.storage import LocalStorage, Storage
from backend.worker import Worker

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


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` one in a thread pool.
async def get_service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


async def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


Service = Annotated[JobService, Depends(get_service)]
ImageStorage = Annotated[Storage, Depends(get_storage)]

router = APIRouter(responses=PROBLEM_RESPONSES)


def base_url(request: Request) -> str:
    configured: str | None = request.app.state.settings.public_base_url
    return (configured or str(request.base_url)).rstrip("/")


def job_out(job: Job, storage: Storage, base: str) -> JobOut:
    finished = job.status in FINISHED
    return JobOut(
        job_id=job.id,
        status=JobStatus(job.status),
        num_images=job.num_images,
        prompt=job.prompt,
        provider=job.provider,
        animal=job.animal,
        image_urls=[storage.url(key, base) for key in job.image_keys] if job.image_keys is not None else None,
        # A transient error stays visible while the job waits for its retry.
        error=JobError(code=job.error_code, message=job.error_message or "") if job.error_code else None,
        attempts=job.attempts,
        next_attempt_at=job.run_after if job.status == JobStatus.PENDING and job.attempts > 0 else None,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        completed_at=job.completed_at if finished else None,
    )


def json_response(job: JobOut, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """The job as JSON. `response_model` still documents it; returning bytes skips FastAPI
    validating the model a second time on the hot paths."""
    return Response(job.model_dump_json(by_alias=True), status, headers, media_type="application/json")


@router.post("/generations", status_code=202, response_model=JobOut, tags=["generations"])
async def create_generation(
    body: GenerationCreate,
    request: Request,
    service: Service,
    storage: ImageStorage,
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
    job, replayed = await service.create(body, idempotency_key)
    headers = {"Location": f"/generations/{job.id}", "Retry-After": str(service.retry_after(job))}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(job_out(job, storage, base_url(request)), 202, headers)


@router.get("/generations/{job_id}", response_model=JobOut, tags=["generations"])
async def get_generation(job_id: str, request: Request, service: Service, storage: ImageStorage) -> Response:
    return json_response(job_out(await service.get(job_id), storage, base_url(request)))


@router.get("/generations", response_model=list[JobOut], tags=["generations"])
async def list_generations(
    request: Request,
    response: Response,
    service: Service,
    storage: ImageStorage,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
    cursor: Annotated[
        str | None, Query(max_length=200, description="From the `Link: rel=next` header of the previous page.")
    ] = None,
) -> list[JobOut]:
    """Jobs, newest first. The next page's URL is in the `Link` header."""
    jobs, next_cursor = await service.list(limit=limit, status=status, cursor=cursor)
    if next_cursor is not None:
        next_url = request.url.include_query_params(cursor=next_cursor, limit=limit)
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    base = base_url(request)
    return [job_out(job, storage, base) for job in jobs]


@router.post("/generations/{job_id}/cancel", response_model=JobOut, tags=["generations"])
async def cancel_generation(job_id: str, request: Request, service: Service, storage: ImageStorage) -> JobOut:
    """Cancel a pending or running job. A finished job answers 409."""
    return job_out(await service.cancel(job_id), storage, base_url(request))


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


ops = APIRouter(tags=["operations"])


@ops.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@ops.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(request: Request, response: Response) -> Health:
    """Ready to serve: database reachable, schema at head, worker running."""
    state = request.app.state
    checks: dict[str, str] = {}
    try:
        revision = await current_revision(state.engine)
        checks["database"] = "ok"
        checks["schema"] = "ok" if revision == state.head_revision else f"at {revision}, head is {state.head_revision}"
    except Exception as exc:
        if not database_down(exc):
            raise
        checks["database"] = "unreachable"
    worker: Worker | None = state.worker
    if worker is not None:
        checks["worker"] = "ok" if worker.alive and worker.listening else "not running"
    ready = all(value == "ok" for value in checks.values())
    if not ready:
        response.status_code = 503
    return Health(status="ok" if ready else "unavailable", checks=checks)


@ops.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(service: Service) -> Response:
    """Prometheus metrics; queue depth is read from the database at scrape time."""
    try:
        for status, count in (await service.repo.count_by_status()).items():
            QUEUE_DEPTH.labels(status).set(count)
    except Exception as exc:
        if not database_down(exc):
            raise
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
