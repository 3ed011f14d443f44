"""A local webhook receiver speaking plain HTTP on 127.0.0.1: it records what it gets and
answers from a script, so tests can make it fail, stall, redirect, or be down and come back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend.embedded_pg import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """Answers request n with script[n] (an HTTP status, or "stall"); past the script, 200."""

    script: list[int | str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: Request) -> Response:
        index = len(self.received)
        self.received.append(Received(request.url.path, dict(request.headers), await request.body(), time.time()))
        self.arrived.set()
        answer = self.script[index] if index < len(self.script) else 200
        if answer == "stall":
            await asyncio.sleep(3600)
        if answer == 307:
            return Response(status_code=307, headers={"location": f"{self.url}/elsewhere"})
        return Response(b"x" * 100_000 if answer == 500 else b"ok", status_code=int(answer))

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"receiver got {len(self.received)} requests, expected {count}")
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)
        return self.received

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Receiver]:
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST", "GET"])])
        server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1, lifespan="off"
            )
        )
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        task = asyncio.create_task(server.serve())
        deadline = time.monotonic() + 10
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise AssertionError("receiver did not start")
            await asyncio.sleep(0.01)
        try:
            yield self
        finally:
            server.should_exit = True
            server.force_exit = True
            await task


def headers_of(received: Received) -> dict[str, Any]:
    return {k: v for k, v in received.headers.items() if k.startswith("webhook-")}
