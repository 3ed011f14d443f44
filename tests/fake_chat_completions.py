"""A local fake of OpenAI's chat-completions endpoint, speaking its real HTTP protocol on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fake_http import serve_in_thread


@dataclass
class FakeChatCompletions:
    """Answers with `reply` (or `status`/`body` when set) after `delay` seconds; records requests."""

    reply: str = "a majestic red fox in fresh snow, golden hour light, 35mm photograph"
    status: int = 200
    body: Any = None
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    answered: int = 0
    url: str = ""

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append({"authorization": request.headers.get("authorization"), **body})
        if self.delay:
            await asyncio.sleep(self.delay)
        self.answered += 1
        if self.body is not None or self.status != 200:
            return JSONResponse(self.body, self.status)
        return JSONResponse(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.reply, "refusal": None},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 20, "completion_tokens": 15, "total_tokens": 35},
            }
        )


@contextmanager
def serve_fake_chat_completions() -> Iterator[FakeChatCompletions]:
    fake = FakeChatCompletions()
    with serve_in_thread(
        Starlette(routes=[Route("/v1/chat/completions", fake.completions, methods=["POST"])]), "fake chat completions"
    ) as url:
        fake.url = url
        yield fake
