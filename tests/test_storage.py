"""Storage backends: outputs in an S3-compatible store (a real moto server), URL modes, outages."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.config import Settings
from backend.embedded_pg import free_port
from backend.jobs.repository import JobRepository, NewJob
from backend.storage import StorageUnavailable
from backend.storage.s3 import S3Storage
from tests.conftest import APPS, AppFactory, wait_for_status
from tests.fakes import ScriptedProvider
from tests.polling import until
from tests.s3server import CREDENTIALS, S3Server, start_s3_server
from tests.test_observability import samples, value
from tests.test_ownership import make_account

pytestmark = pytest.mark.usefixtures("engine")


def assert_png(data: bytes) -> None:
    assert Image.open(io.BytesIO(data)).format == "PNG"


async def test_s3_outputs_are_served_by_a_redirect_signed_for_the_public_host(
    make_client: AppFactory, s3_settings: dict[str, Any], s3_server: S3Server
) -> None:
    client = await make_client(**s3_settings, s3_url_ttl=120)
    created = (await client.post("/generations", json={"numImages": 2})).json()

    job = await wait_for_status(client, created["jobId"], {"completed"})

    assert len(job["imageUrls"]) == 2
    for index, url in enumerate(job["imageUrls"]):
        # A stable app URL, so the job's representation never holds an expired link.
        assert url == f"http://testserver/images/{job['jobId']}/1-{index}.png"  # attempt 1's files
        response = await client.get(url)
        assert response.status_code == 302
        location = response.headers["location"]
        parts = urlsplit(location)
        assert f"{parts.scheme}://{parts.netloc}" == s3_server.public_endpoint  # not the internal host
        assert parts.path == f"/{s3_settings['s3_bucket']}/{job['jobId']}/1-{index}.png"
        assert "X-Amz-Signature=" in location and "X-Amz-Expires=120" in location
        assert "max-age=60" in response.headers["cache-control"]
        fetched = httpx.get(location, timeout=10)
        assert fetched.status_code == 200
        assert fetched.headers["content-type"] == "image/png"
        assert_png(fetched.content)


async def test_s3_public_urls_are_permanent_object_urls(
    make_client: AppFactory, s3_settings: dict[str, Any], s3_server: S3Server
) -> None:
    s3_server.allow_public_reads(s3_settings["s3_bucket"])
    client = await make_client(**s3_settings, use_public_urls=True)
    created = (await client.post("/generations", json={"numImages": 1})).json()

    job = await wait_for_status(client, created["jobId"], {"completed"})

    [url] = job["imageUrls"]
    assert url == f"{s3_server.public_endpoint}/{s3_settings['s3_bucket']}/{job['jobId']}/1-0.png"
    assert "X-Amz" not in url
    fetched = httpx.get(url, timeout=10)
    assert fetched.status_code == 200
    assert_png(fetched.content)


async def test_unknown_image_key_is_404_problem_with_s3(make_client: AppFactory, s3_settings: dict[str, Any]) -> None:
    client = await make_client(**s3_settings)

    response = await client.get("/images/not-a-job/0.png")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_an_object_store_down_for_longer_than_the_wait_fails_attempts_with_storage_unavailable(
    make_client: AppFactory, s3_settings: dict[str, Any]
) -> None:
    nothing_there = f"http://127.0.0.1:{free_port()}"
    settings = {**s3_settings, "s3_endpoint_internal": nothing_there, "s3_public_endpoint": nothing_there}
    client = await make_client(**settings, max_attempts=2, storage_wait_seconds=0.5)
    created = (await client.post("/generations", json={"numImages": 1})).json()

    job = await wait_for_status(client, created["jobId"], {"failed"}, timeout=60)

    assert job["attempts"] == 2  # retried: an outage of the store is transient
    assert job["error"]["code"] == "storage_unavailable"
    assert "gave up after 2 attempts" in job["error"]["message"]


async def test_a_missing_bucket_is_an_unavailable_store_not_a_missing_object(
    make_settings: Callable[..., Settings], s3_settings: dict[str, Any]
) -> None:
    # A store that restarted empty, or whose bucket is not created yet: a write must not look
    # like a crash, nor a read like an input the user deleted.
    storage = S3Storage(make_settings(**{**s3_settings, "s3_bucket": f"missing-{uuid.uuid4().hex[:8]}"}))

    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        await storage.save(f"{uuid.uuid4()}/0.png", b"png", "image/png")
    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        await storage.read(f"uploads/{uuid.uuid4()}", 1000)


async def test_a_job_waits_out_an_object_store_outage_within_its_attempt(
    make_client: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store goes down under a running job: the job keeps its output and its only attempt,
    and completes once the store is back, even though the store comes back without its bucket."""
    for name, setting in CREDENTIALS.items():
        monkeypatch.setenv(name, setting)
    store = start_s3_server(tmp_path)  # its own server: this test stops it
    try:
        bucket = store.create_bucket()
        provider = ScriptedProvider()
        client = await make_client(
            {"scripted": provider},
            default_provider="scripted",
            max_attempts=1,  # a spent attempt would fail the job
            storage_wait_seconds=60,
            storage_backend="s3",
            s3_bucket=bucket,
            s3_endpoint_internal=store.endpoint,
            s3_use_path_style=True,
        )
        store.stop()
        created = (await client.post("/generations", json={"numImages": 1})).json()
        # The output is made, and its write found the store down.
        await until(lambda: waiting(client), "the job never waited for the store", timeout=20)

        await asyncio.to_thread(store.start_again)
        # The store answers again, but without the bucket: the write is refused, and the job waits on.
        put = f"PUT /{bucket}/{created['jobId']}/1-0.png HTTP/1.1"

        async def refused_logged() -> bool:  # moto's request log (colours around the request line)
            return any(put in line and '" 404 ' in line for line in store.log.read_text(errors="replace").splitlines())

        await until(refused_logged, "the store never refused the write", timeout=20)
        assert (await client.get(f"/generations/{created['jobId']}")).json()["status"] == "processing"
        assert await waiting(client) == 1
        store.create_bucket(bucket)

        job = await wait_for_status(client, created["jobId"], {"completed"}, timeout=30)
        assert job["attempts"] == 1
        assert provider.runs == [(uuid.UUID(created["jobId"]), 1)]  # the provider ran once
        image = await client.get(job["imageUrls"][0])
        assert image.status_code == 302
        assert_png(httpx.get(image.headers["location"], timeout=10).content)
        assert await waiting(client) == 0
    finally:
        store.stop()


async def waiting(client: httpx.AsyncClient) -> float:
    """The jobs this app's worker holds while the object store is down (a gauge of /metrics)."""
    return value(samples((await client.get("/metrics")).text), "generation_worker_jobs_waiting_for_storage")


async def test_delete_removes_a_finished_job_and_its_files(client: httpx.AsyncClient) -> None:
    created = (await client.post("/generations", json={"numImages": 2})).json()
    job = await wait_for_status(client, created["jobId"], {"completed"})
    root = APPS[client].state.settings.data_dir / "images" / job["jobId"]
    assert root.is_dir()

    response = await client.delete(f"/generations/{job['jobId']}")

    assert response.status_code == 204 and response.content == b""
    assert (await client.get(f"/generations/{job['jobId']}")).status_code == 404
    assert (await client.get(job["imageUrls"][0])).status_code == 404
    assert not root.exists()
    assert (await client.delete(f"/generations/{job['jobId']}")).status_code == 404


async def test_delete_cancels_a_running_job_first(make_client: AppFactory) -> None:
    client = await make_client(image_provider_delay=5.0)
    created = (await client.post("/generations", json={"numImages": 3})).json()
    await wait_for_status(client, created["jobId"], {"processing"})

    assert (await client.delete(f"/generations/{created['jobId']}")).status_code == 204

    assert (await client.get(f"/generations/{created['jobId']}")).status_code == 404
    assert (await client.get("/generations")).json() == []


async def test_delete_of_unknown_or_foreign_job_is_404(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    other = await make_account(engine, "other")
    theirs, _ = await JobRepository(engine).create(NewJob(1, None, "animals", other))

    for job_id in (str(uuid.uuid4()), "not-a-uuid", str(theirs.id)):
        response = await client.delete(f"/generations/{job_id}")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
    assert await JobRepository(engine).get(theirs.id, other) is not None


async def test_delete_removes_s3_objects(make_client: AppFactory, s3_settings: dict[str, Any]) -> None:
    client = await make_client(**s3_settings)
    created = (await client.post("/generations", json={"numImages": 2})).json()
    job = await wait_for_status(client, created["jobId"], {"completed"})
    location = (await client.get(job["imageUrls"][0])).headers["location"]
    assert httpx.get(location, timeout=10).status_code == 200

    assert (await client.delete(f"/generations/{job['jobId']}")).status_code == 204

    assert httpx.get(location, timeout=10).status_code == 404


async def test_retention_removes_s3_objects(
    make_client: AppFactory, s3_settings: dict[str, Any], engine: AsyncEngine
) -> None:
    client = await make_client(**s3_settings)
    created = (await client.post("/generations", json={"numImages": 1})).json()
    job = await wait_for_status(client, created["jobId"], {"completed"})
    location = (await client.get(job["imageUrls"][0])).headers["location"]
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE generation_jobs SET created_at = now() - interval '2 days',"
                " completed_at = now() - interval '2 days' WHERE id = :id"
            ),
            {"id": uuid.UUID(job["jobId"])},
        )

    # A replica with retention on prunes at start: the row, then the objects.
    await make_client(**s3_settings, job_retention_seconds=86400)

    deadline = time.monotonic() + 30
    while httpx.get(location, timeout=10).status_code != 404:
        assert time.monotonic() < deadline, "the retention sweep did not remove the object"
        await asyncio.sleep(0.1)
    assert (await client.get(f"/generations/{job['jobId']}")).status_code == 404
