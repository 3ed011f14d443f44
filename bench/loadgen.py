"""HTTP load generator (bench venv: aiohttp + uvloop), run as its own process outside the service.

Closed loop (default): N keep-alive clients, each sending its next request when the last one
answered, for a time or a count. Open loop (--rate R): requests start on a fixed schedule, R per
second, whatever the service's answers do, over at most N keep-alive connections; this is the
offered load a queue's pickup latency must be judged under, since a closed loop slows down with
the service it measures.

Prints one JSON line: requests, rate, latency percentiles, status counts, and the client's own
CPU use (a client near 100% of a core would be the bottleneck; it reports so rather than hide it).
With --record, writes "job id, epoch seconds when its 202 arrived" for every accepted POST.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import time
from collections import Counter
from pathlib import Path

import aiohttp
import uvloop

from bench.stats import latency_summary

POST_BODY = {"numImages": 1, "provider": "noop"}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(args: argparse.Namespace) -> dict[str, object]:
    urls: list[str] = args.url
    ids = Path(args.ids).read_text().split() if args.ids else []
    if args.webhook:
        POST_BODY["webhookUrl"] = args.webhook  # this process makes one run
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    records: list[tuple[str, float]] = []
    issued = 0
    start = time.monotonic()
    measure_from = start + args.warmup
    stop_at = start + args.warmup + (args.duration or args.max_seconds)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)

    async def client(index: int, session: aiohttp.ClientSession) -> None:
        nonlocal issued
        base = urls[index % len(urls)]
        while time.monotonic() < stop_at and (not args.total or issued < args.total):
            issued += 1
            sent = time.monotonic()
            status, body = await request(session, base, args.mode, ids)
            done = time.monotonic()
            if args.record and status == 202:
                records.append((json.loads(body)["jobId"], time.time()))
            latencies.append(done - sent)
            statuses[status] += 1

    timeout = aiohttp.ClientTimeout(total=30)
    if args.rate:
        connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    headers = {"Authorization": f"Bearer {args.bearer}"} if args.bearer else None
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        if args.rate:
            return await open_loop(session, args, ids)
        while time.monotonic() < measure_from and args.total == 0:
            await asyncio.gather(*(client_once(session, urls, args, ids) for _ in range(args.concurrency)))
        cpu0, wall0 = _cpu_seconds(), time.monotonic()
        await asyncio.gather(*(client(i, session) for i in range(args.concurrency)))
        cpu1, wall1 = _cpu_seconds(), time.monotonic()
    if args.record:
        Path(args.record).write_text("\n".join(f"{job_id} {t:.6f}" for job_id, t in records))
    seconds = wall1 - wall0
    ok = sum(count for status, count in statuses.items() if status < 400)
    return {
        "requests": len(latencies),
        "ok": ok,
        "seconds": seconds,
        "rate": ok / seconds if seconds else 0.0,
        "latency_ms": latency_summary(latencies),
        "statuses": {str(k): v for k, v in statuses.items()},
        "client_cpu": (cpu1 - cpu0) / seconds if seconds else 0.0,
    }


async def open_loop(session: aiohttp.ClientSession, args: argparse.Namespace, ids: list[str]) -> dict[str, object]:
    """Start request i at start + i/rate; count how late the schedule ran (the client's own limit)."""
    urls: list[str] = args.url
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    late: list[float] = []
    pending: set[asyncio.Task[None]] = set()

    async def one(base: str) -> None:
        sent = time.monotonic()
        try:
            status, _ = await request(session, base, args.mode, ids)
        except (aiohttp.ClientError, TimeoutError):
            status = 599
        latencies.append(time.monotonic() - sent)
        statuses[status] += 1

    await asyncio.gather(*(client_once(session, urls, args, ids) for _ in range(min(args.concurrency, 8))))
    cpu0, start = _cpu_seconds(), time.monotonic()
    total = int(args.rate * args.duration)
    for i in range(total):
        due = start + i / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late.append(-delay)
        task = asyncio.create_task(one(urls[i % len(urls)]))
        pending.add(task)
        task.add_done_callback(pending.discard)
    sent_for = time.monotonic() - start
    cpu1 = _cpu_seconds()
    if pending:
        await asyncio.wait(pending, timeout=30)
    ok = sum(count for status, count in statuses.items() if status < 400)
    return {
        "requests": len(latencies),
        "ok": ok,
        "offered": args.rate,
        "seconds": sent_for,
        "rate": total / sent_for if sent_for else 0.0,
        "latency_ms": latency_summary(latencies),
        "schedule_late_ms_p99": latency_summary(late)["p99"] if late else 0.0,
        "statuses": {str(k): v for k, v in statuses.items()},
        "client_cpu": (cpu1 - cpu0) / sent_for if sent_for else 0.0,
        "started": time.time() - (time.monotonic() - start),
    }


async def client_once(
    session: aiohttp.ClientSession, urls: list[str], args: argparse.Namespace, ids: list[str]
) -> None:
    """One warm-up request per client: opens the keep-alive connections before the clock starts."""
    await request(session, random.choice(urls), args.mode, ids)


async def request(session: aiohttp.ClientSession, base: str, mode: str, ids: list[str]) -> tuple[int, bytes]:
    """One request of the kind `mode` names; returns its status and body."""
    if mode == "post":
        response = await session.post(f"{base}/generations", json=POST_BODY)
    elif mode == "get":
        response = await session.get(f"{base}/generations/{random.choice(ids)}")
    else:
        response = await session.get(f"{base}/healthz")
    async with response:
        return response.status, await response.read()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", action="append", required=True, help="service base URL; repeat for several")
    parser.add_argument("--mode", choices=["post", "get", "healthz"], required=True)
    parser.add_argument("--concurrency", type=int, default=32, help="clients, or connections with --rate")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: requests started per second")
    parser.add_argument("--duration", type=float, default=0.0, help="timed seconds (after --warmup)")
    parser.add_argument("--total", type=int, default=0, help="stop after this many requests instead")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="bound for --total runs")
    parser.add_argument("--ids", help="file of job ids for --mode get")
    parser.add_argument("--record", help="write accepted job ids and their 202 times here")
    parser.add_argument("--bearer", help="API key sent as Authorization: Bearer")
    parser.add_argument("--webhook", help="every POSTed job asks for its webhooks at this URL")
    args = parser.parse_args()
    if args.total:
        args.warmup = 0.0
    return args


if __name__ == "__main__":
    print(json.dumps(uvloop.run(main(parse()))))
