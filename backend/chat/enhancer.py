"""Optional prompt enhancement through an OpenAI-compatible chat-completions call.

The protocol (platform.openai.com/docs/api-reference/chat/create): `POST /v1/chat/completions`
with `{"model", "messages": [{"role", "content"}], "max_completion_tokens"}` and
`Authorization: Bearer <key>`; the answer's text is `choices[0].message.content`.
Enhancement is a nicety: any failure (down, slow, refused, odd answer) keeps the person's words.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import httpx

from backend.jobs.schemas import PROMPT_MAX_LENGTH

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "Rewrite the user's request as one vivid, concrete prompt for an image or video generator. "
    "Keep every detail they gave, add lighting, composition and style, and answer with the prompt only, "
    f"in at most {PROMPT_MAX_LENGTH} characters."
)


class PromptEnhancer(Protocol):
    async def enhance(self, text: str) -> str | None:
        """A better prompt, or None to keep the original."""
        ...

    async def aclose(self) -> None: ...


class NoEnhancer:
    async def enhance(self, text: str) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


class OpenAIEnhancer:
    """One chat-completions call per message, bounded by `timeout` seconds end to end."""

    def __init__(self, *, base_url: str, api_key: str | None, model: str, timeout: float) -> None:
        self.model = model
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=httpx.Timeout(timeout))

    async def enhance(self, text: str) -> str | None:
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": text}],
            "max_completion_tokens": 400,
        }
        try:
            # httpx's timeout bounds each phase; this bounds the whole call, slow trickles included.
            async with asyncio.timeout(self.timeout):
                response = await self.client.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            content = response.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, TimeoutError, ValueError, KeyError, IndexError, TypeError) as exc:
            log.warning("prompt enhancer unavailable, keeping the original prompt: %s", exc.__class__.__name__)
            return None
        if not isinstance(content, str) or not content.strip():
            return None
        return content.strip()[:PROMPT_MAX_LENGTH]

    async def aclose(self) -> None:
        await self.client.aclose()
