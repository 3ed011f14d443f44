"""`python -m bench.slow_replicate PORT TOKEN`: Replicate predictions that stay `processing` forever.

Enough of Replicate's protocol for the remote-jobs figure: create answers 201 with an id, every
poll answers `processing`; `/stats` counts creates and polls.
"""

from __future__ import annotations

import sys
import uuid

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

COUNTS = {"creates": 0, "polls": 0}


def app(token: str) -> Starlette:
    async def create(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {token}":
            return JSONResponse({"title": "Unauthenticated", "detail": "bad token", "status": 401}, 401)
        await request.body()
        COUNTS["creates"] += 1
        return JSONResponse({"id": uuid.uuid4().hex, "status": "starting", "output": None, "error": None}, 201)

    async def get(request: Request) -> Response:
        COUNTS["polls"] += 1
        return JSONResponse({"id": request.path_params["id"], "status": "processing", "output": None, "error": None})

    async def stats(_: Request) -> Response:
        return JSONResponse(COUNTS)

    return Starlette(
        routes=[
            Route("/v1/models/{owner}/{name}/predictions", create, methods=["POST"]),
            Route("/v1/predictions/{id}", get),
            Route("/stats", stats),
        ]
    )


if __name__ == "__main__":
    port, token = int(sys.argv[1]), sys.argv[2]
    uvicorn.run(app(token), host="127.0.0.1", port=port, log_level="warning", backlog=4096)
