"""Real parts the figures share: an account with its API key, a local webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend.accounts.keys import key_hash, key_hint, new_key, new_webhook_secret
from backend.embedded_pg import free_port


async def account_key(conn: asyncpg.Connection, name: str, rate_limit: int | None = None) -> tuple[uuid.UUID, str]:
    """A new account and its API key."""
    key = new_key()
    account_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO accounts (name, key_hash, key_hint, webhook_secret, rate_limit_per_minute)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING id",
        name,
        key_hash(key),
        key_hint(key),
        new_webhook_secret(),
        rate_limit,
    )
    return account_id, key


@dataclass
class Receiver:
    url: str = ""
    received: int = 0  # POSTs answered


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[Receiver]:
    """A local HTTP server in this process that answers every POST /hook with 200 and counts it."""
    receiver = Receiver()

    async def hook(request: Request) -> Response:
        await request.body()
        receiver.received += 1
        return Response(b"ok")

    port = free_port()
    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            raise RuntimeError("the webhook receiver did not start")
        await asyncio.sleep(0.01)
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task
