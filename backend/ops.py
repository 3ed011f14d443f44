"""Operational endpoints: liveness, readiness, metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from backend.db import current_revision, database_down
from backend.deps import Service
from backend.jobs.schemas import Health
from backend.metrics import QUEUE_DEPTH
from backend.worker import Worker

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(request: Request, response: Response) -> Health:
    """Ready to serve: database reachable, schema at head, worker running."""
    state = request.app.state
    checks: dict[str, str] = {}
    embedded = getattr(state, "embedded_db", None)
    if embedded is not None and not embedded.running:
        # Our own server is down (being restarted): whatever answers on its port is not ours.
        checks["database"] = "embedded server down"
    else:
        await _check_database(state, checks)
    worker: Worker | None = state.worker
    if worker is not None:
        checks["worker"] = "ok" if worker.alive and worker.listening else "not running"
    ready = all(value == "ok" for value in checks.values())
    if not ready:
        response.status_code = 503
    return Health(status="ok" if ready else "unavailable", checks=checks)


async def _check_database(state: Any, checks: dict[str, str]) -> None:
    try:
        revision = await current_revision(state.engine)
        checks["database"] = "ok"
        checks["schema"] = "ok" if revision == state.head_revision else f"at {revision}, head is {state.head_revision}"
    except Exception as exc:
        if not database_down(exc):
            raise
        checks["database"] = "unreachable"


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(service: Service) -> Response:
    """Prometheus metrics; queue depth is read from the database at scrape time."""
    try:
        for status, count in (await service.repo.count_by_status()).items():
            QUEUE_DEPTH.labels(status).set(count)
    except Exception as exc:
        if not database_down(exc):
            raise
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
