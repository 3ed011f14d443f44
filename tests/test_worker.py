"""The queue: claims, leases, fencing, wake-ups, retries, cancellation, idempotency."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backend.accounts import ANONYMOUS_ACCOUNT_ID
from backend.jobs.repository import Completion, JobRepository, NewJob
from backend.providers import PermanentProviderError, TransientProviderError
from tests.conftest import APPS, AppFactory, asyncpg_url, wait_for_status
from tests.fakes import ScriptedProvider

pytestmark = pytest.mark.usefixtures("engine")


async def insert_jobs(repo: JobRepository, count: int, provider: str = "animals") -> list[uuid.UUID]:
    return [(await repo.create(NewJob(1, None, provider, ANONYMOUS_ACCOUNT_ID)))[0].id for _ in range(count)]


async def test_two_workers_never_claim_the_same_job(database_url: str, repo: JobRepository) -> None:
    ids = set(await insert_jobs(repo, 300))
    # Two engines: two pools, so the claims really race on separate connections.
    engines = [create_async_engine(asyncpg_url(database_url), pool_size=4) for _ in range(2)]
    repos = [JobRepository(e) for e in engines]

    async def drain(worker: JobRepository, name: str) -> list[uuid.UUID]:
        taken: list[uuid.UUID] = []
        while batch := await worker.claim(limit=7, lease_seconds=30, worker_id=name, providers=["animals"]):
            taken += [job.id for job in batch]
        return taken

    try:
        results = await asyncio.gather(*(drain(r, f"w{i}") for i, r in enumerate(repos) for _ in range(3)))
    finally:
        for e in engines:
            await e.dispose()

    claimed = [job_id for batch in results for job_id in batch]
    assert len(claimed) == len(set(claimed)) == 300
    assert set(claimed) == ids
    assert all(len(batch) > 0 for batch in results[:2]), "both workers should have won some claims"


async def test_claim_sets_a_lease_and_writes_are_fenced(repo: JobRepository) -> None:
    (job_id,) = await insert_jobs(repo, 1)
    (job,) = await repo.claim(limit=5, lease_seconds=30, worker_id="w", providers=["animals"])
    assert job.status == "processing" and job.attempts == 1
    assert job.lease_token is not None and job.lease_expires_at is not None

    assert not await repo.complete([Completion(job_id, uuid.uuid4(), [{"key": "x"}], None)])
    assert not await repo.fail(job_id, uuid.uuid4(), "x", "stale worker")
    keys = [
        {"key": f"{job_id}/0.png", "contentType": "image/png"},
        {"key": f"{job_id}/1.png", "contentType": "image/png"},
    ]
    assert await repo.complete([Completion(job_id, job.lease_token, keys, "owl")]) == {job_id}
    assert not await repo.complete([Completion(job_id, job.lease_token, [], None)]), "a second completion landed"
    done = await repo.get(job_id, ANONYMOUS_ACCOUNT_ID)
    assert done is not None and done.status == "completed" and done.lease_token is None
    assert (done.outputs, done.animal) == (keys, "owl")


async def test_one_completion_statement_fences_each_job(repo: JobRepository) -> None:
    await insert_jobs(repo, 3)
    first, second, third = await repo.claim(limit=3, lease_seconds=30, worker_id="w", providers=["animals"])
    assert first.lease_token and second.lease_token and third.lease_token
    done = [
        Completion(first.id, first.lease_token, [], None),
        Completion(second.id, uuid.uuid4(), [], None),  # lost its lease
        Completion(third.id, third.lease_token, [{"key": f"{third.id}/0.png", "contentType": "image/png"}], "cat"),
    ]

    assert await repo.complete(done) == {first.id, third.id}
    statuses = {
        job.id: job.status
        for job in [await repo.get(j.id, ANONYMOUS_ACCOUNT_ID) for j in (first, second, third)]
        if job
    }
    assert statuses == {first.id: "completed", second.id: "processing", third.id: "completed"}


async def test_notify_wakes_the_worker_long_before_its_poll(make_client: AppFactory) -> None:
    client = await make_client(worker_poll_interval=60)
    await wait_until_ready(client)

    started = time.monotonic()
    job = (await client.post("/generations", json={"numImages": 1})).json()
    await wait_for_status(client, job["jobId"], {"completed"}, timeout=5)

    assert time.monotonic() - started < 5  # a poll would have taken 60 s


async def test_expired_lease_is_reclaimed_and_completed(make_client: AppFactory, repo: JobRepository) -> None:
    (job_id,) = await insert_jobs(repo, 1)
    # A worker claims it and dies: nobody renews the lease.
    await repo.claim(limit=1, lease_seconds=1, worker_id="dead-worker", providers=["animals"])

    client = await make_client(worker_poll_interval=0.2)
    job = await wait_for_status(client, str(job_id), {"completed"}, timeout=10)

    assert job["attempts"] == 2
    assert job["error"] is None


async def test_transient_errors_retry_then_succeed(make_client: AppFactory) -> None:
    flaky = ScriptedProvider(
        [TransientProviderError("provider_unavailable", "503"), TransientProviderError("provider_timeout", "slow")]
    )
    client = await make_client({"scripted": flaky}, default_provider="scripted", max_attempts=3)

    job = (await client.post("/generations", json={"numImages": 2})).json()
    done = await wait_for_status(client, job["jobId"], {"completed", "failed"})

    assert done["status"] == "completed" and done["attempts"] == 3
    assert done["error"] is None and len(done["imageUrls"]) == 2
    assert [attempt for _, attempt in flaky.runs] == [1, 2, 3]


async def test_retrying_job_shows_pending_with_next_attempt(make_client: AppFactory) -> None:
    flaky = ScriptedProvider([TransientProviderError("provider_unavailable", "try later"), None])
    client = await make_client(
        {"scripted": flaky}, default_provider="scripted", retry_base_delay=30, retry_max_delay=30
    )
    job = (await client.post("/generations", json={"numImages": 1})).json()

    deadline = time.monotonic() + 5
    while True:
        state = (await client.get(f"/generations/{job['jobId']}")).json()
        if state["attempts"] == 1 and state["status"] == "pending":
            break
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.02)
    assert state["error"]["code"] == "provider_unavailable"
    assert state["nextAttemptAt"] is not None


async def test_permanent_error_fails_at_once(make_client: AppFactory) -> None:
    broken = ScriptedProvider([PermanentProviderError("content_policy", "prompt refused by the provider")])
    client = await make_client({"scripted": broken}, default_provider="scripted", max_attempts=5)

    job = (await client.post("/generations", json={"numImages": 1, "prompt": "no"})).json()
    done = await wait_for_status(client, job["jobId"], {"failed"})

    assert done["attempts"] == 1
    assert done["error"] == {"code": "content_policy", "message": "prompt refused by the provider"}
    assert done["imageUrls"] is None and done["completedAt"]


async def test_exhausted_attempts_fail_with_a_clear_error(make_client: AppFactory) -> None:
    down = ScriptedProvider([TransientProviderError("provider_unavailable", "upstream returned 503")] * 2)
    client = await make_client({"scripted": down}, default_provider="scripted", max_attempts=2)

    job = (await client.post("/generations", json={"numImages": 1})).json()
    done = await wait_for_status(client, job["jobId"], {"failed"})

    assert done["attempts"] == 2
    assert done["error"]["code"] == "provider_unavailable"
    assert "gave up after 2 attempts" in done["error"]["message"]


async def test_job_timeout_bounds_an_attempt(make_client: AppFactory) -> None:
    slow = ScriptedProvider(delay=30)
    client = await make_client({"scripted": slow}, default_provider="scripted", job_timeout=0.3, max_attempts=1)

    job = (await client.post("/generations", json={"numImages": 1})).json()
    done = await wait_for_status(client, job["jobId"], {"failed"})

    assert done["error"]["code"] == "provider_timeout"


async def test_cancel_pending_job_is_immediate(make_client: AppFactory) -> None:
    client = await make_client(worker_enabled=False)
    job = (await client.post("/generations", json={"numImages": 1})).json()

    response = await client.post(f"/generations/{job['jobId']}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    again = await client.post(f"/generations/{job['jobId']}/cancel")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


async def test_cancel_running_job_stops_the_provider(make_client: AppFactory, tmp_path: Path) -> None:
    images_written = asyncio.Event()
    slow = ScriptedProvider(delay=0.3, on_image=lambda _: images_written.set())
    client = await make_client({"scripted": slow}, default_provider="scripted")
    job = (await client.post("/generations", json={"numImages": 10})).json()
    await asyncio.wait_for(images_written.wait(), 10)  # it is running and has stored an image

    asked = time.monotonic()
    response = await client.post(f"/generations/{job['jobId']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "canceled"

    folder = tmp_path / "data" / "images" / job["jobId"]

    def files() -> list[str]:  # the (empty) folder stays until the job is deleted or pruned
        return [p.name for p in folder.iterdir()] if folder.exists() else []

    deadline = asked + 2
    while files() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert files() == [], "a canceled job must leave no images behind"
    final = (await client.get(f"/generations/{job['jobId']}")).json()
    assert final["status"] == "canceled" and final["imageUrls"] is None
    assert (await client.post(f"/generations/{job['jobId']}/cancel")).status_code == 409


async def test_cancel_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.post(f"/generations/{uuid.uuid4()}/cancel")).status_code == 404
    assert (await client.post("/generations/bogus/cancel")).status_code == 404


async def test_worker_that_lost_its_lease_cannot_overwrite_nor_delete_the_new_attempts_files(
    make_client: AppFactory, engine: AsyncEngine, tmp_path: Path
) -> None:
    slow = ScriptedProvider(delay=0.4)
    client = await make_client({"scripted": slow}, default_provider="scripted", lease_seconds=1.5)
    job = (await client.post("/generations", json={"numImages": 10})).json()
    folder = tmp_path / "data" / "images" / job["jobId"]
    deadline = time.monotonic() + 10
    while not (folder / "1-0.png").exists():  # our attempt has written a file
        assert time.monotonic() < deadline, "the first output should be stored"
        await asyncio.sleep(0.05)

    # Another worker takes the job over (as if our lease had expired).
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE generation_jobs SET lease_token = gen_random_uuid(), worker_id = 'other', attempts = 2"
                " WHERE id = :id"
            ),
            {"id": job["jobId"]},
        )
    # ...and has stored its first output already, beside ours.
    await APPS[client].state.storage.save(f"{job['jobId']}/2-0.png", b"theirs", "image/png")

    deadline = time.monotonic() + 5
    while {p.name for p in folder.iterdir()} != {"2-0.png"}:
        assert time.monotonic() < deadline, "the worker should stop and remove its own files after losing its lease"
        await asyncio.sleep(0.05)
    assert (folder / "2-0.png").read_bytes() == b"theirs"
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT status, worker_id FROM generation_jobs WHERE id = :id"), {"id": job["jobId"]}
            )
        ).one()
    assert tuple(row) == ("processing", "other")


async def test_shutdown_hands_unfinished_jobs_back(make_client: AppFactory, repo: JobRepository) -> None:
    slow = ScriptedProvider(delay=5)
    fast = ScriptedProvider(name="fast")
    client = await make_client(
        {"scripted": slow, "fast": fast}, default_provider="scripted", shutdown_grace_seconds=0.5
    )
    stuck = (await client.post("/generations", json={"numImages": 3})).json()
    done = (await client.post("/generations", json={"numImages": 1, "provider": "fast"})).json()
    await wait_for_status(client, done["jobId"], {"completed"})
    await asyncio.wait_for(slow.started.wait(), 10)

    await APPS[client].state.worker.stop()

    back = await repo.get(uuid.UUID(stuck["jobId"]), ANONYMOUS_ACCOUNT_ID)
    assert back is not None and back.status == "pending" and back.attempts == 0 and back.lease_token is None
    finished = await repo.get(uuid.UUID(done["jobId"]), ANONYMOUS_ACCOUNT_ID)
    assert finished is not None and finished.status == "completed"


async def test_idempotent_create_replays_the_same_job(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post("/generations", json={"numImages": 2}, headers=headers)
    second = await client.post("/generations", json={"numImages": 2}, headers=headers)

    assert first.status_code == second.status_code == 202
    assert first.json()["jobId"] == second.json()["jobId"]
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"


async def test_idempotency_key_with_another_body_is_refused(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "order-43"}
    await client.post("/generations", json={"numImages": 2}, headers=headers)

    response = await client.post("/generations", json={"numImages": 3}, headers=headers)

    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert len((await client.get("/generations")).json()) == 1


async def test_idempotency_key_length_is_checked(client: httpx.AsyncClient) -> None:
    too_long = await client.post("/generations", json={"numImages": 1}, headers={"Idempotency-Key": "k" * 256})
    empty = await client.post("/generations", json={"numImages": 1}, headers={"Idempotency-Key": ""})
    assert too_long.status_code == empty.status_code == 422
    assert too_long.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_concurrent_duplicates_create_exactly_one_job(make_client: AppFactory, engine: AsyncEngine) -> None:
    client = await make_client(worker_enabled=False, db_pool_size=20)
    headers = {"Idempotency-Key": "burst"}

    responses = await asyncio.gather(
        *(client.post("/generations", json={"numImages": 1}, headers=headers) for _ in range(50))
    )

    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["jobId"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 49
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM generation_jobs"))).scalar() == 1


async def wait_until_ready(client: httpx.AsyncClient, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (await client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, "the app never became ready"
        await asyncio.sleep(0.02)


async def test_retention_prunes_old_finished_jobs_and_their_images(
    make_client: AppFactory, repo: JobRepository, engine: AsyncEngine, tmp_path: Path
) -> None:
    old_done, old_failed, old_pending, recent_done = await insert_jobs(repo, 4)
    images = tmp_path / "data" / "images"
    for job_id in (old_done, recent_done):
        (images / str(job_id)).mkdir(parents=True)
        (images / str(job_id) / "0.png").write_bytes(b"png")
    async with engine.begin() as connection:
        await connection.execute(
            text(
                """
                UPDATE generation_jobs SET status = CASE WHEN id = :failed THEN 'failed' ELSE 'completed' END,
                    completed_at = now() - interval '2 days', created_at = now() - interval '2 days'
                WHERE id IN (:done, :failed)
                """
            ),
            {"done": old_done, "failed": old_failed},
        )
        await connection.execute(
            text("UPDATE generation_jobs SET created_at = now() - interval '2 days' WHERE id = :id"),
            {"id": old_pending},
        )
        await connection.execute(
            text("UPDATE generation_jobs SET status = 'completed', completed_at = now() WHERE id = :id"),
            {"id": recent_done},
        )

    # This worker runs only `noop`, so the old pending `animals` job stays pending throughout.
    await make_client(job_retention_seconds=86400, providers="noop", default_provider="noop")

    deadline = time.monotonic() + 10
    while (
        await repo.get(old_done, ANONYMOUS_ACCOUNT_ID) is not None
        or await repo.get(old_failed, ANONYMOUS_ACCOUNT_ID) is not None
    ):
        assert time.monotonic() < deadline, "old finished jobs were not pruned"
        await asyncio.sleep(0.05)
    # Rows go first, files right after (a crash between leaves orphaned files, never a job without them).
    while (images / str(old_done)).exists():
        assert time.monotonic() < deadline, "a pruned job's images were kept"
        await asyncio.sleep(0.05)
    assert (images / str(recent_done) / "0.png").exists()
    assert await repo.get(recent_done, ANONYMOUS_ACCOUNT_ID) is not None
    kept = await repo.get(old_pending, ANONYMOUS_ACCOUNT_ID)
    assert kept is not None
    assert kept.status == "pending"  # live jobs are never pruned, however old


async def test_worker_claims_only_jobs_for_its_providers(make_client: AppFactory, repo: JobRepository) -> None:
    (animals_job,) = await insert_jobs(repo, 1, provider="animals")
    (noop_job,) = await insert_jobs(repo, 1, provider="noop")
    client = await make_client(providers="noop", default_provider="noop")

    await wait_for_status(client, str(noop_job), {"completed"})
    job = await repo.get(animals_job, ANONYMOUS_ACCOUNT_ID)
    assert job is not None
    assert (job.status, job.attempts) == ("pending", 0)


def test_job_record_matches_the_table() -> None:
    from dataclasses import fields

    from backend.jobs.models import Job, jobs

    assert [f.name for f in fields(Job)] == [c.name for c in jobs.c]
