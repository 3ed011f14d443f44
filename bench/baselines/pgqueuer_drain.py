"""PgQueuer 1.6 draining pre-enqueued no-op jobs; prints jobs per second.

`--dequeuers 1 --batch 10` is one PgQueuer at its default batch size; `--dequeuers 5 --batch 10`
mirrors PgQueuer's own tools/benchmark.py drain defaults (asyncpg driver, uvloop, five PgQueuer
instances each on its own connection). That tool also registers a sync entrypoint, which 1.6
refuses, so every job goes to one async entrypoint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import asyncpg
import uvloop
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode

TABLES = ("pgqueuer", "pgqueuer_log", "pgqueuer_statistics", "pgqueuer_schedules")


async def install(dsn: str) -> Queries:
    """PgQueuer's schema, installed once; its queue emptied before each run."""
    queries = Queries(AsyncpgDriver(await asyncpg.connect(dsn)))
    if not await queries.has_table("pgqueuer"):
        await queries.install()
    await queries.clear_queue()
    await queries.clear_queue_log()
    await queries.clear_statistics_log()
    return queries


async def main(args: argparse.Namespace) -> dict[str, object]:
    queries = await install(args.dsn)
    await queries.enqueue(["asyncfetch"] * args.jobs, [b""] * args.jobs, [0] * args.jobs)
    conn = await asyncpg.connect(args.dsn)
    for table in TABLES:
        await conn.execute(f"ANALYZE {table}")
    done = 0

    def make() -> PgQueuer:
        pgq = PgQueuer(AsyncpgDriver(conn_pool.pop()))

        @pgq.entrypoint("asyncfetch")
        async def asyncfetch(job: Job) -> None:
            nonlocal done
            done += 1

        return pgq

    conn_pool = [await asyncpg.connect(args.dsn) for _ in range(args.dequeuers)]
    workers = [make() for _ in range(args.dequeuers)]
    start = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(w.run(batch_size=args.batch, mode=QueueExecutionMode.drain) for w in workers)),
        args.timeout,
    )
    elapsed = time.monotonic() - start
    left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
    return {"jobs": args.jobs, "done": done, "left": left, "seconds": elapsed, "rate": done / elapsed}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--dequeuers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600)
    return parser.parse_args()


if __name__ == "__main__":
    print(json.dumps(uvloop.run(main(parse()))))
