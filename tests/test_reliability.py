"""Crash, exactly-once, outage and shutdown, proven with real processes and real signals."""

from __future__ import annotations

import asyncio
import collections
import signal
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.embedded_pg import EmbeddedPostgres, free_port
from tests.polling import wait_until
from tests.processes import Service, kill_all, start_service

pytestmark = pytest.mark.slow


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n    measured: {line}")


def jobs_by_status(client: httpx.Client) -> dict[str, int]:
    counts: dict[str, int] = collections.Counter()
    url: str | None = "/generations?limit=200"
    while url:
        response = client.get(url)
        counts.update(job["status"] for job in response.json())
        link = response.headers.get("link")
        url = link[1 : link.index(">")] if link else None
    return dict(counts)


def test_sigkill_mid_job_then_restart_completes_every_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {
        "LEASE_SECONDS": "3",
        "WORKER_POLL_INTERVAL": "0.2",
        "IMAGE_PROVIDER_DELAY": "0.3",
        "WORKER_CONCURRENCY": "4",
    }
    first = start_service(tmp_path / "svc", env)
    second: Service | None = None
    try:
        first.wait_ready()
        with httpx.Client(base_url=first.url, timeout=10) as client:
            ids = [client.post("/generations", json={"numImages": 5}).json()["jobId"] for _ in range(8)]
            wait_until(lambda: jobs_by_status(client).get("processing", 0) >= 4, "jobs never started", 10)
            running = [i for i in ids if client.get(f"/generations/{i}").json()["status"] == "processing"]

        first.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        first.wait(10)

        second = start_service(tmp_path / "svc", env)
        second.wait_ready()
        with httpx.Client(base_url=second.url, timeout=10) as client:

            def reclaimed() -> bool:
                return all(client.get(f"/generations/{i}").json()["attempts"] >= 2 for i in running)

            wait_until(reclaimed, "killed jobs were never reclaimed", 30)
            reclaim_seconds = time.monotonic() - killed_at
            wait_until(lambda: jobs_by_status(client) == {"completed": 8}, "not every job completed", 60)
            jobs = [client.get(f"/generations/{i}").json() for i in ids]
        report(capsys, f"reclaim after SIGKILL: {reclaim_seconds:.2f}s (LEASE_SECONDS=3, restart included)")
        assert all(len(job["imageUrls"]) == 5 for job in jobs)
        assert reclaim_seconds < 3 + 10  # lease + restart + a poll, with room for a slow machine
    finally:
        kill_all(first, *([second] if second else []))


@pytest.fixture
async def completion_audit(engine: AsyncEngine) -> AsyncIterator[None]:
    """Record every transition into `completed`: a double completion would show twice."""
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE IF NOT EXISTS completion_audit (job_id uuid, at timestamptz)"))
        await connection.execute(text("TRUNCATE completion_audit"))
        await connection.execute(
            text(
                """
                CREATE OR REPLACE FUNCTION audit_completion() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN INSERT INTO completion_audit VALUES (NEW.id, clock_timestamp()); RETURN NULL; END $$
                """
            )
        )
        await connection.execute(
            text(
                """
                CREATE TRIGGER audit_completion AFTER UPDATE ON generation_jobs FOR EACH ROW
                WHEN (NEW.status = 'completed') EXECUTE FUNCTION audit_completion()
                """
            )
        )
    yield
    async with engine.begin() as connection:
        await connection.execute(text("DROP TRIGGER audit_completion ON generation_jobs"))
        await connection.execute(text("DROP TABLE completion_audit"))
        await connection.execute(text("DROP FUNCTION audit_completion()"))


@pytest.mark.usefixtures("completion_audit")
async def test_three_processes_complete_2000_jobs_exactly_once(
    database_url: str, engine: AsyncEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = tmp_path / "runs.log"
    env = {
        "DATABASE_URL": database_url,
        "PROVIDER_PLUGINS": "tests.recording:provider",
        "DEFAULT_PROVIDER": "recording",
        "RECORD_FILE": str(records),
        "WORKER_CONCURRENCY": "16",
        "WORKER_POLL_INTERVAL": "0.5",
    }
    services = [start_service(tmp_path / "shared", env) for _ in range(3)]
    try:
        for service in services:
            service.wait_ready()
        started = time.monotonic()
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO generation_jobs (num_images, provider)"
                    " SELECT 1, 'recording' FROM generate_series(1, 2000)"
                )
            )
        deadline = time.monotonic() + 120
        while True:
            async with engine.connect() as connection:
                done = (
                    await connection.execute(text("SELECT count(*) FROM generation_jobs WHERE status = 'completed'"))
                ).scalar_one()
            if done == 2000:
                break
            assert time.monotonic() < deadline, f"only {done} of 2000 completed"
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - started
        async with engine.connect() as connection:
            audit = (await connection.execute(text("SELECT job_id FROM completion_audit"))).scalars().all()
            statuses = dict(
                (await connection.execute(text("SELECT status, count(*) FROM generation_jobs GROUP BY 1"))).all()
            )
            attempts = (await connection.execute(text("SELECT max(attempts) FROM generation_jobs"))).scalar_one()
    finally:
        for service in services:
            service.signal(signal.SIGTERM)
        for service in services:
            assert service.wait(30) == 0

    runs = [line.split() for line in records.read_text().splitlines()]
    per_process = collections.Counter(pid for pid, _, _ in runs)
    report(
        capsys,
        f"exactly-once: 2000 jobs, {len(runs)} provider runs, {len(set(j for _, j, _ in runs))} distinct jobs run, "
        f"{len(audit)} completions ({len(set(audit))} distinct), per process {sorted(per_process.values())}, "
        f"{elapsed:.1f}s",
    )
    assert statuses == {"completed": 2000}
    assert len(audit) == len(set(audit)) == 2000, "a job completed twice"
    assert len(runs) == len({j for _, j, _ in runs}) == 2000, "a job ran twice"
    assert attempts == 1
    assert len(per_process) == 3, "every process should have taken a share"


def test_database_outage_answers_503_and_loses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", free_port())
    pg.start()
    env = {"DATABASE_URL": pg.url, "IMAGE_PROVIDER_DELAY": "0.05", "WORKER_POLL_INTERVAL": "0.2", "LEASE_SECONDS": "10"}
    env["RATE_LIMIT_PER_MINUTE"] = "0"  # 50 requests a second for longer than the default budget lasts
    service = start_service(tmp_path / "svc", env)
    accepted: list[str] = []
    codes: collections.Counter[int] = collections.Counter()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=service.url, timeout=10) as client:
            while not stop.is_set():
                response = client.post("/generations", json={"numImages": 2})
                codes[response.status_code] += 1
                if response.status_code == 202:
                    accepted.append(response.json()["jobId"])
                else:
                    assert response.headers["content-type"] == "application/problem+json"
                stop.wait(0.02)

    try:
        service.wait_ready()
        loader = threading.Thread(target=load)
        loader.start()
        wait_until(lambda: len(accepted) >= 20, "no jobs accepted before the outage", 20)
        pg.stop()
        outage_started = time.monotonic()
        with httpx.Client(base_url=service.url, timeout=10) as client:
            wait_until(lambda: client.get("/readyz").status_code == 503, "/readyz stayed ready without a database", 10)
        wait_until(lambda: codes[503] >= 5, "no 503 during the outage", 20)
        pg.start()
        with httpx.Client(base_url=service.url, timeout=10) as client:
            wait_until(lambda: client.get("/readyz").status_code == 200, "never ready again after the outage", 30)
        recovered = time.monotonic() - outage_started
        accepted_before_end = len(accepted)
        wait_until(lambda: len(accepted) >= accepted_before_end + 20, "no jobs accepted after the outage", 20)
        stop.set()
        loader.join(15)

        with httpx.Client(base_url=service.url, timeout=10) as client:
            wait_until(lambda: jobs_by_status(client) == {"completed": len(accepted)}, "accepted jobs were lost", 60)
        report(capsys, f"outage: {dict(codes)} responses, ready again {recovered:.2f}s after the stop")
        assert set(codes) <= {202, 503}, codes
    finally:
        stop.set()
        kill_all(service)
        pg.stop()


def test_sigterm_drains_then_hands_back_unfinished_jobs(tmp_path: Path) -> None:
    env = {"IMAGE_PROVIDER_DELAY": "0.5", "SHUTDOWN_GRACE_SECONDS": "2", "WORKER_CONCURRENCY": "4"}
    service = start_service(tmp_path / "svc", env)
    try:
        service.wait_ready()
        with httpx.Client(base_url=service.url, timeout=10) as client:
            short = client.post("/generations", json={"numImages": 1}).json()["jobId"]
            long = [client.post("/generations", json={"numImages": 10}).json()["jobId"] for _ in range(3)]
            wait_until(lambda: jobs_by_status(client).get("processing", 0) == 4, "jobs never started", 10)
        service.signal(signal.SIGTERM)
        asked = time.monotonic()
        assert service.wait(30) == 0
        took = time.monotonic() - asked
        assert took < 2 + 5, f"shutdown took {took:.1f}s with a 2s grace period"
    finally:
        kill_all(service)

    after = start_service(tmp_path / "svc", {"WORKER_ENABLED": "false"})
    try:
        after.wait_ready()
        with httpx.Client(base_url=after.url, timeout=10) as client:
            assert client.get(f"/generations/{short}").json()["status"] == "completed"
            for job_id in long:
                job = client.get(f"/generations/{job_id}").json()
                assert (job["status"], job["attempts"]) == ("pending", 0)
                assert not list((tmp_path / "svc" / "images" / job_id).glob("*")), "its files are removed"
    finally:
        kill_all(after)
