"""Uploads: announce, PUT the bytes (signed app URL or presigned S3 URL), name them as job inputs."""

from __future__ import annotations

import io
import uuid
from typing import Any

import httpx
import pytest
from PIL import Image, ImageStat
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.embedded_pg import free_port
from backend.uploads.service import UploadService
from tests.conftest import APPS, AppFactory, wait_for_status
from tests.test_api import assert_problem
from tests.test_ownership import make_account

pytestmark = pytest.mark.usefixtures("engine")


def picture(color: tuple[int, int, int], fmt: str = "PNG", size: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format=fmt)
    return out.getvalue()


async def put_bytes(client: httpx.AsyncClient, url: str, data: bytes, headers: dict[str, str]) -> httpx.Response:
    """PUT to an upload URL: the app's own (in-process) or the object store's (over the network)."""
    if url.startswith(str(client.base_url)):
        return await client.put(url, content=data, headers=headers)
    async with httpx.AsyncClient(timeout=10) as network:
        return await network.put(url, content=data, headers=headers)


async def upload(
    client: httpx.AsyncClient, data: bytes, content_type: str = "image/png", size: int | None = None
) -> str:
    announced = await client.post(
        "/uploads", json={"fileName": "input.png", "contentType": content_type, "size": size or len(data)}
    )
    assert announced.status_code == 201, announced.text
    body = announced.json()
    assert body["method"] == "PUT" and body["expiresAt"]
    assert announced.headers["location"] == f"/uploads/{body['uploadId']}"
    sent = await put_bytes(client, body["uploadUrl"], data, body["headers"])
    assert sent.is_success, sent.text
    upload_id: str = body["uploadId"]
    return upload_id


async def fetch(client: httpx.AsyncClient, url: str) -> bytes:
    response = await client.get(url)
    if response.status_code == 302:
        response = httpx.get(response.headers["location"], timeout=10)
    assert response.status_code == 200, response.text
    return response.content


@pytest.fixture(params=["local", "s3"])
async def any_client(request: pytest.FixtureRequest, make_client: AppFactory) -> httpx.AsyncClient:
    """A client of an app on each storage backend."""
    if request.param == "s3":
        return await make_client(**request.getfixturevalue("s3_settings"))
    return await make_client()


async def test_a_job_uses_its_input_picture(any_client: httpx.AsyncClient) -> None:
    red = await upload(any_client, picture((255, 0, 0)))
    created = await any_client.post("/generations", json={"numImages": 2, "inputImages": [red]})
    assert created.status_code == 202, created.text
    assert created.json()["inputImages"] == [red]

    job = await wait_for_status(any_client, created.json()["jobId"], {"completed"})

    for url in job["imageUrls"]:
        image = Image.open(io.BytesIO(await fetch(any_client, url))).convert("RGB")
        # The corner shows the red input through the pattern (70 %); the pattern alone is a gradient
        # of colours between 40 and 220 per channel, almost never this red.
        # The median, not the mean: a random outline drawn over the corner must not tip the check.
        r, g, b = ImageStat.Stat(image.crop((0, 0, 40, 40))).median
        assert r >= 170 and g <= 80 and b <= 80, (r, g, b)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"fileName": "a.gif", "contentType": "image/gif", "size": 10}, 415, "contentType"),
        ({"fileName": "a.png", "contentType": "image/png", "size": 2000}, 413, "size"),
        ({"fileName": "a.png", "contentType": "image/png", "size": 0}, 422, "size"),
        ({"fileName": "", "contentType": "image/png", "size": 10}, 422, "fileName"),
        ({"contentType": "image/png", "size": 10}, 422, "fileName"),
        ({"fileName": "a.png", "contentType": "image/png", "size": "10"}, 422, "size"),
        ({"fileName": "a.png", "contentType": "image/png", "size": 10, "x": 1}, 422, "x"),
    ],
)
async def test_bad_announcements_are_problems(
    make_client: AppFactory, body: dict[str, Any], status: int, field: str
) -> None:
    client = await make_client(max_upload_bytes=1000)
    assert_problem(await client.post("/uploads", json=body), status, field)


async def test_local_upload_url_checks_signature_type_and_size(client: httpx.AsyncClient) -> None:
    data = picture((0, 0, 255))
    body = (
        await client.post("/uploads", json={"fileName": "b.png", "contentType": "image/png", "size": len(data)})
    ).json()
    url, headers = body["uploadUrl"], body["headers"]

    assert_problem(await client.put(url.replace("signature=", "signature=0"), content=data, headers=headers), 403)
    assert_problem(await client.put(url.replace("expires=", "expires=1"), content=data, headers=headers), 403)
    assert_problem(await client.put(url.split("?")[0], content=data, headers=headers), 403)
    other = url.replace(body["uploadId"], str(uuid.uuid4()))
    assert_problem(await client.put(other, content=data, headers=headers), 403)  # signed for another path
    assert_problem(await client.put(url, content=data, headers={"Content-Type": "image/jpeg"}), 415)
    assert_problem(await client.put(url, content=data + b"more", headers=headers), 413)

    assert (await client.put(url, content=data, headers=headers)).status_code == 204


async def test_bad_inputs_are_422_naming_each_and_create_no_job(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    good = await upload(client, picture((0, 255, 0)))
    announced = (
        await client.post("/uploads", json={"fileName": "c.png", "contentType": "image/png", "size": 100})
    ).json()
    garbage = await upload(client, b"not a picture at all", "image/png")
    unknown = str(uuid.uuid4())
    # Another account's upload is as unknown as one that never existed.
    other = await make_account(engine, "other")
    async with engine.begin() as connection:
        foreign = (
            await connection.execute(
                text(
                    "INSERT INTO uploads (account_id, file_name, content_type, size)"
                    " VALUES (:a, 'f.png', 'image/png', 10) RETURNING id"
                ),
                {"a": other},
            )
        ).scalar_one()

    response = await client.post(
        "/generations",
        json={"numImages": 1, "inputImages": [good, unknown, announced["uploadId"], garbage]},
    )
    problem = assert_problem(response, 422)
    codes = {e["field"]: e["code"] for e in problem["errors"]}
    assert codes == {"inputImages.1": "unknown_upload", "inputImages.2": "not_uploaded", "inputImages.3": "undecodable"}
    assert unknown in problem["detail"] and garbage in problem["detail"]

    assert_problem(await client.post("/generations", json={"numImages": 1, "inputImages": [str(foreign)]}), 422)
    assert_problem(await client.post("/generations", json={"numImages": 1, "inputImages": ["nope"]}), 422)
    assert_problem(await client.post("/generations", json={"numImages": 1, "inputImages": [good, good]}), 422)
    assert_problem(await client.post("/generations", json={"numImages": 1, "inputImages": [good] * 5}), 422)
    assert_problem(await client.post("/generations", json={"numImages": 1, "inputImages": "x"}), 422)
    assert (await client.get("/generations")).json() == []


async def test_an_s3_upload_larger_than_announced_is_refused(
    make_client: AppFactory, s3_settings: dict[str, Any]
) -> None:
    client = await make_client(**s3_settings)
    # A presigned PUT cannot bound the size it receives: the bytes are checked when a job names them.
    big = await upload(client, picture((1, 2, 3), size=256), size=100)

    problem = assert_problem(await client.post("/generations", json={"numImages": 1, "inputImages": [big]}), 422)

    assert problem["errors"][0]["code"] == "too_large"


async def test_unreachable_store_answers_503_when_inputs_are_checked(
    make_client: AppFactory, s3_settings: dict[str, Any]
) -> None:
    nothing_there = f"http://127.0.0.1:{free_port()}"
    client = await make_client(**{**s3_settings, "s3_endpoint_internal": nothing_there})
    announced = (
        await client.post("/uploads", json={"fileName": "d.png", "contentType": "image/png", "size": 10})
    ).json()

    response = await client.post("/generations", json={"numImages": 1, "inputImages": [announced["uploadId"]]})

    problem = assert_problem(response, 503)
    assert problem["code"] == "storage_unavailable"
    assert response.headers["retry-after"]


async def test_unused_uploads_are_swept_after_their_ttl(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    unused = await upload(client, picture((9, 9, 9)))
    used = await upload(client, picture((8, 8, 8)))
    fresh = await upload(client, picture((7, 7, 7)))
    assert (await client.post("/generations", json={"numImages": 1, "inputImages": [used]})).status_code == 202
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE uploads SET created_at = now() - interval '25 hours' WHERE id = ANY(:ids)"),
            {"ids": [uuid.UUID(unused), uuid.UUID(used)]},
        )
    uploads: UploadService = APPS[client].state.uploads

    assert await uploads.sweep() == 1

    async with engine.connect() as connection:
        left = set((await connection.execute(text("SELECT id::text FROM uploads"))).scalars())
    assert left == {used, fresh}
    root = APPS[client].state.settings.data_dir / "images" / "uploads"
    assert not (root / unused).exists() and (root / used).exists()
    problem = assert_problem(await client.post("/generations", json={"numImages": 1, "inputImages": [unused]}), 422)
    assert problem["errors"][0]["code"] == "unknown_upload"


async def test_an_upload_can_be_read_back_by_its_account_only(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    upload_id = await upload(client, picture((5, 5, 5)))

    info = (await client.get(f"/uploads/{upload_id}")).json()
    assert info["uploadId"] == upload_id and info["contentType"] == "image/png" and info["used"] is False
    await client.post("/generations", json={"numImages": 1, "inputImages": [upload_id]})
    assert (await client.get(f"/uploads/{upload_id}")).json()["used"] is True

    other = await make_account(engine, "other")
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE uploads SET account_id = :a WHERE id = :id"), {"a": other, "id": uuid.UUID(upload_id)}
        )
    assert_problem(await client.get(f"/uploads/{upload_id}"), 404)
    assert_problem(await client.get("/uploads/not-an-id"), 404)
