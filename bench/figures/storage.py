"""Figure: what S3-compatible storage costs, beside local disk in the same run.

Drain: one service process (worker at its defaults) drains animals jobs of one real PNG each
(IMAGE_PROVIDER_DELAY=0, so rendering and storing are the work), with STORAGE_BACKEND=local and
=s3 against a local moto server, alternating backend by backend each repetition (this VM's
speed drifts over minutes). Upload: the cost of one output's write, sequential `save` calls of
a rendered PNG through each backend in this process. moto is a Python test server: against a
real store (MinIO, S3) the network replaces moto's own overhead.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from backend.config import Settings
from backend.providers.animals import render
from backend.signing import UrlSigner
from backend.storage import Storage, build_storage
from bench import db
from bench.context import Context
from bench.service import services
from bench.stats import Figure, Stat
from tests.s3server import CREDENTIALS, S3Server, start_s3_server

# A drain of rendered images is ~30x slower than one of no-op jobs: the same minutes, fewer jobs.
JOBS_PER_DRAIN_JOB = 30
UPLOADS = 200


async def run(ctx: Context) -> list[Figure]:
    jobs = max(100, ctx.profile.drain_jobs // JOBS_PER_DRAIN_JOB)
    server = await asyncio.to_thread(start_s3_server, ctx.folder("s3"))
    try:
        bucket = server.create_bucket()
        backends: dict[str, dict[str, str]] = {"local": {"STORAGE_BACKEND": "local"}, "s3": server.env(bucket)}
        rates: dict[str, list[float]] = {name: [] for name in backends}
        for rep in range(ctx.profile.repetitions):
            for name, env in backends.items():
                async with services(ctx.database_url, 1, ctx.folder(f"storage-{name}-{rep}"), **env):
                    rates[name].append(await _drain(ctx, jobs))
        upload_ms = {name: await _upload_ms(ctx.folder(f"upload-{name}"), name, server, bucket) for name in backends}
    finally:
        await asyncio.to_thread(server.stop)

    local, s3 = Stat.of(rates["local"]), Stat.of(rates["s3"])
    # What storing in S3 adds to the drain, per output: the difference of the time per job.
    added_ms = [(1 / s - 1 / lo) * 1000 for s, lo in zip(rates["s3"], rates["local"], strict=True)]
    return [
        Figure(
            key="storage_drain_s3_vs_local",
            label="storage: drain, 1 process, 1 PNG per job",
            unit="jobs/s",
            value=s3,
            baseline=local,
            baseline_label="local disk",
            note=f"{jobs:,} animals jobs per drain; S3 = local moto server",
            extra={"added_ms_per_output": Stat.of(added_ms).median},
        ),
        Figure(
            key="storage_upload_ms",
            label="storage: one output's upload",
            unit="ms",
            value=Stat.of(upload_ms["s3"]),
            baseline=Stat.of(upload_ms["local"]),
            baseline_label="local disk",
            note=f"median of {UPLOADS} sequential saves of a 256x256 PNG per repetition; "
            f"in the drain S3 adds {Stat.of(added_ms).median:.2f} ms of wall time per output",
        ),
    ]


async def _drain(ctx: Context, jobs: int) -> float:
    await db.reset(ctx.conn)
    async with ctx.conn.transaction():
        await ctx.conn.execute(
            "INSERT INTO generation_jobs (num_images, provider) SELECT 1, 'animals' FROM generate_series(1, $1)", jobs
        )
        await ctx.conn.execute("ANALYZE generation_jobs")
    committed = time.time()
    await db.wait_drained(ctx.conn, 600)
    failed = await ctx.conn.fetchval("SELECT count(*) FROM generation_jobs WHERE status <> 'completed'")
    if failed:
        raise RuntimeError(f"{failed} of {jobs} storage jobs did not complete")
    rate = jobs / (await db.last_completion(ctx.conn) - committed)
    await db.reset(ctx.conn)
    return rate


async def _upload_ms(folder: Path, backend: str, server: S3Server, bucket: str) -> list[float]:
    """Per repetition, the median milliseconds of one `save` of a rendered PNG."""
    os.environ.update(CREDENTIALS)  # the S3 client reads the standard AWS variables
    settings = Settings(
        _env_file=None,
        data_dir=folder,
        storage_backend=backend,
        s3_bucket=bucket,
        s3_endpoint_internal=server.endpoint,
        s3_use_path_style=True,
    )
    storage: Storage = build_storage(settings, UrlSigner.random())
    png = render("bear", "a benchmark", "bench/0", 0)
    medians = []
    for rep in range(3):
        times = []
        for index in range(UPLOADS):
            started = time.perf_counter()
            await storage.save(f"00000000-0000-0000-0000-{rep:012d}/{index}.png", png, "image/png")
            times.append((time.perf_counter() - started) * 1000)
        medians.append(sorted(times)[len(times) // 2])
    await storage.close()
    return medians
