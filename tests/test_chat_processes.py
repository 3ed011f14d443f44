"""The result message lands exactly once with two real replicas, one of them killed and restarted."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.processes import Service, kill_all, start_service

pytestmark = pytest.mark.slow

ENV = {
    "LEASE_SECONDS": "2",
    "CHAT_RESULT_POLL_INTERVAL": "0.1",
    "IMAGE_PROVIDER_DELAY": "0.3",
    "WORKER_POLL_INTERVAL": "0.2",
    "RETRY_BASE_DELAY": "0.1",
    "MAX_ATTEMPTS": "5",
}


def replica(data_dir: Path, database_url: str) -> Service:
    return start_service(data_dir, {"DATABASE_URL": database_url, **ENV})


def buttons(pair: dict[str, Any]) -> list[str]:
    return [c["optionId"] for c in pair["assistantMessage"]["renderChunks"] if c["type"] == "button"]


async def scalar(engine: AsyncEngine, sql: str) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(text(sql))).scalar_one()


async def test_each_result_lands_exactly_once_across_replicas_and_a_crash(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    first = replica(tmp_path / "a", database_url)
    second = replica(tmp_path / "b", database_url)
    restarted: Service | None = None
    try:
        first.wait_ready()
        second.wait_ready()
        chat = httpx.post(f"{first.url}/chats", json={"title": "race"}).json()
        options: list[str] = []
        for words in ("a fox", "a bear", "an owl"):
            pair = httpx.post(f"{first.url}/chats/{chat['id']}/messages", json={"text": words}).json()
            options += buttons(pair)
        job_ids = set()
        for index, option in enumerate(options * 2):
            # Presses alternate between replicas; every option is pressed with two different keys.
            target = (first, second)[index % 2]
            response = httpx.post(
                f"{target.url}/options/{option}/generate", headers={"Idempotency-Key": f"press-{index}"}
            )
            assert response.status_code == 202, response.text
            job_ids.add(response.json()["jobId"])
        assert len(job_ids) == len(options) * 2

        # Kill one replica while jobs run on both; start it again a moment later.
        deadline = time.monotonic() + 30
        while await scalar(engine, "SELECT count(*) FROM generation_jobs WHERE status = 'processing'") == 0:
            assert time.monotonic() < deadline, "no job started"
            await asyncio.sleep(0.02)
        first.signal(signal.SIGKILL)
        first.wait(10)
        restarted = replica(tmp_path / "a2", database_url)
        restarted.wait_ready()

        deadline = time.monotonic() + 90
        while await scalar(engine, "SELECT count(*) FROM chat_generations WHERE resolved_at IS NULL") > 0:
            assert time.monotonic() < deadline, "results did not all land"
            await asyncio.sleep(0.05)
        finished = await scalar(
            engine, "SELECT count(*) FROM generation_jobs WHERE status IN ('completed', 'failed', 'canceled')"
        )
        assert finished == len(job_ids)

        per_job = await scalar(
            engine,
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM chat_messages"
            " WHERE job_id IS NOT NULL GROUP BY chat_id, job_id) AS counts",
        )
        results = await scalar(engine, "SELECT count(DISTINCT job_id) FROM chat_messages WHERE job_id IS NOT NULL")
        assert per_job == 1 and results == len(job_ids)
        shown = httpx.get(f"{second.url}/chats/{chat['id']}/messages?limit=200").json()
        assert len(shown) == 6 + len(job_ids)
        assert httpx.get(f"{restarted.url}/chats/{chat['id']}").json()["messageCount"] == len(shown)
        media = [c for m in shown for c in m["renderChunks"] if c["type"] == "media"]
        assert {c["jobId"] for c in media} <= job_ids
    finally:
        kill_all(*(service for service in (first, second, restarted) if service is not None))
