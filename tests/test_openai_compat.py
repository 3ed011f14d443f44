"""OpenAI's own Python SDK against the live service under /v1: images, videos, and its error types."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from backend.providers import PermanentProviderError
from tests.conftest import LiveServerFactory
from tests.fakes import ScriptedProvider


def sdk(url: str, **options: object) -> openai.OpenAI:
    # OpenAI's SDKs insist on some key; without AUTH_REQUIRED any key is the anonymous account.
    settings: dict[str, object] = {"max_retries": 0, **options}
    return openai.OpenAI(base_url=f"{url}/v1", api_key="sk-anything", **settings)  # type: ignore[arg-type]


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


def test_images_generate_answers_urls_that_serve_pngs(make_live_server: LiveServerFactory) -> None:
    url = make_live_server()

    result = sdk(url).images.generate(prompt="a fox", n=2, size="1024x1024")

    assert result.created > 0
    assert result.data is not None and len(result.data) == 2
    bodies = set()
    for image in result.data:
        assert image.url is not None and image.b64_json is None
        response = httpx.get(image.url)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        png(response.content)
        bodies.add(response.content)
    assert len(bodies) == 2


def test_images_generate_b64_json_inlines_the_images(make_live_server: LiveServerFactory) -> None:
    url = make_live_server()

    result = sdk(url).images.generate(prompt="an owl", n=3, response_format="b64_json", model="animals")

    assert result.data is not None and len(result.data) == 3
    decoded = [base64.b64decode(image.b64_json or "") for image in result.data]
    assert all(png(data).width > 0 for data in decoded)
    assert len(set(decoded)) == 3
    # The job behind it is an ordinary one, visible to every other client.
    jobs = httpx.get(f"{url}/generations").json()
    assert [(job["numImages"], job["prompt"], job["status"]) for job in jobs] == [(3, "an owl", "completed")]


@pytest.mark.parametrize(
    ("options", "param", "words"),
    [
        ({"n": 0}, "n", "greater than or equal to 1"),
        ({"n": 11}, "n", "MAX_IMAGES_PER_JOB"),
        ({"model": "dall-e-9"}, "model", "known: animals, noop"),
        ({"response_format": "gif"}, "response_format", "'url' or 'b64_json'"),
        ({"size": "huge"}, "size", "pattern"),
        ({"extra_body": {"colour": "red"}}, "colour", "Extra inputs"),
    ],
)
def test_invalid_image_requests_raise_the_sdks_bad_request_error(
    make_live_server: LiveServerFactory, options: dict[str, object], param: str, words: str
) -> None:
    url = make_live_server()

    with pytest.raises(openai.BadRequestError) as raised:
        sdk(url).images.generate(prompt="a fox", **options)  # type: ignore[arg-type]

    error = raised.value
    assert error.status_code == 400
    assert error.param == param and error.type == "invalid_request_error" and error.code == "invalid_request"
    assert words in error.message
    body = error.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}
    assert httpx.get(f"{url}/generations").json() == []


def test_a_non_json_body_is_a_400_in_openai_shape(make_live_server: LiveServerFactory) -> None:
    url = make_live_server()

    response = httpx.post(f"{url}/v1/images/generations", content=b"prompt=fox", headers={"content-type": "text/plain"})

    assert response.status_code == 415
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_unknown_v1_route_raises_the_sdks_not_found_error(make_live_server: LiveServerFactory) -> None:
    url = make_live_server()

    with pytest.raises(openai.NotFoundError) as raised:
        sdk(url).models.list()

    assert raised.value.status_code == 404 and raised.value.code == "not_found"


def test_a_failed_job_is_an_error_the_sdk_does_not_retry(make_live_server: LiveServerFactory) -> None:
    refuses = ScriptedProvider([PermanentProviderError("content_policy", "the prompt was refused")], name="strict")
    url = make_live_server({"strict": refuses}, default_provider="strict")

    with pytest.raises(openai.BadRequestError) as raised:
        sdk(url, max_retries=2).images.generate(prompt="something refused")

    assert raised.value.code == "content_policy" and "refused" in raised.value.message
    assert len(refuses.runs) == 1


def test_a_job_still_running_at_the_deadline_is_a_504_that_names_it(make_live_server: LiveServerFactory) -> None:
    slow = ScriptedProvider(delay=30.0, name="slow")
    url = make_live_server({"slow": slow}, default_provider="slow", openai_compat_wait=0.3)

    with pytest.raises(openai.InternalServerError) as raised:
        # The SDK would retry a 504 (and create another job) unless told not to.
        sdk(url, max_retries=2).images.generate(prompt="slowly")

    assert raised.value.status_code == 504 and raised.value.code == "timeout"
    jobs = httpx.get(f"{url}/generations").json()
    assert len(jobs) == 1 and jobs[0]["jobId"] in raised.value.message
    assert jobs[0]["status"] == "processing"
