"""Job events and their server-sent event streams: order, content, resume, fan-out, ownership."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.accounts import ANONYMOUS_ACCOUNT_ID
from backend.events.hub import EventHub
from backend.providers import TransientProviderError
from tests.fakes import ScriptedProvider
from tests.processes import kill_all, start_service
from tests.servers import ServeFactory, read_events

pytestmark = pytest.mark.usefixtures("engine")


async def create_job(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/generations", json={"numImages": 2, **body})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


async def test_a_job_life_streams_in_order_then_replays_and_resumes_identically(serve: ServeFactory) -> None:
    flaky = ScriptedProvider([TransientProviderError("provider_unavailable", "try later")], name="flaky")
    served = await serve({"flaky": flaky}, default_provider="flaky")
    async with httpx.AsyncClient(base_url=served.url) as client:
        job = await create_job(client)
        live = await read_events(client, f"/generations/{job['jobId']}/events")

        types = [message["event"] for message in live]
        assert types == ["job.created", "job.started", "job.retrying", "job.started", "job.progress", "job.completed"]
        ids = [int(message["id"]) for message in live]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        for message in live:
            event = message["data"]
            assert set(event) == {"id", "type", "jobId", "createdAt", "data"}
            assert (event["id"], event["type"], event["jobId"]) == (int(message["id"]), message["event"], job["jobId"])
        statuses = [message["data"]["data"]["status"] for message in live]
        assert statuses == ["pending", "processing", "pending", "processing", "processing", "completed"]
        attempts = [message["data"]["data"]["attempts"] for message in live]
        assert attempts == [0, 1, 1, 2, 2, 2]
        progress = [(m["data"]["data"]["completedOutputs"], m["data"]["data"]["totalOutputs"]) for m in live]
        assert progress == [(0, 2), (0, 2), (0, 2), (0, 2), (1, 2), (2, 2)]
        assert len(live[4]["data"]["data"]["outputs"]) == 1
        assert live[2]["data"]["data"]["error"]["code"] == "provider_unavailable"
        final = live[-1]["data"]["data"]
        assert final == {**(await client.get(f"/generations/{job['jobId']}")).json(), **final}
        assert len(final["imageUrls"]) == 2 and final["completedOutputs"] == final["totalOutputs"] == 2
        image = await client.get(final["imageUrls"][0])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"

        # A finished job's stream is its whole history, then the end.
        assert await read_events(client, f"/generations/{job['jobId']}/events") == live
        # Resuming after each id gets exactly the rest: none twice, none skipped.
        for index, message in enumerate(live):
            rest = await read_events(
                client, f"/generations/{job['jobId']}/events", headers={"Last-Event-ID": message["id"]}
            )
            assert rest == live[index + 1 :]
        query = await read_events(client, f"/generations/{job['jobId']}/events?after={live[1]['id']}")
        assert query == live[2:]


async def test_cancel_and_failure_end_the_stream(serve: ServeFactory) -> None:
    slow = ScriptedProvider(delay=30, name="slow")
    served = await serve({"slow": slow, "animals": ScriptedProvider()}, default_provider="slow")
    async with httpx.AsyncClient(base_url=served.url) as client:
        job = await create_job(client)
        reader = asyncio.create_task(read_events(client, f"/generations/{job['jobId']}/events"))
        await asyncio.wait_for(slow.started.wait(), 10)
        assert (await client.post(f"/generations/{job['jobId']}/cancel")).status_code == 200
        messages = await reader
        assert [m["event"] for m in messages] == ["job.created", "job.started", "job.canceled"]
        assert messages[-1]["data"]["data"]["status"] == "canceled"


async def test_account_stream_is_resumable_and_sends_heartbeats_with_proxy_headers(serve: ServeFactory) -> None:
    served = await serve(sse_heartbeat_seconds=0.1)
    async with httpx.AsyncClient(base_url=served.url) as client:
        opened = asyncio.Event()
        reader = asyncio.create_task(read_events(client, "/events", count=6, opened=opened))
        await asyncio.wait_for(opened.wait(), 10)
        jobs = [await create_job(client, numImages=1) for _ in range(2)]
        messages = await reader
        assert sorted(m["data"]["jobId"] for m in messages) == sorted([j["jobId"] for j in jobs] * 3)
        per_job = {j["jobId"]: [m["event"] for m in messages if m["data"]["jobId"] == j["jobId"]] for j in jobs}
        assert all(types == ["job.created", "job.started", "job.completed"] for types in per_job.values())

        # The whole history from the start, and from the middle, agree with the live stream.
        assert await read_events(client, "/events", count=6) == messages
        assert (
            await read_events(client, "/events", count=3, headers={"Last-Event-ID": messages[2]["id"]})
            == (messages[3:])
        )

        async with client.stream("GET", "/events", headers={"Last-Event-ID": messages[-1]["id"]}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            lines = response.aiter_lines()
            line = await asyncio.wait_for(anext(lines), 10)
            assert line == ": keepalive"


async def test_invalid_last_event_id_and_unknown_job_are_problems(serve: ServeFactory) -> None:
    served = await serve()
    async with httpx.AsyncClient(base_url=served.url) as client:
        for headers in ({"Last-Event-ID": "abc"}, {"Last-Event-ID": "-1"}):
            response = await client.get("/events", headers=headers)
            assert response.status_code == 422
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["errors"][0]["field"] == "Last-Event-ID"
        for job_id in (str(uuid.uuid4()), "not-a-uuid"):
            response = await client.get(f"/generations/{job_id}/events")
            assert response.status_code == 404
            assert response.headers["content-type"] == "application/problem+json"


async def test_streams_show_only_the_callers_account(serve: ServeFactory, engine: AsyncEngine) -> None:
    other = uuid.uuid4()
    served = await serve()
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO accounts (id, name) VALUES (:id, 'other')"), {"id": other})
        foreign = await connection.scalar(
            text("INSERT INTO generation_jobs (num_images, provider, account_id) VALUES (1, 'noop', :a) RETURNING id"),
            {"a": other},
        )
    async with httpx.AsyncClient(base_url=served.url) as client:
        assert (await client.get(f"/generations/{foreign}/events")).status_code == 404
        mine = await create_job(client, numImages=1)
        messages = await read_events(client, "/events", count=3)
        assert {m["data"]["jobId"] for m in messages} == {mine["jobId"]}


async def test_an_event_committed_late_is_delivered_in_id_order_not_skipped(
    serve: ServeFactory, engine: AsyncEngine
) -> None:
    """T1 takes its id first but commits after T2: the stream holds T2's event back until T1 ends."""
    served = await serve(worker_enabled=False)
    hub: EventHub = served.app.state.events
    async with httpx.AsyncClient(base_url=served.url) as client:
        opened = asyncio.Event()
        reader = asyncio.create_task(read_events(client, "/events", count=2, opened=opened))
        await asyncio.wait_for(opened.wait(), 10)
        insert = text("INSERT INTO generation_jobs (num_images, provider) VALUES (1, 'noop') RETURNING id")
        async with engine.connect() as slow:
            first = await slow.scalar(insert)  # its transaction stays open
            async with engine.begin() as fast:
                second = await fast.scalar(insert)
            feed = hub.feeds[ANONYMOUS_ACCOUNT_ID]
            deadline = time.monotonic() + 10
            while feed.blocked_reads == 0:  # the feed has seen T2's event and held it back
                assert time.monotonic() < deadline, "the feed never saw the later transaction's event"
                await asyncio.sleep(0.01)
            assert not reader.done()
            await slow.commit()
        messages = await reader
        assert [m["data"]["jobId"] for m in messages] == [str(first), str(second)]
        assert int(messages[0]["id"]) < int(messages[1]["id"])


async def test_many_streams_share_one_feed_and_disconnects_free_everything(serve: ServeFactory) -> None:
    served = await serve()
    hub: EventHub = served.app.state.events
    streams = 200
    limits = httpx.Limits(max_connections=streams + 10)
    async with httpx.AsyncClient(base_url=served.url, limits=limits) as client:
        opened = [asyncio.Event() for _ in range(streams)]
        readers = [asyncio.create_task(read_events(client, "/events", count=3, opened=o)) for o in opened]
        await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 30)
        assert hub.streams == streams and len(hub.feeds) == 1
        job = await create_job(client, numImages=1)
        results = await asyncio.wait_for(asyncio.gather(*readers), 30)
        assert all([m["event"] for m in r] == ["job.created", "job.started", "job.completed"] for r in results)
        assert all(m["data"]["jobId"] == job["jobId"] for r in results for m in r)
    deadline = time.monotonic() + 10
    while hub.streams or hub.feeds:
        assert time.monotonic() < deadline, f"{hub.streams} streams still registered after disconnect"
        await asyncio.sleep(0.01)


@pytest.mark.slow
async def test_a_stream_on_one_process_follows_a_job_run_by_another(database_url: str, tmp_path: Path) -> None:
    """Two real services on one database: the API-only one streams what the worker one does."""
    api = start_service(tmp_path / "api", {"DATABASE_URL": database_url, "WORKER_ENABLED": "false"})
    worker = start_service(
        tmp_path / "worker", {"DATABASE_URL": database_url, "IMAGE_PROVIDER_DELAY": "0.2", "RUN_MIGRATIONS": "false"}
    )
    try:
        api.wait_ready()
        worker.wait_ready()
        async with httpx.AsyncClient(base_url=api.url) as client:
            job = await create_job(client, numImages=3)
            messages = await read_events(client, f"/generations/{job['jobId']}/events", timeout=30)
        assert [m["event"] for m in messages] == [
            "job.created",
            "job.started",
            "job.progress",
            "job.progress",
            "job.completed",
        ]
        assert [m["data"]["data"]["completedOutputs"] for m in messages] == [0, 0, 1, 2, 3]
        assert messages[-1]["data"]["data"]["imageUrls"][0].startswith(api.url)
        assert messages[1]["data"]["data"]["status"] == "processing"
    finally:
        kill_all(api, worker)


async def test_a_bulk_statement_gets_one_event_per_job_and_maintenance_can_opt_out(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO generation_jobs (num_images, provider) SELECT 1, 'noop' FROM generate_series(1, 5000)")
        )
        await connection.execute(text("UPDATE generation_jobs SET status = 'canceled'"))
    async with engine.begin() as connection:
        await connection.execute(text("SET LOCAL generation_jobs.events = 'off'"))
        await connection.execute(
            text("INSERT INTO generation_jobs (num_images, provider) SELECT 1, 'noop' FROM generate_series(1, 100)")
        )
    async with engine.connect() as connection:
        rows = (await connection.execute(text("SELECT id, type, job_id FROM events ORDER BY id"))).all()
        jobs = await connection.scalar(text("SELECT count(*) FROM generation_jobs"))
    assert jobs == 5100
    assert [r.type for r in rows] == ["job.created"] * 5000 + ["job.canceled"] * 5000
    assert len({r.job_id for r in rows}) == 5000
    # One transaction: consecutive ids, every one of them its transaction's.
    assert [r.id for r in rows] == list(range(rows[0].id, rows[0].id + 10_000))
