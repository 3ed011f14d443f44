"""Figure 5: the hot path. Pickup under a constant offered rate, and accept and read against /healthz.

The load generator runs in its own process (bench/loadgen.py). Closed loop (32 clients) measures
what a process can take; open loop (--rate) offers a fixed share of that, and pickup is then the
server's `started_at - created_at` of every job created meanwhile (bench/offered.py).

- ROLE=api + ROLE=worker (one process each): /healthz, POST and GET by id of the api process,
  interleaved repetition by repetition, so each ratio compares runs seconds apart on this shared
  machine; then 80 % of that process's accept rate, offered.
- ROLE=all (the default single process): its accept rate, then 50 % of it, offered.
- Raw asyncpg INSERT … RETURNING with 32 concurrent tasks: the database's own ceiling.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from bench import db
from bench.context import Context
from bench.load import http_load
from bench.offered import offered_load
from bench.parts import account_key, webhook_receiver
from bench.procs import run_json
from bench.service import services
from bench.stats import Figure, Stat

ROWS = 10_000
SINGLE_SHARE, SPLIT_SHARE = 0.5, 0.8
ACCEPT_TARGET, READ_TARGET = 0.5, 0.6


async def run(ctx: Context) -> list[Figure]:
    p = ctx.profile
    seconds = p.load_seconds
    await db.reset(ctx.conn)
    await db.insert_finished(ctx.conn, ROWS)
    ids = ctx.folder("hotpath") / "ids.txt"
    ids.write_text("\n".join(str(row[0]) for row in await ctx.conn.fetch("SELECT id FROM generation_jobs")))

    healthz: list[float] = []
    accept: list[float] = []
    reads: list[float] = []
    split: list[dict[str, Any]] = []
    folder = ctx.folder("hotpath")
    async with (
        services(ctx.database_url, 1, folder / "api", ROLE="api") as (api, *_),
        services(ctx.database_url, 1, folder / "worker", ROLE="worker"),
    ):
        for _ in range(p.repetitions):
            healthz.append((await http_load([api.url], "healthz", seconds))["rate"])
            accept.append((await http_load([api.url], "post", seconds))["rate"])
            await db.wait_drained(ctx.conn, 180)
            reads.append((await http_load([api.url], "get", seconds, ids=ids))["rate"])
        split_rate = SPLIT_SHARE * statistics.median(accept)
        for _ in range(p.repetitions):
            split.append(await offered_load(ctx.conn, [api.url], split_rate, seconds))

    single_max: list[float] = []
    single: list[dict[str, Any]] = []
    async with services(ctx.database_url, 1, folder / "all", ROLE="all") as (proc, *_):
        for _ in range(p.repetitions):
            single_max.append((await http_load([proc.url], "post", seconds))["rate"])
            await db.wait_drained(ctx.conn, 180)
        single_rate = SINGLE_SHARE * statistics.median(single_max)
        for _ in range(p.repetitions):
            single.append(await offered_load(ctx.conn, [proc.url], single_rate, seconds))

    full_max, full, full_rate, hooks = await _everything_on(ctx)

    raw: list[float] = []
    for _ in range(p.repetitions):
        args = ("--dsn", ctx.database_url, "--mode", "insert", "--concurrency", "32", "--duration", str(seconds))
        raw.append((await run_json("bench.baselines.raw_asyncpg", *args, timeout=seconds + 60))["rate"])

    # The same statements behind a bare Starlette app: the most any Python front end gets here.
    bare: dict[str, list[float]] = {"healthz": [], "post": [], "get": []}
    async with services(ctx.database_url, 1, folder / "bare", module="bench.baselines.bare_asgi") as (server, *_):
        for _ in range(p.repetitions):
            for mode, rates in bare.items():
                rates.append((await http_load([server.url], mode, seconds, ids=ids if mode == "get" else None))["rate"])
    await db.reset(ctx.conn)

    return [
        _ratio("hot_accept", "5. accept POST (ROLE=api)", accept, healthz, "/healthz", ACCEPT_TARGET),
        Figure(
            key="hot_accept_vs_insert",
            label="5. accept POST vs raw INSERT",
            unit="req/s",
            value=Stat.of(accept),
            baseline=Stat.of(raw),
            baseline_label="asyncpg INSERT, 32 tasks",
        ),
        _ratio("hot_read", "5. read GET by id (ROLE=api)", reads, healthz, "/healthz", READ_TARGET),
        _against("hot_bare_post", "5. bare ASGI: INSERT vs its /healthz", bare["post"], bare["healthz"], "/healthz"),
        _against("hot_bare_get", "5. bare ASGI: SELECT vs its /healthz", bare["get"], bare["healthz"], "/healthz"),
        _against("hot_accept_vs_bare", "5. accept POST vs bare ASGI", accept, bare["post"], "bare ASGI INSERT"),
        _against("hot_read_vs_bare", "5. read GET vs bare ASGI", reads, bare["get"], "bare ASGI SELECT"),
        *_pickup("hot_single", "5. pickup, ROLE=all at 50%", single, single_rate, p50=None, p99=50.0),
        *_pickup("hot_split", "5. pickup, api+worker at 80%", split, split_rate, p50=5.0, p99=25.0),
        _against("hot_accept_full", "5. accept, auth + webhooks on", full_max, single_max, "both off (ROLE=all)"),
        *_pickup("hot_full", "5. pickup, ROLE=all at 50%, auth + webhooks", full, full_rate, p50=None, p99=50.0),
        Figure(
            key="hot_full_webhooks",
            label="5. webhooks of those jobs delivered",
            unit="deliveries",
            value=Stat.of([hooks["delivered"]]),
            target=f"all {hooks['expected']:,}",
            passed=hooks["delivered"] >= hooks["expected"],
            note="signed POSTs to a receiver in the bench process, waited for up to 120 s after the load",
        ),
    ]


def _ratio(key: str, label: str, ours: list[float], theirs: list[float], name: str, target: float) -> Figure:
    value, baseline = Stat.of(ours), Stat.of(theirs)
    return Figure(
        key=key,
        label=label,
        unit="req/s",
        value=value,
        baseline=baseline,
        baseline_label=f"{name} of the same process",
        target=f">= {target:g}x {name}",
        passed=value.median >= target * baseline.median,
        note="32 keep-alive clients, interleaved with /healthz run by run" if key == "hot_accept" else "",
    )


async def _everything_on(ctx: Context) -> tuple[list[float], list[dict[str, Any]], float, dict[str, int]]:
    """ROLE=all with what this round added switched on: keys required (a key whose rate limit
    never refuses, so the limiter still runs), and every job asking for its webhooks, delivered
    to a receiver in this process. Its accept rate, then pickup at 50 % of it."""
    p = ctx.profile
    _, key = await account_key(ctx.conn, "bench hot path", rate_limit=1_000_000_000)
    accepted: list[float] = []
    offered: list[dict[str, Any]] = []
    async with (
        webhook_receiver() as hooks,
        services(
            ctx.database_url,
            1,
            ctx.folder("hotpath") / "full",
            ROLE="all",
            AUTH_REQUIRED="true",
            WEBHOOK_ALLOW_PRIVATE="true",
        ) as (proc, *_),
    ):
        for _ in range(p.repetitions):
            accepted.append(
                (await http_load([proc.url], "post", p.load_seconds, bearer=key, webhook=hooks.url))["rate"]
            )
            await db.wait_drained(ctx.conn, 180)
        rate = SINGLE_SHARE * statistics.median(accepted)
        for _ in range(p.repetitions):
            offered.append(
                await offered_load(ctx.conn, [proc.url], rate, p.load_seconds, bearer=key, webhook=hooks.url)
            )
        expected = await ctx.conn.fetchval("SELECT count(*) FROM webhook_deliveries")
        deadline = time.monotonic() + 120
        while hooks.received < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    return accepted, offered, rate, {"delivered": hooks.received, "expected": expected}


def _against(key: str, label: str, ours: list[float], theirs: list[float], name: str) -> Figure:
    """A ratio without a target: where the service stands against bench/baselines/bare_asgi.py."""
    return Figure(
        key=key, label=label, unit="req/s", value=Stat.of(ours), baseline=Stat.of(theirs), baseline_label=name
    )


def _pickup(
    key: str, label: str, runs: list[dict[str, Any]], rate: float, *, p50: float | None, p99: float
) -> list[Figure]:
    backlog = max(run["backlog"] for run in runs)
    jobs = f"{min(run['jobs'] for run in runs)}-{max(run['jobs'] for run in runs)}"
    sent = Stat.of([run["load"]["rate"] for run in runs])
    figures = []
    for q, limit in (("p50", p50), ("p99", p99)):
        value = Stat.of([run["pickup"][q] for run in runs])
        passed = None if limit is None else value.median <= limit and (q != "p99" or backlog == 0)
        target = "" if limit is None else f"<= {limit:g} ms" + (", no backlog 1 s after" if q == "p99" else "")
        figures.append(
            Figure(
                key=f"{key}_{q}",
                label=f"{label} {q}",
                unit="ms",
                value=value,
                target=target,
                passed=passed,
                note=(
                    f"offered {rate:,.0f} req/s (sent {sent.median:,.0f}); {jobs} jobs per repetition;"
                    f" at most {backlog} not started 1 s after the load stopped"
                )
                if q == "p99"
                else "",
                extra={"backlog": backlog, "offered": rate},
            )
        )
    return figures
