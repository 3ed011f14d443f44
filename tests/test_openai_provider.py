"""The OpenAI Images provider against a local fake server speaking OpenAI's protocol."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from backend.config import Settings, SettingsError
from backend.embedded_pg import free_port
from backend.providers import build_providers
from tests.conftest import AppFactory, wait_for_status
from tests.fake_openai import FakeOpenAI, Reply, serve_fake_openai

pytestmark = pytest.mark.usefixtures("engine")


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with serve_fake_openai() as fake:
        yield fake


async def openai_client(make_client: AppFactory, base_url: str, **overrides: Any) -> httpx.AsyncClient:
    settings = {
        "providers": "animals,openai",
        "openai_base_url": base_url,
        "openai_api_key": "sk-test",
        "openai_model": "dall-e-2",
        "openai_image_size": "256x256",
        "max_attempts": 3,
    }
    return await make_client(**(settings | overrides))


async def run_job(client: httpx.AsyncClient, num_images: int = 2, prompt: str | None = "a cat") -> dict[str, Any]:
    created = await client.post("/generations", json={"numImages": num_images, "provider": "openai", "prompt": prompt})
    assert created.status_code == 202, created.text
    return await wait_for_status(client, created.json()["jobId"], {"completed", "failed"})


async def test_images_come_from_the_api(make_client: AppFactory, fake_openai: FakeOpenAI) -> None:
    client = await openai_client(make_client, fake_openai.url)

    job = await run_job(client)

    assert job["status"] == "completed" and job["attempts"] == 1
    assert len(fake_openai.requests) == 2
    first = fake_openai.requests[0]
    assert first["authorization"] == "Bearer sk-test"
    assert (first["model"], first["prompt"], first["n"], first["size"]) == ("dall-e-2", "a cat", 1, "256x256")
    assert first["response_format"] == "b64_json"
    image = await client.get(job["imageUrls"][1])
    assert image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).format == "PNG"


async def test_rate_limits_and_server_errors_are_retried(make_client: AppFactory, fake_openai: FakeOpenAI) -> None:
    fake_openai.error(429, "Rate limit reached for requests", "rate_limit_exceeded")
    fake_openai.error(503, "The server is overloaded")
    client = await openai_client(make_client, fake_openai.url)

    job = await run_job(client, num_images=1)

    assert job["status"] == "completed"
    assert job["attempts"] == 3


async def test_content_policy_fails_at_once(make_client: AppFactory, fake_openai: FakeOpenAI) -> None:
    fake_openai.error(400, "Your request was rejected by our safety system.", "content_policy_violation")
    client = await openai_client(make_client, fake_openai.url)

    job = await run_job(client)

    assert job["status"] == "failed" and job["attempts"] == 1
    assert job["error"]["code"] == "content_policy"
    assert "safety system" in job["error"]["message"]


async def test_a_bad_api_key_fails_at_once(make_client: AppFactory, fake_openai: FakeOpenAI) -> None:
    fake_openai.error(401, "Incorrect API key provided", "invalid_api_key")
    client = await openai_client(make_client, fake_openai.url)

    job = await run_job(client)

    assert (job["status"], job["error"]["code"], job["attempts"]) == ("failed", "provider_auth", 1)
    assert "sk-test" not in job["error"]["message"]


async def test_a_slow_api_times_out_as_a_transient_error(make_client: AppFactory, fake_openai: FakeOpenAI) -> None:
    fake_openai.script.append(Reply(delay=3))
    client = await openai_client(make_client, fake_openai.url, openai_timeout=0.3, max_attempts=1)

    job = await run_job(client, num_images=1)

    assert (job["status"], job["error"]["code"]) == ("failed", "provider_timeout")
    assert "gave up after 1 attempts" in job["error"]["message"]


async def test_garbage_answers_are_retried_not_stored(make_client: AppFactory, fake_openai: FakeOpenAI) -> None:
    fake_openai.script.append(Reply(200, b"{not json"))
    fake_openai.script.append(Reply(200, {"data": [{"b64_json": "bm90IGFuIGltYWdl"}]}))  # "not an image"
    client = await openai_client(make_client, fake_openai.url)

    job = await run_job(client, num_images=1)

    assert (job["status"], job["attempts"]) == ("completed", 3)


async def test_an_unreachable_api_is_a_transient_error(make_client: AppFactory) -> None:
    client = await openai_client(make_client, f"http://127.0.0.1:{free_port()}", max_attempts=2)

    job = await run_job(client, num_images=1)

    assert (job["status"], job["error"]["code"], job["attempts"]) == ("failed", "provider_unreachable", 2)


def test_openai_needs_an_api_key() -> None:
    settings = Settings(_env_file=None, providers="animals,openai")
    with pytest.raises(SettingsError, match="OPENAI_API_KEY"):
        build_providers(settings)
