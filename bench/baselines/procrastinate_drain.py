"""Procrastinate 3.10 draining pre-deferred no-op jobs with one async worker; prints jobs per second.

The worker runs with wait=False (it stops once the queue is empty) and, since the task is async
and does no work, the concurrency the service uses (its WORKER_CONCURRENCY default, 32) rather
than Procrastinate's default of 1, which would only measure round trips.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time

import psycopg
from procrastinate import App, PsycopgConnector

TABLES = ("procrastinate_jobs", "procrastinate_events", "procrastinate_periodic_defers", "procrastinate_workers")


async def main(args: argparse.Namespace) -> dict[str, object]:
    logging.basicConfig(level=logging.WARNING)
    app = App(connector=PsycopgConnector(conninfo=args.dsn))

    @app.task(name="noop")
    async def noop() -> None:
        return None

    async with await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as conn:
        installed = (await (await conn.execute("SELECT to_regclass('procrastinate_jobs')")).fetchone() or [None])[0]
        async with app.open_async():
            if installed is None:
                await app.schema_manager.apply_schema_async()
            await conn.execute("TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_workers CASCADE")
            for offset in range(0, args.jobs, 10_000):
                await noop.batch_defer_async(*({} for _ in range(min(10_000, args.jobs - offset))))
            for table in TABLES:
                await conn.execute(f"ANALYZE {table}")  # type: ignore[arg-type]
            start = time.monotonic()
            await asyncio.wait_for(app.run_worker_async(concurrency=args.concurrency, wait=False), args.timeout)
            elapsed = time.monotonic() - start
        row = await (
            await conn.execute("SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FROM procrastinate_jobs")
        ).fetchone()
    assert row is not None
    done, total = row
    return {"jobs": args.jobs, "done": done, "left": total - done, "seconds": elapsed, "rate": done / elapsed}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=600)
    return parser.parse_args()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse()))))
