"""File URLs with AUTH_REQUIRED=true: signed and expiring, so <img src> works and a guessed URL does not."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import APPS, AppFactory
from tests.test_accounts import bearer, make_key
from tests.test_api import assert_problem

pytestmark = pytest.mark.usefixtures("engine")


async def completed(client: httpx.AsyncClient, job_id: str, key: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        job: dict[str, Any] = (await client.get(f"/generations/{job_id}", headers=bearer(key))).json()
        if job["status"] == "completed":
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.02)


async def test_signed_file_urls_open_without_a_key_and_only_as_given(
    engine: AsyncEngine, make_client: AppFactory
) -> None:
    client = await make_client(auth_required=True)
    replica = await make_client(auth_required=True, worker_enabled=False)
    _, key = await make_key(engine, "owner")
    _, other = await make_key(engine, "other")
    created = (await client.post("/generations", headers=bearer(key), json={"numImages": 2})).json()
    job = await completed(client, created["jobId"], key)

    url = job["imageUrls"][0]
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert set(query) == {"expires", "signature"}
    assert 3600 <= int(query["expires"][0]) - time.time() <= 3600 + 120
    for app in (client, replica):  # replicas share the secret the first one kept in the database
        image = await app.get(url)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"

    second = urlsplit(job["imageUrls"][1]).path
    tampered = url.replace(query["signature"][0], query["signature"][0][::-1])
    for bad in (tampered, f"{second}?{parts.query}"):
        assert assert_problem(await client.get(bad), 403)["code"] == "url_signature_invalid"
    signer = APPS[client].state.signer
    expired = f"{parts.path}?{signer.query('GET', parts.path, int(time.time()) - 1)}"
    assert assert_problem(await client.get(expired), 403)["code"] == "url_expired"
    assert assert_problem(await client.delete(url), 403)["code"] == "url_signature_invalid"  # signed for GET only

    # Without a signature the file is the owner's, like every other object.
    assert assert_problem(await client.get(parts.path), 401)["code"] == "api_key_missing"
    assert (await client.get(parts.path, headers=bearer(key))).status_code == 200
    assert_problem(await client.get(parts.path, headers=bearer(other)), 404)


async def test_without_auth_file_urls_are_plain(make_client: AppFactory) -> None:
    client = await make_client()
    created = (await client.post("/generations", json={"numImages": 1})).json()
    deadline = time.monotonic() + 10
    while (job := (await client.get(f"/generations/{created['jobId']}")).json())["status"] != "completed":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert "?" not in job["imageUrls"][0]
    assert (await client.get(job["imageUrls"][0])).status_code == 200
