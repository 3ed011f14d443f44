"""Rate limits and the pending-jobs cap: headers, 429s, and nothing created when refused."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import AppFactory
from tests.processes import kill_all, start_service
from tests.test_accounts import bearer, make_key
from tests.test_api import assert_problem

pytestmark = pytest.mark.usefixtures("engine")


async def count_jobs(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT count(*) FROM generation_jobs"))).scalar_one())


async def test_over_the_limit_is_429_with_ietf_headers_and_creates_nothing(
    engine: AsyncEngine, make_client: AppFactory
) -> None:
    client = await make_client(auth_required=True, worker_enabled=False)
    _, key = await make_key(engine, rate_limit_per_minute=3)

    remaining = []
    for _ in range(3):
        response = await client.post("/generations", headers=bearer(key), json={"numImages": 1})
        assert response.status_code == 202, response.text
        assert response.headers["ratelimit-policy"] == '"create";q=3;w=60'
        policy, r, t = response.headers["ratelimit"].split(";")
        assert policy == '"create"' and 0 < int(t.removeprefix("t=")) <= 60
        remaining.append(int(r.removeprefix("r=")))
    assert remaining == [2, 1, 0]

    refused = await client.post("/generations", headers=bearer(key), json={"numImages": 1})
    body = assert_problem(refused, 429)
    assert body["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 20  # one token every 20 s
    assert refused.headers["ratelimit"].startswith('"create";r=0;')
    assert await count_jobs(engine) == 3

    # Reads are not limited, and another key has its own budget.
    assert (await client.get("/generations", headers=bearer(key))).status_code == 200
    _, other = await make_key(engine, "other", rate_limit_per_minute=3)
    assert (await client.post("/generations", headers=bearer(other), json={"numImages": 1})).status_code == 202


async def test_the_default_limit_applies_and_zero_turns_it_off(engine: AsyncEngine, make_client: AppFactory) -> None:
    client = await make_client(worker_enabled=False, rate_limit_per_minute=2)
    statuses = [(await client.post("/generations", json={"numImages": 1})).status_code for _ in range(3)]
    assert statuses == [202, 202, 429]  # the anonymous account has the default budget too

    _, unlimited = await make_key(engine, rate_limit_per_minute=0)
    for _ in range(5):
        response = await client.post("/generations", headers=bearer(unlimited), json={"numImages": 1})
        assert response.status_code == 202 and "ratelimit" not in response.headers

    off = await make_client(worker_enabled=False, rate_limit_per_minute=0)
    response = await off.post("/generations", json={"numImages": 1})
    assert response.status_code == 202 and "ratelimit-policy" not in response.headers


async def test_a_full_queue_is_429_queue_full(engine: AsyncEngine, make_client: AppFactory) -> None:
    for limit in (600, 0):  # with and without a rate limit
        client = await make_client(worker_enabled=False, max_pending_jobs_per_key=2, rate_limit_per_minute=limit)
        _, key = await make_key(engine, f"queue {limit}")
        for _ in range(2):
            assert (await client.post("/generations", headers=bearer(key), json={"numImages": 1})).status_code == 202
        refused = await client.post("/generations", headers=bearer(key), json={"numImages": 1})
        assert assert_problem(refused, 429)["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) >= 1
        # Another account's queue is its own.
        assert (await client.post("/generations", json={"numImages": 1})).status_code == 202
        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM generation_jobs"))


@pytest.mark.slow
async def test_the_limit_holds_across_two_processes(tmp_path: Path, database_url: str, engine: AsyncEngine) -> None:
    _, key = await make_key(engine, rate_limit_per_minute=10)
    env = {"DATABASE_URL": database_url, "AUTH_REQUIRED": "true", "WORKER_ENABLED": "false"}
    services = [start_service(tmp_path / name, env) for name in ("a", "b")]
    try:
        for service in services:
            service.wait_ready()
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=10) as client:
            responses = await asyncio.gather(
                *(
                    client.post(f"{services[i % 2].url}/generations", headers=bearer(key), json={"numImages": 1})
                    for i in range(40)
                )
            )
        elapsed = time.monotonic() - started
    finally:
        kill_all(*services)
    accepted = [r for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code == 429]
    assert len(accepted) + len(refused) == 40
    # A burst of 10, plus one more for every 6 s the burst itself took.
    assert 10 <= len(accepted) <= 10 + int(elapsed / 6), (len(accepted), elapsed)
    assert {r.json()["code"] for r in refused} == {"rate_limited"}
    assert {r.url.port for r in refused} == {s.port for s in services}  # both replicas refused
    assert await count_jobs(engine) == len(accepted)
