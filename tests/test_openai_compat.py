"""OpenAI's own Python SDK against the live service under /v1: images, videos, and its error types."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import openai
import pytest
from PIL import Image

from backend.providers import PermanentProviderError
from backend.providers.base import GeneratedOutput, GenerationSpec
from tests.conftest import LiveServerFactory
from tests.fakes import ScriptedProvider

# The SDK marks its videos methods deprecated (OpenAI's Sora service is retiring); the API shape is what we serve.
pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")


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


MP4_HEADER = b"\x00\x00\x00\x18ftypmp42"


@dataclass
class ClipProvider:
    """Makes a small MP4-typed clip per video job; `gate` holds jobs until a test opens it."""

    name: str = "clips"
    kinds: frozenset[str] = frozenset({"image", "video"})
    seconds_per_image: float = 0.0
    gate: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.gate.set()

    async def generate(self, spec: GenerationSpec) -> AsyncIterator[GeneratedOutput]:
        while not self.gate.is_set():
            await asyncio.sleep(0.01)
        width, height = {"16:9": (1280, 720), "9:16": (720, 1280)}.get(spec.aspect_ratio, (512, 512))
        body = f"{spec.job_id} {spec.duration_seconds}s {spec.aspect_ratio}".encode()
        yield GeneratedOutput(MP4_HEADER + body, "video/mp4", None, width, height, float(spec.duration_seconds))


def test_videos_create_poll_download_and_list(make_live_server: LiveServerFactory) -> None:
    url = make_live_server({"clips": ClipProvider(), "animals": ClipProvider(name="animals")})
    client = sdk(url)

    created = client.videos.create(prompt="a fox running", model="clips", seconds="8", size="1280x720")

    assert created.object == "video" and created.status in ("queued", "in_progress", "completed")
    assert (created.model, created.seconds, created.size, created.prompt) == ("clips", "8", "1280x720", "a fox running")
    done = client.videos.poll(created.id, poll_interval_ms=20)
    assert done.status == "completed" and done.progress == 100 and done.error is None
    assert done.completed_at is not None and done.completed_at >= done.created_at
    content = client.videos.download_content(created.id)
    assert content.response.headers["content-type"] == "video/mp4"
    assert content.content == MP4_HEADER + f"{created.id} 8s 16:9".encode()
    job = httpx.get(f"{url}/generations/{created.id}").json()
    assert (job["kind"], job["durationSeconds"], job["aspectRatio"]) == ("video", 8, "16:9")
    assert [video.id for video in client.videos.list()] == [created.id]


def test_videos_accept_json_and_default_to_a_four_second_portrait(make_live_server: LiveServerFactory) -> None:
    url = make_live_server({"animals": ClipProvider(name="animals")}, worker_enabled=False)

    response = httpx.post(f"{url}/v1/videos", json={"prompt": "waves"}, headers={"Authorization": "Bearer sk-x"})

    assert response.status_code == 200, response.text
    video = response.json()
    assert (video["status"], video["progress"], video["seconds"], video["size"]) == ("queued", 0, "4", "720x1280")
    assert (video["model"], video["error"], video["completed_at"]) == ("animals", None, None)
    assert httpx.get(f"{url}/generations/{video['id']}").json()["aspectRatio"] == "9:16"


def test_video_list_pages_newest_first_and_holds_only_videos(make_live_server: LiveServerFactory) -> None:
    url = make_live_server({"animals": ClipProvider(name="animals")}, worker_enabled=False)
    client = sdk(url)
    ids = [client.videos.create(prompt=f"clip {i}").id for i in range(3)]
    httpx.post(f"{url}/generations", json={"numImages": 1})

    first = client.videos.list(limit=2)
    assert [v.id for v in first.data] == ids[:0:-1] and first.has_more and first.last_id == ids[1]
    assert [v.id for v in client.videos.list(limit=2)] == ids[::-1]  # the SDK follows `after` itself
    assert [v.id for v in client.videos.list(limit=2, order="asc")] == ids


def test_video_errors_are_the_sdks_exception_types(make_live_server: LiveServerFactory) -> None:
    gated = ClipProvider(name="animals")
    gated.gate.clear()
    url = make_live_server({"animals": gated, "noop": ScriptedProvider(name="noop")})
    client = sdk(url)
    image_job = httpx.post(f"{url}/generations", json={"numImages": 1, "provider": "noop"}).json()["jobId"]

    for missing in ("6f1c1f3e-52bb-4b53-a1c7-4d8f0e3b6a11", "not-an-id", image_job):
        with pytest.raises(openai.NotFoundError):
            client.videos.retrieve(missing)
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(image_job)

    running = client.videos.create(prompt="slow")
    with pytest.raises(openai.ConflictError) as not_ready:
        client.videos.download_content(running.id)
    assert not_ready.value.code == "video_not_ready"
    gated.gate.set()
    assert client.videos.poll(running.id, poll_interval_ms=20).status == "completed"

    bad: list[tuple[dict[str, object], str]] = [
        ({"seconds": "30"}, "seconds"),
        ({"size": "1000x300"}, "size"),
        ({"model": "nope"}, "model"),
        ({"model": "noop"}, "model"),
        ({"input_reference": ("ref.png", b"\x89PNG", "image/png")}, "input_reference"),
    ]
    for options, param in bad:
        with pytest.raises(openai.BadRequestError) as raised:
            client.videos.create(prompt="a fox", **options)  # type: ignore[arg-type]
        assert raised.value.param == param, (options, raised.value.message)
    assert len(httpx.get(f"{url}/generations").json()) == 2


def test_a_failed_video_reports_its_error(make_live_server: LiveServerFactory) -> None:
    failing = ScriptedProvider([PermanentProviderError("content_policy", "refused")], name="strict")
    failing.kinds = frozenset({"video"})  # type: ignore[attr-defined]
    url = make_live_server({"strict": failing, "animals": ClipProvider(name="animals")})
    client = sdk(url)

    video = client.videos.poll(client.videos.create(prompt="no", model="strict").id, poll_interval_ms=20)

    assert video.status == "failed" and video.error is not None
    assert (video.error.code, video.error.message) == ("content_policy", "refused")


def test_the_animals_provider_makes_a_real_mp4_through_the_sdk(make_live_server: LiveServerFactory) -> None:
    client = sdk(make_live_server())

    video = client.videos.poll(
        client.videos.create(prompt="a fox", seconds="1", size="720x1280").id, poll_interval_ms=50
    )

    assert video.status == "completed" and video.model == "animals"
    mp4 = client.videos.download_content(video.id).content
    assert mp4[4:8] == b"ftyp" and len(mp4) > 1000
    width, height = (int(side) for side in video.size.split("x"))
    assert height > width  # 9:16, as asked


def test_an_unknown_key_is_the_sdks_authentication_error(make_live_server: LiveServerFactory) -> None:
    url = make_live_server(auth_required=True)

    with pytest.raises(openai.AuthenticationError) as raised:
        sdk(url).images.generate(prompt="a fox")

    assert raised.value.status_code == 401 and raised.value.type == "invalid_request_error"
    assert raised.value.code == "invalid_api_key"
    assert raised.value.response.headers["www-authenticate"].startswith("Bearer")
    with pytest.raises(openai.AuthenticationError):
        sdk(url).videos.list()


def test_over_the_rate_limit_is_the_sdks_rate_limit_error(make_live_server: LiveServerFactory) -> None:
    url = make_live_server(rate_limit_per_minute=1, worker_enabled=False)
    client = sdk(url)
    client.videos.create(prompt="the one allowed")

    with pytest.raises(openai.RateLimitError) as raised:
        client.videos.create(prompt="one too many")

    assert raised.value.code == "rate_limit_exceeded" and raised.value.type == "rate_limit_error"
    assert int(raised.value.response.headers["retry-after"]) >= 1
    assert "x-should-retry" not in raised.value.response.headers  # the SDK may retry after Retry-After
    assert len(httpx.get(f"{url}/generations").json()) == 1
