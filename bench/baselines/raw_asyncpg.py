"""The database's own limit: single-row INSERT … RETURNING, or primary-key SELECT, from asyncpg.

One process, a pool of 16 connections, 32 concurrent tasks (as many as the HTTP clients).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import time
from pathlib import Path

import asyncpg
import uvloop

from bench.stats import latency_summary

INSERT = "INSERT INTO generation_jobs (num_images, prompt, provider) VALUES ($1, $2, $3) RETURNING *"
SELECT = "SELECT * FROM generation_jobs WHERE id = $1"


async def main(args: argparse.Namespace) -> dict[str, object]:
    ids = Path(args.ids).read_text().split() if args.ids else []
    # The service's session setting (backend/notify.py): its triggers leave NOTIFY to after commit.
    settings = {"generation_jobs.notify": "after_commit"}
    pool = await asyncpg.create_pool(args.dsn, min_size=args.pool, max_size=args.pool, server_settings=settings)
    latencies: list[float] = []
    warm_until = time.monotonic() + args.warmup
    stop_at = warm_until + args.duration

    async def one() -> None:
        async with pool.acquire() as conn:
            if args.mode == "insert":
                await conn.fetchrow(INSERT, 1, None, "noop")
            else:
                await conn.fetchrow(SELECT, random.choice(ids))

    async def task() -> None:
        while (now := time.monotonic()) < stop_at:
            await one()
            if now >= warm_until:
                latencies.append(time.monotonic() - now)

    try:
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(*(task() for _ in range(args.concurrency)))
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        await pool.close()
    cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    return {
        "requests": len(latencies),
        "rate": len(latencies) / args.duration,
        "latency_ms": latency_summary(latencies),
        "client_cpu": cpu / (args.duration + args.warmup),
    }


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--mode", choices=["insert", "select"], required=True)
    parser.add_argument("--pool", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--ids", help="file of job ids for --mode select")
    return parser.parse_args()


if __name__ == "__main__":
    print(json.dumps(uvloop.run(main(parse()))))
