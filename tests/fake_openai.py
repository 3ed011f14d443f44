"""A local fake of OpenAI's Images API, speaking its real HTTP protocol on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backend.providers.animals import render
from tests.fake_http import serve_in_thread


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    delay: float = 0.0


@dataclass
class FakeOpenAI:
    """Answers from `script` in order, then succeeds; records every request it saw."""

    script: deque[Reply] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def error(self, status: int, message: str, code: str | None = None, delay: float = 0.0) -> None:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
        self.script.append(Reply(status, body, delay))

    async def generations(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"authorization": request.headers.get("authorization"), **body})
        reply = self.script.popleft() if self.script else Reply()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.body is not None:
            if isinstance(reply.body, bytes):
                return Response(reply.body, reply.status, media_type="application/json")
            return JSONResponse(reply.body, reply.status)
        png = render("cat", body.get("prompt"), f"openai/{len(self.requests)}", len(self.requests))
        return JSONResponse({"created": int(time.time()), "data": [{"b64_json": base64.b64encode(png).decode()}]})


@contextmanager
def serve_fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    with serve_in_thread(
        Starlette(routes=[Route("/v1/images/generations", fake.generations, methods=["POST"])]), "fake OpenAI"
    ) as url:
        fake.url = url
        yield fake
