"""Drive the service: the aiohttp load generator (a bench-venv child) and a sequential probe."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from bench.procs import run_json

POST_BODY = {"numImages": 1, "provider": "noop"}


async def http_load(
    urls: list[str],
    mode: str,
    seconds: float = 0.0,
    *,
    total: int = 0,
    ids: Path | None = None,
    record: Path | None = None,
    concurrency: int = 32,
    bearer: str | None = None,
    webhook: str | None = None,
) -> dict[str, Any]:
    """32 keep-alive clients (by default) for `seconds` after a 1 s warm-up, or for `total` requests."""
    args = ["--mode", mode, "--concurrency", str(concurrency)]
    for url in urls:
        args += ["--url", url]
    args += ["--total", str(total)] if total else ["--duration", str(seconds)]
    if ids is not None:
        args += ["--ids", str(ids)]
    if record is not None:
        args += ["--record", str(record)]
    if bearer is not None:
        args += ["--bearer", bearer]
    if webhook is not None:
        args += ["--webhook", webhook]
    # A --total run stops itself after loadgen's --max-seconds (600 s): wait that long, and then some.
    return await run_json("bench.loadgen", *args, timeout=(seconds or 600) + 120)


async def probe(url: str, count: int, gap: float) -> dict[str, float]:
    """POST jobs one at a time, `gap` seconds apart; returns {job id: epoch seconds its 202 arrived}."""
    acked: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for _ in range(count):
            response = await client.post("/generations", json=POST_BODY)
            arrived = time.time()
            response.raise_for_status()
            acked[response.json()["jobId"]] = arrived
            await asyncio.sleep(gap)
    return acked


def latencies(acked: dict[str, float], picked: dict[str, float]) -> list[float]:
    """Seconds from acknowledgement to claim, for the jobs that were claimed."""
    return [picked[job_id] - t for job_id, t in acked.items() if job_id in picked]
