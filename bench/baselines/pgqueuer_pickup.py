"""PgQueuer's pickup latency: a LISTEN/NOTIFY worker and a producer, as two processes.

worker: one PgQueuer (batch 10) that notes when each job reached its entrypoint, until it has
seen --expect jobs (or --timeout passes), then writes "job id, epoch seconds" to --out.
producer: enqueues --jobs single jobs, one at a time, --gap seconds apart, and prints
{job id: epoch seconds when its enqueue returned}. Entrypoint time is a little after the claim,
so PgQueuer's figure includes its dispatch; the service's is read from its claim timestamp.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from pathlib import Path

import asyncpg
import uvloop
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries


async def worker(args: argparse.Namespace) -> dict[str, object]:
    queries = Queries(AsyncpgDriver(await asyncpg.connect(args.dsn)))
    if not await queries.has_table("pgqueuer"):
        await queries.install()
    await queries.clear_queue()
    await queries.driver.execute("ANALYZE pgqueuer")
    pgq = PgQueuer(AsyncpgDriver(await asyncpg.connect(args.dsn)))
    seen: dict[str, float] = {}

    @pgq.entrypoint("pickup")
    async def pickup(job: Job) -> None:
        seen[str(job.id)] = time.time()
        if len(seen) >= args.expect:
            pgq.shutdown.set()

    run = asyncio.create_task(pgq.run(batch_size=10))
    await asyncio.sleep(1.0)  # LISTEN is set up
    Path(args.ready).touch()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(run), args.timeout)
    pgq.shutdown.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run, 10)
    Path(args.out).write_text(json.dumps(seen))
    return {"seen": len(seen)}


async def producer(args: argparse.Namespace) -> dict[str, object]:
    queries = Queries(AsyncpgDriver(await asyncpg.connect(args.dsn)))
    acked: dict[str, float] = {}
    deadline = time.monotonic() + args.timeout
    for _ in range(args.jobs):
        if time.monotonic() > deadline:
            break
        (job_id,) = await queries.enqueue("pickup", None, 0)
        acked[str(job_id)] = time.time()
        await asyncio.sleep(args.gap)
    return acked  # type: ignore[return-value]


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["worker", "producer"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--gap", type=float, default=0.005)
    parser.add_argument("--expect", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--ready", default="")
    parser.add_argument("--out", default="")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    print(json.dumps(uvloop.run(worker(arguments) if arguments.role == "worker" else producer(arguments))))
