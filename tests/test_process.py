"""The real service as a process: start, serve, embedded database, signals, bad settings."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

from backend.db import head_revision
from tests.processes import ROOT, start_service

pytestmark = pytest.mark.slow


def postgres_children(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if p.name() == "postgres"]


def wait_gone(processes: list[psutil.Process], timeout: float) -> None:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    assert not alive, f"still running: {alive}"


def wait_status(client: httpx.Client, job_id: str, status: str, timeout: float = 10) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, object] = client.get(f"/generations/{job_id}").json()
        if job["status"] == status:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.01)


def test_service_on_embedded_database_serves_jobs_end_to_end(tmp_path: Path) -> None:
    service = start_service(tmp_path / "svc")
    try:
        service.wait_ready()
        url_file = (tmp_path / "svc" / "embedded-postgres.url").read_text().strip()
        assert url_file.startswith("postgresql://postgres@127.0.0.1:")
        database = postgres_children(service.process.pid)
        assert database, "the embedded PostgreSQL must be a child of the service"

        with httpx.Client(base_url=service.url, timeout=10) as client:
            posted = time.monotonic()
            response = client.post("/generations", json={"numImages": 3})
            assert response.status_code == 202
            job = wait_status(client, response.json()["jobId"], "completed", timeout=5)
            took = time.monotonic() - posted
            images = [client.get(str(url)) for url in job["imageUrls"]]  # type: ignore[attr-defined]

        assert took < 5
        assert all(i.status_code == 200 and i.headers["content-type"] == "image/png" for i in images)
        assert len({i.content for i in images}) == 3
        assert Image.open(io.BytesIO(images[0].content)).size == (256, 256)

        service.signal(signal.SIGTERM)
        assert service.wait(30) == 0
        wait_gone(database, 10)
        assert not (tmp_path / "svc" / "embedded-postgres.url").exists()
    finally:
        service.stop()


def test_embedded_database_does_not_outlive_a_killed_service(tmp_path: Path) -> None:
    service = start_service(tmp_path / "svc")
    try:
        service.wait_ready()
        database = postgres_children(service.process.pid)
        assert database

        service.signal(signal.SIGKILL)
        service.wait(10)

        wait_gone(database, 10)
    finally:
        service.stop()


def test_restart_after_sigkill_reuses_the_data(tmp_path: Path) -> None:
    first = start_service(tmp_path / "svc")
    try:
        first.wait_ready()
        with httpx.Client(base_url=first.url, timeout=10) as client:
            job_id = client.post("/generations", json={"numImages": 1}).json()["jobId"]
            wait_status(client, job_id, "completed")
        first.signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.stop()

    second = start_service(tmp_path / "svc")
    try:
        second.wait_ready()
        with httpx.Client(base_url=second.url, timeout=10) as client:
            assert client.get(f"/generations/{job_id}").json()["status"] == "completed"
    finally:
        second.stop()


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"DEFAULT_PROVIDER": "dalle"}, "DEFAULT_PROVIDER"),
        ({"PROVIDERS": "animals,magic"}, "PROVIDERS"),
        ({"STORAGE_BACKEND": "s3"}, "S3_BUCKET"),
        ({"STORAGE_BACKEND": "gcs"}, "STORAGE_BACKEND"),
        ({"S3_PUBLIC_ENDPOINT": "minio:9000"}, "S3_PUBLIC_ENDPOINT"),
    ],
)
def test_bad_setting_stops_start_up_with_one_line(tmp_path: Path, env: dict[str, str], setting: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "backend"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert setting in lines[0]


def test_alembic_cli_upgrades_from_the_repository_root(database_url: str, tmp_path: Path) -> None:
    # A database of its own, so the session's schema is untouched.
    import asyncio

    import asyncpg

    async def recreate() -> None:
        connection = await asyncpg.connect(database_url)
        await connection.execute("DROP DATABASE IF EXISTS alembic_cli_check")
        await connection.execute("CREATE DATABASE alembic_cli_check")
        await connection.close()

    asyncio.run(recreate())
    url = database_url.rsplit("/", 1)[0] + "/alembic_cli_check"
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": url}
    alembic = str(Path(sys.executable).parent / "alembic")
    for args in (["upgrade", "head"], ["downgrade", "base"], ["upgrade", "head"], ["current"]):
        result = subprocess.run([alembic, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    assert f"{head_revision()} (head)" in result.stdout
