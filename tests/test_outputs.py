"""Outputs generalized: kinds, video options, the outputs list, progress, and the migration that made it."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import av
import httpx
import pytest
from alembic import command
from PIL import ImageChops
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db import alembic_config
from backend.providers import GeneratedOutput, GenerationSpec
from backend.providers.animals import render
from backend.providers.animation import FPS
from tests.conftest import AppFactory, wait_for_status
from tests.test_api import assert_problem

pytestmark = pytest.mark.usefixtures("engine")


async def test_image_outputs_describe_each_stored_file(client: httpx.AsyncClient) -> None:
    created = await client.post("/generations", json={"numImages": 2, "seed": 7, "params": {"style": "flat"}})
    assert created.status_code == 202, created.text
    assert created.json()["kind"] == "image" and created.json()["outputs"] is None

    job = await wait_for_status(client, created.json()["jobId"], {"completed"})

    assert (job["kind"], job["seed"], job["params"], job["aspectRatio"]) == ("image", 7, {"style": "flat"}, "1:1")
    assert job["durationSeconds"] is None and job["providerJobId"] is None
    assert [o["url"] for o in job["outputs"]] == job["imageUrls"]
    for output in job["outputs"]:
        served = await client.get(output["url"])
        assert served.headers["content-type"] == output["contentType"] == "image/png"
        assert output["sizeBytes"] == len(served.content)
        assert (output["width"], output["height"], output["durationSeconds"]) == (256, 256, None)


async def test_a_video_job_defaults_to_four_seconds_and_one_output(client: httpx.AsyncClient) -> None:
    created = await client.post("/generations", json={"kind": "video", "aspectRatio": "16:9", "provider": "noop"})
    assert created.status_code == 202, created.text
    job = created.json()
    assert (job["kind"], job["numImages"], job["durationSeconds"], job["aspectRatio"]) == ("video", 1, 4, "16:9")
    done = await wait_for_status(client, job["jobId"], {"completed"})
    assert done["outputs"] == [] and done["imageUrls"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "video", "durationSeconds": 21}, "durationSeconds"),
        ({"kind": "video", "durationSeconds": 0}, "durationSeconds"),
        ({"kind": "video", "durationSeconds": 2.5}, "durationSeconds"),
        ({"kind": "video", "numImages": 2}, "numImages"),
        ({"kind": "gif", "numImages": 1}, "kind"),
        ({"numImages": 1, "durationSeconds": 4}, "durationSeconds"),
        ({"numImages": 1, "aspectRatio": "4:3"}, "aspectRatio"),
        ({"numImages": 1, "seed": -1}, "seed"),
        ({"numImages": 1, "model": ""}, "model"),
        ({"numImages": 1, "params": ["not", "an", "object"]}, "params"),
        ({"numImages": 1, "params": {"blob": "x" * 4100}}, "params"),
        ({"kind": "image"}, "numImages"),
    ],
)
async def test_bad_output_options_are_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    assert_problem(await client.post("/generations", json=body), 422, field)


async def test_a_provider_that_cannot_make_the_kind_names_those_that_can(make_client: AppFactory) -> None:
    client = await make_client(providers="animals,noop,openai", openai_api_key="sk-test")

    body = assert_problem(await client.post("/generations", json={"kind": "video", "provider": "openai"}), 422, "kind")

    (error,) = body["errors"]
    assert "openai" in error["message"] and "animals, noop" in error["message"]
    listed = await client.get("/generations")
    assert listed.json() == [], "a refused request created a job"


class GatedProvider:
    """Yields one image, then waits for the test before yielding the rest."""

    name = "gated"
    seconds_per_image = 0.0

    def __init__(self) -> None:
        self.proceed = asyncio.Event()

    async def generate(self, spec: GenerationSpec) -> AsyncIterator[GeneratedOutput]:
        for index in range(spec.num_images):
            if index == 1:
                await self.proceed.wait()
            yield GeneratedOutput(render("owl", None, f"{spec.job_id}/{index}", index), "image/png", "owl", 256, 256)


async def test_outputs_grow_while_the_job_runs(make_client: AppFactory) -> None:
    gated = GatedProvider()
    client = await make_client(fakes={"gated": gated}, default_provider="gated")
    job_id = (await client.post("/generations", json={"numImages": 3})).json()["jobId"]

    async def one_output() -> dict[str, Any]:
        while True:
            job: dict[str, Any] = (await client.get(f"/generations/{job_id}")).json()
            if job["outputs"]:
                return job
            await asyncio.sleep(0.02)

    running = await asyncio.wait_for(one_output(), 10)
    assert running["status"] == "processing" and len(running["outputs"]) == 1
    assert (await client.get(running["outputs"][0]["url"])).status_code == 200
    gated.proceed.set()
    done = await wait_for_status(client, job_id, {"completed"})
    assert len(done["outputs"]) == 3


async def test_the_migration_moves_image_keys_into_outputs(database_url: str, engine: AsyncEngine) -> None:
    name = f"outputs_migration_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = database_url.rsplit("/", 1)[0] + f"/{name}"
    sqlalchemy_url = "postgresql+asyncpg" + url[url.index("://") :]
    job_id = uuid.uuid4()
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(sqlalchemy_url), "accounts")
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(
                "INSERT INTO generation_jobs (id, num_images, provider, status, image_keys) VALUES ($1, 2, 'animals',"
                " 'completed', $2)",
                job_id,
                [f"{job_id}/0.png", f"{job_id}/1.jpg"],
            )
            await connection.execute("INSERT INTO generation_jobs (num_images, provider) VALUES (1, 'animals')")
            await asyncio.to_thread(command.upgrade, alembic_config(sqlalchemy_url), "outputs")
            rows = await connection.fetch("SELECT id, kind, outputs::text FROM generation_jobs ORDER BY num_images")
            assert [(row["kind"], row["outputs"]) for row in rows] == [
                ("image", None),
                (
                    "image",
                    f'[{{"key": "{job_id}/0.png", "contentType": "image/png"}},'
                    f' {{"key": "{job_id}/1.jpg", "contentType": "image/jpeg"}}]',
                ),
            ]
            await asyncio.to_thread(command.downgrade, alembic_config(sqlalchemy_url), "accounts")
            keys = await connection.fetchval("SELECT image_keys FROM generation_jobs WHERE id = $1", job_id)
            assert keys == [f"{job_id}/0.png", f"{job_id}/1.jpg"]
        finally:
            await connection.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@pytest.mark.parametrize(("seconds", "ratio", "size"), [(2, "16:9", (448, 256)), (3, "9:16", (256, 448))])
async def test_animals_makes_a_playable_mp4_of_the_asked_length_and_shape(
    client: httpx.AsyncClient, seconds: int, ratio: str, size: tuple[int, int]
) -> None:
    body = {"kind": "video", "durationSeconds": seconds, "aspectRatio": ratio, "prompt": "a fox running"}
    created = (await client.post("/generations", json=body)).json()

    job = await wait_for_status(client, created["jobId"], {"completed"})

    (output,) = job["outputs"]
    assert job["imageUrls"] is None and output["url"].endswith(".mp4")
    assert (output["contentType"], output["width"], output["height"]) == ("video/mp4", *size)
    assert output["durationSeconds"] == seconds
    served = await client.get(output["url"])
    assert served.headers["content-type"] == "video/mp4" and len(served.content) == output["sizeBytes"]
    with av.open(io.BytesIO(served.content)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == size
        assert container.duration is not None
        assert container.duration / av.time_base == pytest.approx(seconds, abs=0.1)
        frames = [frame.to_image().convert("L") for frame in container.decode(video=0)]
    assert len(frames) == seconds * FPS
    # Something visibly moves: frames a second apart differ in many pixels.
    histogram = ImageChops.difference(frames[0], frames[FPS]).histogram()
    changed = sum(histogram[30:]) / (size[0] * size[1])
    assert changed > 0.01, f"only {changed:.2%} of pixels changed in a second"
