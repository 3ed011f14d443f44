"""`python -m bench [--full]`: every figure, beside its baseline, printed and saved as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bench import db
from bench.context import Context
from bench.figures import accept, accounts, drain, growth, hotpath, inflight, memory, pickup, push, read, storage
from bench.profile import FULL, QUICK, Profile
from bench.stats import Figure, table
from bench.venv import ROOT, bench_python

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"

# Accept runs before pickup: pickup's "under load" figure is read off accept's runs.
STEPS: list[tuple[str, Callable[[Context], Awaitable[list[Figure]]]]] = [
    ("accept rate", accept.run),
    ("pickup latency", pickup.run),
    ("drain rate", drain.run),
    ("read latency", read.run),
    ("hot path", hotpath.run),
    ("growth", growth.run),
    ("memory", memory.run),
    ("storage", storage.run),
    ("accounts: fair claim, fairness, auth cost", accounts.run),
    ("push: events, streams, webhooks", push.run),
    ("remote jobs in flight", inflight.run),
]


async def main(profile: Profile, only: list[str]) -> int:
    started = time.monotonic()
    bench_python()  # build .venv-bench before any clock starts
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    # Ours, and reachable by the unprivileged user the embedded PostgreSQL runs as under root.
    workdir.chmod(0o711)
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    try:
        async with db.database(workdir / "db") as url:
            conn = await db.connect(url)
            try:
                await db.reset(conn)
                machine = await _machine(conn)
                ctx = Context(url, profile, workdir, conn)
                for name, step in STEPS:
                    if only and not any(word in name for word in only):
                        continue
                    print(f"[{time.monotonic() - started:6.0f}s] {name} …", flush=True)
                    try:
                        figures += await step(ctx)
                    except Exception as exc:
                        errors[name] = f"{type(exc).__name__}: {exc}"
                        traceback.print_exc()
                        await db.reset(conn)
            finally:
                await conn.close()
    finally:
        if not errors:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", file=sys.stderr)
    elapsed = time.monotonic() - started
    print()
    print(table(figures))
    for name, error in errors.items():
        print(f"FAILED {name}: {error}")
    print(f"\nprofile {profile.name}, {elapsed / 60:.1f} minutes; results in {RESULTS.relative_to(ROOT)}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "profile": profile.name,
        "settings": profile.__dict__,
        "seconds": round(elapsed, 1),
        "figures": [figure.as_json() for figure in figures],
        "errors": errors,
        "reproduce": "make bench" + (" FULL=1" if profile is FULL else ""),
    }
    RESULTS.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 1 if errors else 0


async def _machine(conn: object) -> dict[str, object]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "postgres": await db.server_version(conn),  # type: ignore[arg-type]
        "database": "BENCH_DATABASE_URL" if os.environ.get("BENCH_DATABASE_URL") else "embedded (pgserver)",
        "platform": platform.platform(),
    }


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--full", action="store_true", help="the long profile (50k drain, 1M rows, 100k jobs, 1,000 streams)"
    )
    parser.add_argument("--only", nargs="*", default=[], help="run only the steps whose name contains a word")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    sys.exit(asyncio.run(main(FULL if arguments.full else QUICK, arguments.only)))
