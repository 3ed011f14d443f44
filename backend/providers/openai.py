"""OpenAI Images (`POST /v1/images/generations`), one image per request.

One request per image keeps each call short, lets a cancel stop between images,
and means a retry after a failure repeats only the images not yet made.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator

import httpx

from backend.providers.base import (
    GeneratedImage,
    GenerationSpec,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)

DEFAULT_PROMPT = "a friendly animal, studio portrait"
_SIGNATURES = ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"RIFF", "image/webp"))


class OpenAIImagesProvider:
    name = "openai"

    def __init__(
        self, *, base_url: str, api_key: str, model: str, size: str, timeout: float, seconds_per_image: float = 10.0
    ) -> None:
        self.model = model
        self.size = size
        self.seconds_per_image = seconds_per_image
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        )

    async def generate(self, spec: GenerationSpec) -> AsyncIterator[GeneratedImage]:
        body = {"model": self.model, "prompt": spec.prompt or DEFAULT_PROMPT, "n": 1, "size": self.size}
        if self.model.startswith("dall-e"):
            body["response_format"] = "b64_json"  # newer models always answer with b64_json
        for _ in range(spec.num_images):
            try:
                response = await self.client.post("/v1/images/generations", json=body)
            except httpx.TimeoutException:
                raise TransientProviderError("provider_timeout", "OpenAI did not answer in time") from None
            except httpx.TransportError as exc:
                raise TransientProviderError("provider_unreachable", f"cannot reach OpenAI ({exc})") from None
            if response.status_code != 200:
                raise classify(response)
            yield decode(response)

    async def aclose(self) -> None:
        await self.client.aclose()


def classify(response: httpx.Response) -> ProviderError:
    """Map an OpenAI error answer to a transient (retried) or permanent error."""
    status = response.status_code
    try:
        error = response.json().get("error") or {}
        message = str(error.get("message") or response.reason_phrase)
        code = str(error.get("code") or "")
    except ValueError:
        message, code = response.reason_phrase, ""
    if status == 429:
        return TransientProviderError("provider_rate_limited", f"OpenAI rate limit: {message}")
    if status >= 500:
        return TransientProviderError("provider_unavailable", f"OpenAI returned {status}: {message}")
    if code in ("content_policy_violation", "moderation_blocked") or "safety" in code:
        return PermanentProviderError("content_policy", f"the prompt was refused: {message}")
    if status in (401, 403):
        return PermanentProviderError("provider_auth", f"OpenAI refused the API key ({status})")
    return PermanentProviderError("provider_rejected", f"OpenAI rejected the request ({status}): {message}")


def decode(response: httpx.Response) -> GeneratedImage:
    try:
        data = base64.b64decode(response.json()["data"][0]["b64_json"], validate=True)
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
        raise TransientProviderError("provider_bad_response", "OpenAI answered without an image") from None
    for signature, content_type in _SIGNATURES:
        if data.startswith(signature):
            return GeneratedImage(data, content_type)
    raise TransientProviderError("provider_bad_response", "OpenAI answered with bytes that are not an image")
