"""Submit-and-poll providers (sora, replicate, fal, higgsfield) against local fakes of their services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from backend.config import Settings, SettingsError
from backend.providers import build_providers
from tests.conftest import AppFactory, wait_for_status
from tests.fake_services.base import FakeService
from tests.fake_services.fal import FakeFal, serve_fal
from tests.fake_services.higgsfield import FakeHiggsfield, serve_higgsfield
from tests.fake_services.replicate import FakeReplicate, serve_replicate
from tests.fake_services.sora import FakeSora, serve_sora
from tests.polling import until

pytestmark = pytest.mark.usefixtures("engine")


@dataclass(frozen=True)
class Driver:
    """How to point the service at one fake, and what that fake's service can make."""

    name: str
    serve: Callable[[], AbstractContextManager[Any]]
    settings: Callable[[str], dict[str, str]]
    kinds: tuple[str, ...]


DRIVERS = {
    "sora": Driver(
        "sora",
        serve_sora,
        lambda url: {"openai_base_url": url, "openai_api_key": FakeSora.key},
        ("video",),
    ),
    "replicate": Driver(
        "replicate",
        serve_replicate,
        lambda url: {"replicate_base_url": url, "replicate_api_token": FakeReplicate.token},
        ("image", "video"),
    ),
    "fal": Driver(
        "fal",
        serve_fal,
        lambda url: {"fal_queue_url": url, "fal_key": FakeFal.key},
        ("image", "video"),
    ),
    "higgsfield": Driver(
        "higgsfield",
        serve_higgsfield,
        lambda url: {
            "higgsfield_base_url": url,
            "higgsfield_api_key": FakeHiggsfield.key,
            "higgsfield_secret": FakeHiggsfield.secret,
        },
        ("image", "video"),
    ),
}
CASES = [(name, kind) for name, driver in DRIVERS.items() for kind in driver.kinds]


@pytest.fixture(params=list(DRIVERS))
def driver(request: pytest.FixtureRequest) -> Driver:
    return DRIVERS[request.param]


@pytest.fixture
def fake(driver: Driver) -> Iterator[FakeService]:
    with driver.serve() as fake:
        yield fake


def env_settings(driver: Driver, url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "providers": f"animals,{driver.name}",
        "default_provider": driver.name,
        "poll_initial_seconds": 0.05,
        "poll_max_seconds": 0.2,
        **driver.settings(url),
        **overrides,
    }


async def submit(client: httpx.AsyncClient, kind: str, **extra: Any) -> str:
    body: dict[str, Any] = {"prompt": "an owl", **extra}
    body |= {"kind": "video", "durationSeconds": 4} if kind == "video" else {"numImages": 2}
    created = await client.post("/generations", json=body)
    assert created.status_code == 202, created.text
    job_id: str = created.json()["jobId"]
    return job_id


@pytest.mark.parametrize(("name", "kind"), CASES)
async def test_a_job_completes_with_the_services_bytes(make_client: AppFactory, name: str, kind: str) -> None:
    driver = DRIVERS[name]
    with driver.serve() as fake:
        client = await make_client(**env_settings(driver, fake.url))

        job = await wait_for_status(client, await submit(client, kind, seed=42), {"completed", "failed"})

        assert job["status"] == "completed", job["error"]
        assert job["attempts"] == 1 and len(fake.creates) == 1
        (remote_id,) = fake.jobs
        assert job["providerJobId"] == remote_id
        sent = fake.creates[0].get("input", fake.creates[0])  # Replicate wraps the model input
        assert sent["prompt"] == "an owl"
        assert name == "sora" or sent["seed"] == 42  # the Videos API takes no seed
        assert len(job["outputs"]) == (1 if kind == "video" else 2)
        for index, output in enumerate(job["outputs"]):
            stored = await client.get(output["url"])
            extension = "mp4" if kind == "video" else "png"
            expected, content_type = fake.media[f"{remote_id}-{index}.{extension}"]
            assert stored.content == expected, "the stored bytes are not the service's"
            assert output["contentType"] == content_type == stored.headers["content-type"]
            assert output["sizeBytes"] == len(expected)
            assert (output["width"], output["height"]) == ((448, 256) if kind == "video" else (256, 256))
            if kind == "video":
                assert output["durationSeconds"] == pytest.approx(1.0, abs=0.1)


async def test_cancel_reaches_the_service(make_client: AppFactory, driver: Driver, fake: FakeService) -> None:
    fake.hold = True
    client = await make_client(**env_settings(driver, fake.url))
    job_id = await submit(client, driver.kinds[0])
    await until(lambda: bool(fake.polls), "the job was never polled")

    canceled = await client.post(f"/generations/{job_id}/cancel")

    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    await until(lambda: fake.cancels == list(fake.jobs), "the remote job was not canceled")
    assert len(fake.creates) == 1


async def test_429_on_create_waits_for_retry_after(make_client: AppFactory, driver: Driver, fake: FakeService) -> None:
    fake.fail("create", 429, {"detail": "Request was throttled. Expected available in 1 second."}, {"Retry-After": "1"})
    client = await make_client(**env_settings(driver, fake.url))

    job = await wait_for_status(client, await submit(client, driver.kinds[0]), {"completed", "failed"})

    assert (job["status"], job["attempts"]) == ("completed", 2)
    ((throttled_at, _),) = fake.failed_at
    assert fake.create_times[0] - throttled_at >= 0.95, "the retry did not wait for Retry-After"


async def test_429_on_poll_waits_and_resumes_the_same_job(
    make_client: AppFactory, driver: Driver, fake: FakeService
) -> None:
    fake.fail("poll", 429, {"detail": "Request was throttled."}, {"Retry-After": "1"})
    client = await make_client(**env_settings(driver, fake.url))

    job = await wait_for_status(client, await submit(client, driver.kinds[0]), {"completed", "failed"})

    assert (job["status"], job["attempts"], len(fake.creates)) == ("completed", 1, 1)
    ((throttled_at, _),) = fake.failed_at
    assert fake.polls[0][0] - throttled_at >= 0.95, "the next poll did not wait for Retry-After"


async def test_failed_polls_end_the_attempt_and_the_next_resumes_the_remote_job(
    make_client: AppFactory, driver: Driver, fake: FakeService
) -> None:
    for _ in range(5):
        fake.fail("poll", 503, {"detail": "Service Unavailable"})
    client = await make_client(**env_settings(driver, fake.url))

    job = await wait_for_status(client, await submit(client, driver.kinds[0]), {"completed", "failed"})

    assert (job["status"], job["attempts"], len(fake.creates)) == ("completed", 2, 1)


async def test_a_content_policy_refusal_fails_at_once(
    make_client: AppFactory, driver: Driver, fake: FakeService
) -> None:
    fake.outcome = "policy"
    client = await make_client(**env_settings(driver, fake.url))

    job = await wait_for_status(client, await submit(client, driver.kinds[0]), {"completed", "failed"})

    assert (job["status"], job["error"]["code"], job["attempts"]) == ("failed", "content_policy", 1)
    assert job["outputs"] is None and len(fake.creates) == 1


async def test_a_remote_failure_is_retried_with_a_new_remote_job(
    make_client: AppFactory, driver: Driver, fake: FakeService
) -> None:
    fake.outcome = "failed"
    client = await make_client(**env_settings(driver, fake.url, max_attempts=2))

    job = await wait_for_status(client, await submit(client, driver.kinds[0]), {"completed", "failed"})

    assert (job["status"], job["attempts"], len(fake.creates)) == ("failed", 2, 2)
    assert job["error"]["code"] in ("provider_failed", "provider_unavailable")
    assert job["providerJobId"] is None


async def test_bad_credentials_fail_at_once(make_client: AppFactory, driver: Driver, fake: FakeService) -> None:
    settings = env_settings(driver, fake.url)
    for key in ("openai_api_key", "replicate_api_token", "fal_key", "higgsfield_secret"):
        if key in settings:
            settings[key] = "wrong"
    client = await make_client(**settings)

    job = await wait_for_status(client, await submit(client, driver.kinds[0]), {"completed", "failed"})

    assert (job["status"], job["error"]["code"], job["attempts"]) == ("failed", "provider_auth", 1)
    assert "wrong" not in job["error"]["message"] and fake.creates == []


async def test_an_output_over_max_output_bytes_is_refused(
    make_client: AppFactory, driver: Driver, fake: FakeService
) -> None:
    client = await make_client(**env_settings(driver, fake.url, max_output_bytes=1024))

    job = await wait_for_status(client, await submit(client, driver.kinds[0]), {"completed", "failed"})

    assert (job["status"], job["error"]["code"]) == ("failed", "provider_bad_response")
    assert "MAX_OUTPUT_BYTES" in job["error"]["message"]


async def test_a_file_of_the_wrong_type_is_refused(make_client: AppFactory, driver: Driver, fake: FakeService) -> None:
    fake.fail("file", 200, {"not": "media"})
    client = await make_client(**env_settings(driver, fake.url))

    job = await wait_for_status(client, await submit(client, driver.kinds[0]), {"completed", "failed"})

    assert (job["status"], job["error"]["code"], job["attempts"]) == ("failed", "provider_bad_response", 1)


async def test_sora_cannot_make_images(make_client: AppFactory) -> None:
    client = await make_client(**env_settings(DRIVERS["sora"], "http://127.0.0.1:9"))
    response = await client.post("/generations", json={"numImages": 1, "provider": "sora"})
    assert response.status_code == 422 and "animals" in response.text


@pytest.mark.parametrize(
    ("providers", "setting"),
    [
        ("animals,sora", "OPENAI_API_KEY"),
        ("animals,replicate", "REPLICATE_API_TOKEN"),
        ("animals,fal", "FAL_KEY"),
        ("animals,higgsfield", "HIGGSFIELD_API_KEY"),
    ],
)
def test_each_service_needs_its_credentials(providers: str, setting: str) -> None:
    with pytest.raises(SettingsError, match=setting):
        build_providers(Settings(_env_file=None, providers=providers))
