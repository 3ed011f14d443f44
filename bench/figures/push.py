"""Figure 7: push. What the events trigger costs the hot path, how fast an event reaches a
stream on another process than the worker (with the profile's 500 or 1,000 streams open), the
memory of an open stream, and webhook deliveries per second to a local receiver.

Trigger cost: the same service, the same run, with the events triggers enabled and disabled
(`ALTER TABLE … DISABLE TRIGGER`), repetitions interleaved (this VM's speed drifts): drain of a
pre-filled queue (1 process, noop jobs), and accepted POST /generations per second.
Latency: process A serves the profile's `GET /events` streams (worker off), process B runs the
jobs; probe jobs posted to B one at a time; each event's latency is its arrival on a stream minus
its `createdAt` (the committing transaction's start; one clock, one machine), over every stream.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from datetime import datetime

import httpx

from bench import db
from bench.context import Context
from bench.load import POST_BODY, http_load
from bench.parts import webhook_receiver
from bench.service import services
from bench.stats import Figure, Stat, latency_summary, percentile

TRIGGERS = ("generation_jobs_insert_events", "generation_jobs_update_events")
PROBES = 40
PROBE_GAP = 0.1
WEBHOOKS = 2000


async def run(ctx: Context) -> list[Figure]:
    figures = await _trigger_cost(ctx)
    figures += await _stream_latency(ctx)
    figures.append(await _webhook_rate(ctx))
    return figures


async def _reset(ctx: Context) -> None:
    await ctx.conn.execute("TRUNCATE events, webhook_deliveries")
    await db.reset(ctx.conn)


async def _triggers(ctx: Context, enabled: bool) -> None:
    verb = "ENABLE" if enabled else "DISABLE"
    for name in TRIGGERS:
        await ctx.conn.execute(f"ALTER TABLE generation_jobs {verb} TRIGGER {name}")


async def _trigger_cost(ctx: Context) -> list[Figure]:
    p = ctx.profile
    drain: dict[bool, list[float]] = {True: [], False: []}
    accept: dict[bool, list[float]] = {True: [], False: []}
    try:
        async with services(ctx.database_url, 1, ctx.folder("push-trigger")) as (proc, *_):
            for _rep in range(p.repetitions):
                for enabled in (True, False):
                    await _triggers(ctx, enabled)
                    await _reset(ctx)
                    committed = await db.insert_pending(ctx.conn, p.drain_jobs)
                    await db.wait_drained(ctx.conn, 600)
                    drain[enabled].append(p.drain_jobs / (await db.last_completion(ctx.conn) - committed))
                    await _reset(ctx)
                    result = await http_load([proc.url], "post", p.load_seconds)
                    accept[enabled].append(result["rate"])
                    await db.wait_drained(ctx.conn, 180)
    finally:
        await _triggers(ctx, True)
        await _reset(ctx)
    figures = []
    for key, label, unit, samples in (
        ("push_trigger_drain", "7. drain, events on (vs off)", "jobs/s", drain),
        ("push_trigger_accept", "7. accept, events on (vs off)", "req/s", accept),
    ):
        on, off = Stat.of(samples[True]), Stat.of(samples[False])
        figures.append(
            Figure(
                key=key,
                label=label,
                unit=unit,
                value=on,
                baseline=off,
                baseline_label="events trigger disabled",
                note=f"cost {1 - on.median / off.median:+.0%}; 1 process, interleaved repetitions",
            )
        )
    return figures


async def _stream_latency(ctx: Context) -> list[Figure]:
    streams = ctx.profile.streams
    _raise_fd_limit(streams)
    await _reset(ctx)
    seconds: list[float] = []
    async with (
        services(ctx.database_url, 1, ctx.folder("push-api"), WORKER_ENABLED="false") as (api, *_),
        services(ctx.database_url, 1, ctx.folder("push-worker")) as (worker, *_),
    ):
        limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=api.url, limits=limits, timeout=None) as client:
            expected = PROBES * 3  # created, started, completed (one output: no progress event)
            # Memory per stream is the slope between a tenth of the streams and all of them: the
            # first streams also pay for what a process fills once (the first request's imports
            # and caches, the account's feed), which is not a cost per stream.
            first = streams // 10
            readers: list[asyncio.Task[None]] = []
            rss: list[float] = []
            for count in (first, streams - first):
                opened = [asyncio.Event() for _ in range(count)]
                readers += [asyncio.create_task(_read(client, o, expected, seconds)) for o in opened]
                await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 120)
                await asyncio.sleep(1)  # let the streams settle before reading memory
                rss.append(api.rss_mb())
            per_stream_kb = (rss[1] - rss[0]) * 1024 / (streams - first)
            async with httpx.AsyncClient(base_url=worker.url, timeout=10) as poster:
                for _ in range(PROBES):
                    (await poster.post("/generations", json=POST_BODY)).raise_for_status()
                    await asyncio.sleep(PROBE_GAP)
            await asyncio.wait_for(asyncio.gather(*readers), 120)
    await _reset(ctx)
    summary = latency_summary(seconds)
    return [
        Figure(
            key="push_event_latency_p50",
            label="7. event to client, p50",
            unit="ms",
            value=Stat.of([summary["p50"]]),
            note=f"{streams:,} streams on an API-only process, worker in another; {len(seconds):,} deliveries",
            extra=summary,
        ),
        Figure(
            key="push_event_latency_p99",
            label="7. event to client, p99",
            unit="ms",
            value=Stat.of([percentile([s * 1000 for s in seconds], 99)]),
            note=f"includes the client's own parsing of {streams:,} streams on the same 2 cores",
        ),
        Figure(
            key="push_stream_memory",
            label="7. memory per open stream",
            unit="KiB",
            value=Stat.of([per_stream_kb]),
            note=f"API process RSS {rss[1]:.0f} MB with {streams:,} idle streams, {rss[0]:.0f} MB with {first:,};"
            f" the difference divided by {streams - first:,}",
        ),
    ]


def _raise_fd_limit(streams: int) -> None:
    """Each stream is a socket in this process and in the API process (a child: it inherits the
    limit), beside the pools and files; a default soft limit of 1,024 is too few for 1,000."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = streams * 2 + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))


async def _read(client: httpx.AsyncClient, opened: asyncio.Event, expected: int, out: list[float]) -> None:
    got = 0
    async with client.stream("GET", "/events") as response:
        response.raise_for_status()
        opened.set()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            arrived = time.time()
            event = json.loads(line[6:])
            created = event["createdAt"].replace("Z", "+00:00")
            out.append(arrived - _epoch(created))
            got += 1
            if got >= expected:
                return


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def _webhook_rate(ctx: Context) -> Figure:
    await _reset(ctx)
    rates: list[float] = []
    async with webhook_receiver() as hooks:
        env = {"WEBHOOK_ALLOW_PRIVATE": "true", "WEBHOOK_CONCURRENCY": "32"}
        async with services(ctx.database_url, 1, ctx.folder("push-webhooks"), **env):
            for _rep in range(ctx.profile.repetitions):
                async with ctx.conn.transaction():
                    await ctx.conn.execute(
                        "INSERT INTO generation_jobs (num_images, provider, webhook_url, webhook_events)"
                        " SELECT 1, 'noop', $2, ARRAY['job.created'] FROM generate_series(1, $1)",
                        WEBHOOKS,
                        hooks.url,
                    )
                committed = time.time()
                deadline = time.monotonic() + 300
                while await ctx.conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'"):
                    if time.monotonic() > deadline:
                        raise TimeoutError("webhooks were not all delivered within 300 s")
                    await asyncio.sleep(0.05)
                last = await ctx.conn.fetchval(
                    "SELECT extract(epoch FROM max(delivered_at))::float8 FROM webhook_deliveries"
                )
                rates.append(WEBHOOKS / (last - committed))
                await db.wait_drained(ctx.conn, 120)
                await _reset(ctx)
    if hooks.received < WEBHOOKS * len(rates):
        raise RuntimeError(f"the receiver got {hooks.received} of {WEBHOOKS * len(rates)} webhooks")
    return Figure(
        key="push_webhooks_rate",
        label="7. webhook deliveries",
        unit="deliveries/s",
        value=Stat.of(rates),
        note=f"{WEBHOOKS:,} signed POSTs to a local receiver per repetition, 1 process, WEBHOOK_CONCURRENCY=32",
    )
