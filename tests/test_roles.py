"""ROLE=api and ROLE=worker as real processes sharing one database (the scale-out of SPEC Part 2)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.processes import Service, kill_all, start_service

pytestmark = pytest.mark.slow

ENV = {"WORKER_POLL_INTERVAL": "0.2", "PROVIDERS": "animals,noop", "LOG_LEVEL": "WARNING"}


def start(tmp_path: Path, name: str, database_url: str, role: str) -> Service:
    service = start_service(tmp_path / name, {**ENV, "DATABASE_URL": database_url, "ROLE": role})
    service.wait_ready()
    return service


def wait_status(client: httpx.Client, job_id: str, status: str, timeout: float = 15) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, object] = client.get(f"/generations/{job_id}").json()
        if job["status"] == status:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.02)


async def test_api_accepts_and_a_separate_worker_runs_the_job(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    api = start(tmp_path, "api", database_url, "api")
    worker: Service | None = None
    try:
        with httpx.Client(base_url=api.url, timeout=10) as client:
            ready = client.get("/readyz").json()
            assert ready["status"] == "ok" and "worker" not in ready["checks"]  # ready with no worker anywhere
            job_id = client.post("/generations", json={"numImages": 1, "provider": "noop"}).json()["jobId"]
            # Nothing in the api process claims it: it waits, however often the api's loop turns.
            for _ in range(5):
                assert client.get(f"/generations/{job_id}").json()["status"] == "pending"
                assert client.get("/healthz").status_code == 200

            worker = start(tmp_path, "worker", database_url, "worker")
            done = wait_status(client, job_id, "completed")
        assert done["startedAt"] is not None
        async with engine.connect() as connection:
            ran_by = (
                await connection.execute(
                    text("SELECT worker_id FROM generation_jobs WHERE id = :id"), {"id": uuid.UUID(job_id)}
                )
            ).scalar_one()
        assert f":{worker.process.pid}:" in ran_by
    finally:
        kill_all(api, *([worker] if worker else []))


async def test_worker_serves_only_health_readiness_and_metrics(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    worker = start(tmp_path, "worker", database_url, "worker")
    try:
        with httpx.Client(base_url=worker.url, timeout=10) as client:
            assert client.get("/healthz").status_code == 200
            ready = client.get("/readyz").json()
            assert ready["checks"]["worker"] == "ok"
            metrics = client.get("/metrics")
            assert metrics.status_code == 200
            assert "generation_worker_slots_in_use" in metrics.text
            assert "generation_event_loop_lag_seconds" in metrics.text
            for method, path in [
                ("POST", "/generations"),
                ("GET", f"/generations/{uuid.uuid4()}"),
                ("GET", "/generations"),
                ("GET", "/docs"),
                ("GET", "/openapi.json"),
                ("POST", "/v1/images/generations"),
            ]:
                response = client.request(method, path, json={"numImages": 1})
                assert response.status_code == 404, (method, path, response.text)
                # /v1 refusals speak OpenAI's error shape, everything else problem+json.
                expected = "application/json" if path.startswith("/v1") else "application/problem+json"
                assert response.headers["content-type"] == expected
    finally:
        kill_all(worker)


def test_an_unknown_role_is_refused_with_the_setting_named(tmp_path: Path) -> None:
    service = start_service(tmp_path / "bad", {"ROLE": "scheduler", "DATABASE_URL": "postgresql://127.0.0.1:1/x"})
    try:
        assert service.wait(30) == 2
        assert "ROLE" in service.output()
    finally:
        kill_all(service)
