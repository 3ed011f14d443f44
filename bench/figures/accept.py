"""Figure 1: accept rate, POST /generations per second with 32 keep-alive clients.

Baseline: single-row INSERT … RETURNING from one asyncpg process with 16 pooled connections.
The service runs as it would in production (API and worker in one process, noop provider), so
figure 2's "pickup at saturation" is read off these same runs.
"""

from __future__ import annotations

from bench import db
from bench.context import Context
from bench.load import http_load, latencies
from bench.procs import run_json
from bench.service import services
from bench.stats import Figure, Stat, latency_summary

TARGET = 0.25


async def run(ctx: Context) -> list[Figure]:
    p = ctx.profile
    raw: list[float] = []
    for _ in range(p.repetitions):
        result = await run_json(
            "bench.baselines.raw_asyncpg",
            *("--dsn", ctx.database_url, "--mode", "insert", "--duration", str(p.load_seconds)),
            timeout=p.load_seconds + 60,
        )
        raw.append(result["rate"])
        await db.reset(ctx.conn)
    baseline = Stat.of(raw)

    figures: list[Figure] = []
    ceiling = 0.0
    for count in (1, p.recommended_processes):
        async with services(ctx.database_url, count, ctx.folder(f"accept-{count}")) as procs:
            urls = [proc.url for proc in procs]
            if count == 1:
                figures.append(await _client_ceiling(ctx, urls))
                ceiling = figures[-1].value.median
            rates: list[float] = []
            cpu: list[float] = []
            for rep in range(p.repetitions):
                record = ctx.folder("accept") / f"{count}-{rep}.txt"
                result = await http_load(urls, "post", p.load_seconds, record=record)
                rates.append(result["rate"])
                cpu.append(result["client_cpu"])
                if count == 1:
                    acked = dict(_pairs(record.read_text()))
                    picked = await db.started_at(ctx.conn, list(acked), timeout=180)
                    ctx.pickup_under_load.append(latency_summary(latencies(acked, picked)))
                await db.wait_drained(ctx.conn, 180)
                await db.reset(ctx.conn)
        figures.append(
            Figure(
                key=f"accept_rate_{count}p",
                label=f"1. accept rate, {count} process{'es' if count > 1 else ''}",
                unit="req/s",
                value=Stat.of(rates),
                baseline=baseline,
                baseline_label="asyncpg INSERT",
                target=f">= {TARGET}x raw insert",
                passed=Stat.of(rates).median >= TARGET * baseline.median,
                note=f"load generator at most {max(cpu):.0%} of one core; its /healthz ceiling is {ceiling:,.0f} req/s",
            )
        )
    return figures


async def _client_ceiling(ctx: Context, urls: list[str]) -> Figure:
    """The load generator against GET /healthz: the most it can drive through this service."""
    rates: list[float] = []
    cpu: list[float] = []
    for _ in range(ctx.profile.repetitions):
        result = await http_load(urls, "healthz", ctx.profile.load_seconds)
        rates.append(result["rate"])
        cpu.append(result["client_cpu"])
    return Figure(
        key="client_ceiling",
        label="0. load generator, GET /healthz",
        unit="req/s",
        value=Stat.of(rates),
        note=f"32 aiohttp clients; the client used {Stat.of(cpu).median:.0%} of one core",
    )


def _pairs(text: str) -> list[tuple[str, float]]:
    pairs = []
    for line in text.splitlines():
        job_id, t = line.split()
        pairs.append((job_id, float(t)))
    return pairs
