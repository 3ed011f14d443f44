"""Figure 4: read latency, GET /generations/{id} with 32 clients, beside asyncpg's PK SELECT."""

from __future__ import annotations

from bench import db
from bench.context import Context
from bench.load import http_load
from bench.procs import run_json
from bench.service import services
from bench.stats import Figure, Stat

ROWS = 10_000


async def run(ctx: Context) -> list[Figure]:
    p = ctx.profile
    await db.reset(ctx.conn)
    await db.insert_finished(ctx.conn, ROWS)
    ids = ctx.folder("read") / "ids.txt"
    ids.write_text("\n".join(str(row[0]) for row in await ctx.conn.fetch("SELECT id FROM generation_jobs")))

    ours: list[dict[str, float]] = []
    rates: list[float] = []
    async with services(ctx.database_url, 1, ctx.folder("read")) as procs:
        for _ in range(p.repetitions):
            result = await http_load([procs[0].url], "get", p.load_seconds, ids=ids)
            ours.append(result["latency_ms"])
            rates.append(result["rate"])
    theirs: list[dict[str, float]] = []
    for _ in range(p.repetitions):
        args = ("--dsn", ctx.database_url, "--mode", "select", "--ids", str(ids), "--duration", str(p.load_seconds))
        theirs.append((await run_json("bench.baselines.raw_asyncpg", *args, timeout=p.load_seconds + 60))["latency_ms"])
    await db.reset(ctx.conn)
    return [
        Figure(
            key=f"read_{q}",
            label=f"4. read GET /generations/{{id}} {q}",
            unit="ms",
            value=Stat.of([r[q] for r in ours]),
            baseline=Stat.of([r[q] for r in theirs]),
            baseline_label="asyncpg PK SELECT",
            note=f"{Stat.of(rates).median:,.0f} req/s through 1 process; {ROWS:,} rows" if q == "p50" else "",
        )
        for q in ("p50", "p99")
    ]
