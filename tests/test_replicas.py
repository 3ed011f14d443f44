"""Scale-out: replicas share one PostgreSQL and one object store, and serve each other's files."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.processes import Service, kill_all, start_service
from tests.s3server import S3Server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("engine")]


async def wait_all(client: httpx.AsyncClient, ids: list[str], status: str, timeout: float) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [(await client.get(f"/generations/{job_id}")).json() for job_id in ids]
        if all(job["status"] == status for job in jobs):
            return jobs
        assert time.monotonic() < deadline, sorted(str(job["status"]) for job in jobs)
        await asyncio.sleep(0.1)


async def assert_served(client: httpx.AsyncClient, job: dict[str, object]) -> None:
    """Every image of the job, through this replica: a redirect to the object store, then the bytes."""
    urls = job["imageUrls"]
    assert isinstance(urls, list) and urls
    for url in urls:
        path = url[url.index("/images/") :]
        redirect = await client.get(path)
        assert redirect.status_code == 302, redirect.text
        async with httpx.AsyncClient(timeout=10) as store:
            image = await store.get(redirect.headers["location"])
        assert image.status_code == 200
        assert image.content.startswith(b"\x89PNG")


async def workers_of(engine: AsyncEngine, ids: list[str]) -> set[str]:
    """The process ids of the workers that ran these jobs (worker ids are host:pid:nonce)."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT DISTINCT split_part(worker_id, ':', 2) FROM generation_jobs WHERE id::text = ANY(:ids)"),
            {"ids": ids},
        )
        return set(rows.scalars())


async def running_on(engine: AsyncEngine, ids: list[str], service: Service, timeout: float) -> None:
    """Wait until `service`'s worker is running one of these jobs."""
    deadline = time.monotonic() + timeout
    while True:
        async with engine.connect() as connection:
            running = (
                await connection.execute(
                    text(
                        "SELECT count(*) FROM generation_jobs WHERE id::text = ANY(:ids)"
                        " AND status = 'processing' AND split_part(worker_id, ':', 2) = :pid"
                    ),
                    {"ids": ids, "pid": str(service.process.pid)},
                )
            ).scalar_one()
        if running:
            return
        assert time.monotonic() < deadline, "the replica never ran one of the jobs"
        await asyncio.sleep(0.05)


def replica_env(database_url: str, s3_server: S3Server, bucket: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        **s3_server.env(bucket),
        "IMAGE_PROVIDER_DELAY": "0.2",
        # Two jobs at a time each, so both replicas must take a share of a burst.
        "WORKER_CONCURRENCY": "2",
        "WORKER_POLL_INTERVAL": "0.2",
        "LEASE_SECONDS": "2",
    }


async def test_two_replicas_serve_each_others_files_and_survive_a_kill(
    tmp_path: Path, database_url: str, s3_server: S3Server, engine: AsyncEngine
) -> None:
    env = replica_env(database_url, s3_server, s3_server.create_bucket())
    first = start_service(tmp_path / "first", env)
    second = start_service(tmp_path / "second", env)
    try:
        first.wait_ready()
        second.wait_ready()
        async with (
            httpx.AsyncClient(base_url=first.url, timeout=10) as one,
            httpx.AsyncClient(base_url=second.url, timeout=10) as two,
        ):
            ids = [(await one.post("/generations", json={"numImages": 2})).json()["jobId"] for _ in range(10)]
            jobs = await wait_all(two, ids, "completed", 60)
            assert {str(first.process.pid), str(second.process.pid)} == await workers_of(engine, ids)
            for job in jobs:  # each replica serves the files the other one made
                await assert_served(one, job)
                await assert_served(two, job)

            # Kill one replica in the middle of a burst: the other finishes every job.
            more = [(await two.post("/generations", json={"numImages": 3})).json()["jobId"] for _ in range(10)]
            await running_on(engine, more, first, 30)
            first.signal(signal.SIGKILL)
            first.wait(10)
            done = await wait_all(two, more, "completed", 90)
            for job in done:
                await assert_served(two, job)
            assert max(int(str(job["attempts"])) for job in done) == 2  # the killed one's jobs ran again
    finally:
        kill_all(first, second)


async def test_an_api_replica_and_a_worker_replica_share_the_work(
    tmp_path: Path, database_url: str, s3_server: S3Server, engine: AsyncEngine
) -> None:
    env = replica_env(database_url, s3_server, s3_server.create_bucket())
    api = start_service(tmp_path / "api", {**env, "ROLE": "api"})
    worker = start_service(tmp_path / "worker", {**env, "ROLE": "worker"})
    replacement: Service | None = None
    try:
        api.wait_ready()
        worker.wait_ready()
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
            ids = [(await client.post("/generations", json={"numImages": 2})).json()["jobId"] for _ in range(6)]
            # Only the worker replica claims; only the API replica serves the files.
            await running_on(engine, ids, worker, 30)
            jobs = await wait_all(client, ids, "completed", 60)
            assert await workers_of(engine, ids) == {str(worker.process.pid)}
            for job in jobs:
                await assert_served(client, job)
            assert (await client.get(f"{worker.url}/generations/{ids[0]}")).status_code == 404

            # The worker dies mid-burst; a new one takes over its jobs.
            more = [(await client.post("/generations", json={"numImages": 3})).json()["jobId"] for _ in range(4)]
            await running_on(engine, more, worker, 30)
            worker.signal(signal.SIGKILL)
            worker.wait(10)
            replacement = start_service(tmp_path / "worker2", {**env, "ROLE": "worker"})
            replacement.wait_ready()
            for job in await wait_all(client, more, "completed", 90):
                await assert_served(client, job)
    finally:
        kill_all(api, worker, *([replacement] if replacement else []))
