"""The app served over real HTTP inside the test's event loop (streams need a real server:
httpx's in-process transport waits for the whole body), and a server-sent event reader."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from httpx_sse import aconnect_sse

from backend.app import create_app
from backend.config import Settings
from backend.embedded_pg import free_port
from backend.providers import Provider


class Served:
    def __init__(self, app: FastAPI, server: uvicorn.Server, task: asyncio.Task[None], url: str) -> None:
        self.app, self.server, self.task, self.url = app, server, task, url

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


ServeFactory = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(make_settings: Callable[..., Settings]) -> AsyncIterator[ServeFactory]:
    """Start the app (lifespan and all) on a free port; stopped at the end of the test."""
    started: list[Served] = []

    async def start(fakes: dict[str, Provider] | None = None, **overrides: Any) -> Served:
        app = create_app(make_settings(**overrides), fakes)
        port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2, lifespan="on"
        )
        server = uvicorn.Server(config)
        # Signals stay with pytest: the test stops the server itself.
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        task = asyncio.create_task(server.serve())
        deadline = time.monotonic() + 30
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise AssertionError("server did not start")
            await asyncio.sleep(0.01)
        served = Served(app, server, task, f"http://127.0.0.1:{port}")
        started.append(served)
        return served

    yield start
    for served in reversed(started):
        await served.stop()


async def read_events(
    client: httpx.AsyncClient,
    path: str,
    *,
    count: int | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
    opened: asyncio.Event | None = None,
) -> list[dict[str, Any]]:
    """The stream's messages as {"id", "event", "data"} until it ends or `count` arrived."""
    received: list[dict[str, Any]] = []

    async def read() -> None:
        async with aconnect_sse(client, "GET", path, headers=dict(headers or {}), timeout=None) as source:
            source.response.raise_for_status()
            if opened is not None:
                opened.set()
            async for message in source.aiter_sse():
                if not message.data:
                    continue  # a keepalive comment
                received.append({"id": message.id, "event": message.event, "data": message.json()})
                if count is not None and len(received) >= count:
                    return

    await asyncio.wait_for(read(), timeout)
    return received
