"""The ceiling of any Python HTTP front end on this machine: the same INSERT and primary-key
SELECT as the service's hot routes, behind a bare Starlette app on the same server (uvicorn,
uvloop, httptools) and the same asyncpg pool settings, with no validation, no accounts, no
middleware and a hand-written response. What the service's accept and read rates lose against
this is the product's own cost; what this loses against its /healthz is the database's, which
shares the machine's cores.

Run by bench/figures/hotpath.py with the service's environment (DATABASE_URL, PORT).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend.notify import SESSION_SETTINGS

INSERT = """
INSERT INTO generation_jobs (num_images, provider) VALUES ($1, $2)
RETURNING id, status, num_images, provider, created_at
"""
SELECT = "SELECT id, status, num_images, provider, created_at FROM generation_jobs WHERE id = $1"
POOL_SIZE = 10  # DB_POOL_SIZE's default

pool: asyncpg.Pool


def _json(row: asyncpg.Record) -> bytes:
    job = {"jobId": str(row[0]), "status": row[1], "numImages": row[2], "provider": row[3]}
    return json.dumps(job | {"createdAt": row[4].isoformat()}).encode()


async def healthz(_: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def create(request: Request) -> Response:
    body = json.loads(await request.body())
    row = await pool.fetchrow(INSERT, body.get("numImages", 1), body.get("provider", "noop"))
    return Response(_json(row), 202, media_type="application/json")


async def get(request: Request) -> Response:
    row = await pool.fetchrow(SELECT, request.path_params["job_id"])
    return Response(_json(row), media_type="application/json") if row else Response(status_code=404)


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(
        os.environ["DATABASE_URL"], min_size=POOL_SIZE, max_size=POOL_SIZE, server_settings=SESSION_SETTINGS
    )
    yield
    await pool.close()


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/readyz", healthz),
        Route("/generations", create, methods=["POST"]),
        Route("/generations/{job_id:uuid}", get),
    ],
    lifespan=lifespan,
)

if __name__ == "__main__":
    port = int(os.environ["PORT"])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop", http="httptools")
