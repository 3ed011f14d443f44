"""The HTTP contract: create, read, list, images, and a clear 4xx for every bad input."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import APPS, AppFactory, wait_for_status

pytestmark = pytest.mark.usefixtures("engine")

JSON = {"content-type": "application/json"}


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    assert "Traceback" not in response.text
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body


async def test_create_returns_202_with_location_and_pending_job(client: httpx.AsyncClient) -> None:
    response = await client.post("/generations", json={"numImages": 3})

    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/generations/{job['jobId']}"
    assert int(response.headers["retry-after"]) >= 1
    assert job["status"] == "pending"
    assert job["numImages"] == 3
    assert job["provider"] == "animals"
    assert job["animal"] is None and job["imageUrls"] is None and job["error"] is None
    assert job["createdAt"].endswith("Z")


async def test_job_completes_with_distinct_png_images(client: httpx.AsyncClient) -> None:
    created = (await client.post("/generations", json={"numImages": 3, "prompt": "a cute bear"})).json()

    job = await wait_for_status(client, created["jobId"], {"completed"})

    assert job["animal"] and job["attempts"] == 1 and job["error"] is None
    assert job["startedAt"] and job["completedAt"] and job["prompt"] == "a cute bear"
    assert len(job["imageUrls"]) == 3
    bodies = []
    for url in job["imageUrls"]:
        image = await client.get(url)
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert "immutable" in image.headers["cache-control"]
        assert Image.open(io.BytesIO(image.content)).format == "PNG"
        bodies.append(image.content)
    assert len(set(bodies)) == 3


async def test_get_unknown_or_malformed_id_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/generations/6f1c1f3e-52bb-4b53-a1c7-4d8f0e3b6a11"), 404)
    assert_problem(await client.get("/generations/not-a-uuid"), 404)


async def test_list_is_newest_first_with_keyset_pages(make_client: AppFactory) -> None:
    client = await make_client(worker_enabled=False)
    ids = [(await client.post("/generations", json={"numImages": 1})).json()["jobId"] for _ in range(5)]

    seen: list[str] = []
    url: str | None = "/generations?limit=2"
    while url:
        response = await client.get(url)
        assert response.status_code == 200
        page = response.json()
        assert len(page) <= 2
        seen += [job["jobId"] for job in page]
        link = response.headers.get("link")
        url = link[1 : link.index(">")] if link else None
        assert link is None or link.endswith('rel="next"')

    assert seen == list(reversed(ids))


async def test_list_filters_by_status(make_client: AppFactory) -> None:
    client = await make_client(worker_enabled=False)
    keep = (await client.post("/generations", json={"numImages": 1})).json()["jobId"]
    gone = (await client.post("/generations", json={"numImages": 1})).json()["jobId"]
    await client.post(f"/generations/{gone}/cancel")

    pending = (await client.get("/generations", params={"status": "pending"})).json()
    canceled = (await client.get("/generations", params={"status": "canceled"})).json()

    assert [job["jobId"] for job in pending] == [keep]
    assert [job["jobId"] for job in canceled] == [gone]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"numImages": 0}, "numImages"),
        ({"numImages": 11}, "numImages"),
        ({"numImages": -3}, "numImages"),
        ({"numImages": "3"}, "numImages"),
        ({"numImages": 3.5}, "numImages"),
        ({"numImages": True}, "numImages"),
        ({"numImages": None}, "numImages"),
        ({}, "numImages"),
        ({"numImages": 2, "colour": "red"}, "colour"),
        ({"numImages": 2, "prompt": "x" * 1001}, "prompt"),
        ({"numImages": 2, "prompt": 7}, "prompt"),
        ({"numImages": 2, "provider": "dall-e-9"}, "provider"),
        ([1, 2], "body"),
        ("numImages", "body"),
    ],
)
async def test_invalid_bodies_are_422_naming_the_field(client: httpx.AsyncClient, body: Any, field: str) -> None:
    assert_problem(await client.post("/generations", json=body), 422, field)


async def test_unknown_provider_lists_the_known_ones(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.post("/generations", json={"numImages": 1, "provider": "nope"}), 422)
    assert "animals" in body["detail"] and "noop" in body["detail"]


async def test_missing_and_malformed_bodies_are_422(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/generations"), 422, "body")
    assert_problem(await client.post("/generations", content=b"{not json", headers=JSON), 422, "body")
    assert_problem(await client.post("/generations", content=b"\xff\xfe", headers=JSON), 422, "body")
    assert_problem(await client.post("/generations", content=b"\xb1\xe7\x11/", headers=JSON), 422, "body")


async def test_wrong_content_type_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post("/generations", content=b'{"numImages": 1}', headers={"content-type": "text/plain"})
    assert_problem(response, 415)


async def test_body_over_64_kib_is_413_before_parsing(client: httpx.AsyncClient) -> None:
    big = b'{"numImages": 1, "prompt": "' + b"x" * (64 * 1024) + b'"}'
    assert_problem(await client.post("/generations", content=big, headers=JSON), 413)

    async def chunks() -> Any:  # no Content-Length: the limit counts streamed bytes
        for _ in range(70):
            yield b" " * 1024

    assert_problem(await client.post("/generations", content=chunks(), headers=JSON), 413)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=abc", "limit"),
        ("status=done", "status"),
        ("cursor=zz", "cursor"),
    ],
)
async def test_invalid_list_queries_are_422(client: httpx.AsyncClient, query: str, field: str) -> None:
    assert_problem(await client.get(f"/generations?{query}"), 422, field)


async def test_max_images_follows_the_setting(make_client: AppFactory) -> None:
    client = await make_client(max_images_per_job=2, worker_enabled=False)
    assert (await client.post("/generations", json={"numImages": 2})).status_code == 202
    body = assert_problem(await client.post("/generations", json={"numImages": 3}), 422, "numImages")
    assert "MAX_IMAGES_PER_JOB" in body["detail"]


async def test_unknown_route_is_a_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nope"), 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/generations", ["GET", "POST"]),
        ("DELETE", "/generations", ["GET", "POST"]),
        ("POST", "/generations/6f1c1f3e-52bb-4b53-a1c7-4d8f0e3b6a11", ["GET", "DELETE"]),
        ("GET", "/generations/6f1c1f3e-52bb-4b53-a1c7-4d8f0e3b6a11/cancel", ["POST"]),
        ("POST", "/healthz", ["GET"]),
    ],
)
async def test_wrong_method_lists_the_allowed_ones(
    client: httpx.AsyncClient, method: str, path: str, allowed: list[str]
) -> None:
    response = await client.request(method, path, json={} if method in ("PUT", "POST") else None)
    body = assert_problem(response, 405)
    assert [m.strip() for m in response.headers["allow"].split(",")] == allowed
    assert body["detail"] == f"{method} is not allowed here; use {' or '.join(allowed)}"
    assert body["code"] == "method_not_allowed"


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    response = await client.get("/generations", headers={"Origin": "https://app.example.com"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


async def test_cors_answers_preflights_and_requests_from_configured_origins(make_client: AppFactory) -> None:
    client = await make_client(cors_origins="https://app.example.com, http://localhost:5173/", worker_enabled=False)
    preflight = await client.options(
        "/generations",
        headers={
            "Origin": "http://localhost:5173",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed_headers = preflight.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type", "idempotency-key"} <= {h.strip() for h in allowed_headers.split(",")}

    created = await client.post("/generations", json={"numImages": 1}, headers={"Origin": "https://app.example.com"})
    assert created.status_code == 202
    assert created.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "location" in created.headers["access-control-expose-headers"].lower()

    # A problem answer carries the header too, or the browser hides its detail from the page.
    too_big = await client.post(
        "/generations", content=b"x" * 70_000, headers={**JSON, "Origin": "https://app.example.com"}
    )
    assert too_big.status_code == 413
    assert too_big.headers["access-control-allow-origin"] == "https://app.example.com"

    stranger = await client.options(
        "/generations", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert stranger.status_code == 400
    assert "access-control-allow-origin" not in stranger.headers


@pytest.mark.parametrize(
    "path",
    [
        "/images/../../etc/passwd",
        "/images/..%2F..%2Fetc/passwd",
        "/images/6f1c1f3e-52bb-4b53-a1c7-4d8f0e3b6a11/0.png",
        "/images/6f1c1f3e-52bb-4b53-a1c7-4d8f0e3b6a11/..%2F..%2Fpostgres%2FPG_VERSION",
        "/images/x/0.png",
    ],
)
async def test_images_cannot_escape_their_folder(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 404


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok", "checks": {}}
    # The worker's LISTEN connection opens in the background after start-up: ready within a deadline.
    deadline = time.monotonic() + 10
    while (ready := await client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "schema": "ok", "worker": "ok"}


async def test_openapi_documents_the_api(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert {"/generations", "/generations/{job_id}", "/generations/{job_id}/cancel"} <= set(schema["paths"])
    assert (await client.get("/docs")).status_code == 200


async def test_an_unexpected_error_is_a_problem_without_a_traceback(make_client: AppFactory) -> None:
    client = await make_client(worker_enabled=False)

    async def broken() -> None:
        raise RuntimeError("secret internal detail")

    APPS[client].add_api_route("/broken", broken)
    # The app re-raises after answering so the server logs it; a real server keeps serving.
    transport = httpx.ASGITransport(app=APPS[client], raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as raw:
        response = await raw.get("/broken")

    body = assert_problem(response, 500)
    assert body["code"] == "internal_error"
    assert "secret internal detail" not in response.text


async def test_text_postgresql_cannot_store_is_a_422(client: httpx.AsyncClient) -> None:
    bodies = [
        b'{"numImages": 1, "prompt": "a\\u0000b"}',
        b'{"numImages": 1, "params": {"k\\u0000": 1}}',
        b'{"numImages": 1, "prompt": "lone \\ud800 surrogate"}',
        b'{"numImages": 1, "params": {"k": ["\\udfff"]}}',
    ]
    for body in bodies:
        response = await client.post("/generations", content=body, headers=JSON)
        assert_problem(response, 422)
    chat = (await client.post("/chats", json={})).json()
    message = await client.post(f"/chats/{chat['id']}/messages", content=b'{"text": "a\\u0000b"}', headers=JSON)
    assert_problem(message, 422)
    facade = await client.post("/v1/images/generations", json={"model": "animals/" + "m" * 200, "prompt": "x"})
    assert facade.status_code == 400 and facade.json()["error"]["param"] == "model"  # OpenAI says 400
