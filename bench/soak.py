"""`python -m bench.soak`: endurance with faults across three replicas, bounded in time.

For `--seconds` (SOAK_SECONDS, default 600) a constant-rate submitter posts jobs with a
`webhookUrl` to three `python -m backend` replicas (S3 storage on a local moto server, short
leases), SSE clients follow `GET /events` and reconnect with Last-Event-ID to any live replica,
and a local receiver verifies every webhook's Standard Webhooks signature. Meanwhile a random
replica is SIGKILLed (and restarted) every minute, PostgreSQL is restarted once and the object
store is stopped and restarted once. After a bounded drain it prints and checks:

- every job in the database is final exactly once (an audit trigger this script installs counts
  the transitions into completed/failed/canceled), and every accepted (202) job is there;
- no job ran twice at once: a claim that takes over another lease starts after that lease expired;
- every terminal event of a job was delivered to the receiver at least once, signature verified;
- no SSE client saw a gap: the ids it received, in order, equal the account's events in the DB;
- each replica's RSS grew at most 10 % from 30 s after its start to its end.

Exit status 1 if any check fails. The object store is moto, in memory: after its restart the
earlier outputs are gone (the bucket is created again). The checks are about jobs, not files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import uvicorn
from httpx_sse import aconnect_sse
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend.accounts.keys import new_webhook_secret
from backend.db import migrate
from backend.embedded_pg import EmbeddedPostgres, free_port
from bench.procs import die_with_parent
from bench.service import BASE_ENV
from bench.venv import ROOT
from tests.s3server import S3Server, start_s3_server

REPLICAS = 3
SSE_CLIENTS = 3
LEASE_SECONDS = 3
RSS_GROWTH_LIMIT = 0.10
RSS_SETTLE = 30.0  # RSS growth is measured from this long after a replica's start
FINAL = ("completed", "failed", "canceled")

AUDIT_SQL = """
CREATE TABLE IF NOT EXISTS soak_audit (
    seq bigserial PRIMARY KEY,
    job_id uuid NOT NULL,
    old_status text,
    new_status text,
    old_token uuid,
    new_token uuid,
    old_expires timestamptz,
    new_error text,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION soak_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status OR NEW.lease_token IS DISTINCT FROM OLD.lease_token THEN
        INSERT INTO soak_audit (job_id, old_status, new_status, old_token, new_token, old_expires, new_error)
        VALUES (NEW.id, OLD.status, NEW.status, OLD.lease_token, NEW.lease_token, OLD.lease_expires_at,
                NEW.error_code);
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS soak_audit ON generation_jobs;
CREATE TRIGGER soak_audit AFTER UPDATE ON generation_jobs FOR EACH ROW EXECUTE FUNCTION soak_audit();
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Replica:
    index: int
    port: int
    env: dict[str, str]
    workdir: Path
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    # (seconds since start, RSS MiB) of the current process
    samples: list[tuple[float, float]] = field(default_factory=list)
    lives: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        log_path = self.workdir / f"replica-{self.index}.log"
        with log_path.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "backend",
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=out,
                preexec_fn=die_with_parent,
            )
        self.started = time.monotonic()
        self.samples = []

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"replica {self.index} not ready after {timeout:.0f}s")

    def sample(self) -> None:
        if self.alive and self.process is not None:
            with contextlib.suppress(psutil.Error):
                rss = psutil.Process(self.process.pid).memory_info().rss / 2**20
                self.samples.append((time.monotonic() - self.started, rss))

    def end_life(self, how: str) -> None:
        settled = [rss for t, rss in self.samples if t >= RSS_SETTLE]
        life: dict[str, Any] = {"replica": self.index, "ended_by": how, "seconds": time.monotonic() - self.started}
        if len(settled) >= 2:
            life.update(rss_from=settled[0], rss_to=settled[-1], growth=settled[-1] / settled[0] - 1)
        self.lives.append(life)

    async def kill(self) -> None:
        if self.alive and self.process is not None:
            self.end_life("SIGKILL")
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        if self.alive and self.process is not None:
            self.end_life("end of run")
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@dataclass
class Tally:
    accepted: set[str] = field(default_factory=set)
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    late: int = 0
    hooks: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # event id -> deliveries
    bad_signatures: int = 0
    streams: list[list[int]] = field(default_factory=list)
    reconnects: int = 0
    faults: list[str] = field(default_factory=list)


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.tally = Tally()
        self.replicas: list[Replica] = []
        self.stopping = asyncio.Event()
        self.secret = new_webhook_secret()
        self.hook_port = free_port()
        self.pg: EmbeddedPostgres | None = None
        self.s3: S3Server | None = None
        self.bucket = "soak"

    def live_urls(self) -> list[str]:
        return [r.url for r in self.replicas if r.alive] or [self.replicas[0].url]

    # --- the pieces -------------------------------------------------------------------------

    def receiver(self) -> uvicorn.Server:
        verifier = Webhook(self.secret)

        async def hook(request: Request) -> Response:
            body = await request.body()
            try:
                verifier.verify(body, dict(request.headers))
            except Exception:
                self.tally.bad_signatures += 1
                return Response(status_code=400)
            self.tally.hooks[int(json.loads(body)["id"])] += 1
            return Response(status_code=204)

        app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.hook_port, log_level="warning", lifespan="off")
        return uvicorn.Server(config)

    async def submitter(self, rate: float) -> None:
        body = {"numImages": 1, "provider": "animals", "webhookUrl": f"http://127.0.0.1:{self.hook_port}/hook"}
        start = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=10) as client:

            async def one(i: int) -> None:
                urls = self.live_urls()
                url = urls[i % len(urls)]
                try:
                    response = await client.post(f"{url}/generations", json=body)
                except httpx.HTTPError as exc:
                    self.tally.refused[type(exc).__name__] += 1
                    return
                if response.status_code == 202:
                    self.tally.accepted.add(response.json()["jobId"])
                else:
                    self.tally.refused[str(response.status_code)] += 1

            i = 0
            while not self.stopping.is_set():
                due = start + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -1:
                    self.tally.late += 1
                task = asyncio.create_task(one(i))
                pending.add(task)
                task.add_done_callback(pending.discard)
                i += 1
            if pending:
                await asyncio.wait(pending, timeout=15)

    async def sse_client(self, index: int) -> None:
        seen: list[int] = []
        self.tally.streams.append(seen)
        timeout = httpx.Timeout(5, read=10)
        async with httpx.AsyncClient(timeout=timeout) as client:
            while not self.args.caught_up.is_set():
                url = random.choice(self.live_urls())
                headers = {"Last-Event-ID": str(seen[-1])} if seen else {}
                try:
                    async with aconnect_sse(client, "GET", f"{url}/events", headers=headers) as source:
                        async for event in source.aiter_sse():
                            # httpx-sse also dispatches the server's keep-alive comments, with the
                            # last id carried over (as the spec keeps it): only events with data count.
                            if event.id and event.data:
                                seen.append(int(event.id))
                            if self.args.caught_up.is_set():
                                return
                except (httpx.HTTPError, httpx.StreamError, ValueError):
                    pass
                if self.args.caught_up.is_set():
                    return
                self.tally.reconnects += 1
                await asyncio.sleep(0.2 + 0.3 * random.random())

    async def sampler(self) -> None:
        while True:
            for replica in self.replicas:
                replica.sample()
            await asyncio.sleep(2)

    async def faults(self, seconds: float) -> None:
        """SIGKILL a random replica every `kill_every` s; PostgreSQL at 40 %, the object store at 70 %."""
        kill_every = 60.0 if seconds >= 300 else max(15.0, seconds / 4)
        start = time.monotonic()
        plan: list[tuple[float, str]] = [(t, "kill") for t in _steps(kill_every, seconds)]
        if self.pg is not None:
            plan.append((seconds * 0.4, "postgres"))
        plan.append((seconds * 0.7, "s3"))
        plan.sort()
        log(f"faults: SIGKILL a replica every {kill_every:.0f}s, " + ", ".join(f"{n} at {t:.0f}s" for t, n in plan))
        for at, what in plan:
            delay = start + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if what == "kill":
                victim = random.choice(self.replicas)
                await victim.kill()
                log(f"SIGKILL replica {victim.index}; restarting it")
                await victim.start()
                await victim.wait_ready(90)
                self.tally.faults.append(f"SIGKILL replica {victim.index} at {at:.0f}s")
            elif what == "postgres" and self.pg is not None:
                log("restarting PostgreSQL")
                down = time.monotonic()
                await asyncio.to_thread(self.pg.stop)
                # Not start(): it moves to a free port while the old one has connections in
                # TIME_WAIT, and the replicas must find the same server again; PostgreSQL itself
                # binds with SO_REUSEADDR, so relaunching on the same port works.
                await asyncio.to_thread(self.pg._launch, 60)
                self.tally.faults.append(f"PostgreSQL restarted at {at:.0f}s ({time.monotonic() - down:.1f}s down)")
            elif what == "s3" and self.s3 is not None:
                log("stopping the object store for 5 s")
                port = self.s3.port
                await asyncio.to_thread(self.s3.stop)
                await asyncio.sleep(5)
                self.s3 = await asyncio.to_thread(_start_s3, self.workdir, port)
                await asyncio.to_thread(self.s3.create_bucket, self.bucket)
                self.tally.faults.append(f"object store stopped at {at:.0f}s for 5 s (objects lost: moto is in memory)")

    # --- the run ----------------------------------------------------------------------------

    async def run(self) -> int:
        url = os.environ.get("BENCH_DATABASE_URL")
        if not url:
            self.pg = EmbeddedPostgres(self.workdir / "postgres", free_port())
            await asyncio.to_thread(self.pg.start)
            url = self.pg.url
        try:
            return await self._run(url)
        finally:
            if self.pg is not None:
                await asyncio.to_thread(self.pg.stop)

    async def _run(self, url: str) -> int:
        await asyncio.to_thread(migrate, url.replace("postgresql://", "postgresql+asyncpg://", 1))
        conn = await asyncpg.connect(url)
        await conn.execute("TRUNCATE generation_jobs CASCADE")
        await conn.execute(AUDIT_SQL)
        await conn.close()
        self.s3 = await asyncio.to_thread(start_s3_server, self.workdir)
        await asyncio.to_thread(self.s3.create_bucket, self.bucket)
        server = self.receiver()
        server_task = asyncio.create_task(server.serve())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DEBUGPY", "PG", "S3_"))}
        env.update(BASE_ENV)
        env.update(self.s3.env(self.bucket))
        env.update(
            {
                "DATABASE_URL": url,
                "DATA_DIR": str(self.workdir),
                "PYTHONPATH": str(ROOT),
                "IMAGE_PROVIDER_DELAY": "0.2",
                "LEASE_SECONDS": str(LEASE_SECONDS),
                "MAX_ATTEMPTS": "10",
                "RETRY_MAX_DELAY": "5",
                "WEBHOOK_ALLOW_PRIVATE": "true",
                "WEBHOOK_SECRET": self.secret,
                "WEBHOOK_RETRY_BASE_DELAY": "1",
                "WEBHOOK_RETRY_MAX_DELAY": "5",
                "WEBHOOK_MAX_ATTEMPTS": "50",
                "SSE_HEARTBEAT_SECONDS": "2",
                "DB_POOL_SIZE": "10",
            }
        )
        for index in range(REPLICAS):
            port = free_port()
            self.replicas.append(Replica(index, port, {**env, "PORT": str(port)}, self.workdir))
        sampler = asyncio.create_task(self.sampler())
        try:
            for replica in self.replicas:
                await replica.start()
            for replica in self.replicas:
                await replica.wait_ready()
            seconds, rate = self.args.seconds, self.args.rate
            log(f"soak: {seconds:.0f}s at {rate:g} jobs/s over {REPLICAS} replicas, {SSE_CLIENTS} SSE clients")
            clients = [asyncio.create_task(self.sse_client(i)) for i in range(SSE_CLIENTS)]
            faults = asyncio.create_task(self.faults(seconds))
            submitter = asyncio.create_task(self.submitter(rate))
            await asyncio.sleep(seconds)
            self.stopping.set()
            await submitter
            faults.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await faults
            for replica in self.replicas:  # a replica killed by the last fault may still be starting
                if not replica.alive:
                    await replica.start()
                await replica.wait_ready(90)
            log(f"load stopped: {len(self.tally.accepted)} accepted; draining (at most {self.args.drain:.0f}s)")
            conn = await asyncpg.connect(url)
            try:
                drained = await self.drain(conn, clients)
                for replica in self.replicas:
                    replica.sample()
                    await replica.stop()
                return await self.report(conn, drained)
            finally:
                await conn.close()
        finally:
            sampler.cancel()
            for replica in self.replicas:
                await replica.stop()
            server.should_exit = True
            await server_task
            if self.s3 is not None:
                await asyncio.to_thread(self.s3.stop)

    async def drain(self, conn: asyncpg.Connection, clients: list[asyncio.Task[None]]) -> bool:
        deadline = time.monotonic() + self.args.drain
        while time.monotonic() < deadline:
            live = await conn.fetchval("SELECT count(*) FROM generation_jobs WHERE status IN ('pending','processing')")
            undelivered = await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'")
            last = await conn.fetchval("SELECT coalesce(max(id), 0) FROM events")
            streams_done = all(seen and seen[-1] >= last for seen in self.tally.streams)
            if live == 0 and undelivered == 0 and streams_done:
                break
            await asyncio.sleep(0.5)
        else:
            log("drain timed out")
        self.args.caught_up.set()
        await asyncio.wait(clients, timeout=15)
        for task in clients:
            task.cancel()
        return time.monotonic() < deadline

    async def report(self, conn: asyncpg.Connection, drained: bool) -> int:
        t = self.tally
        checks: list[tuple[str, bool, str]] = []
        jobs = {str(r["id"]): r["status"] for r in await conn.fetch("SELECT id, status FROM generation_jobs")}
        by_status: dict[str, int] = defaultdict(int)
        for status in jobs.values():
            by_status[status] += 1
        finals = {
            str(r["job_id"]): r["n"]
            for r in await conn.fetch(
                "SELECT job_id, count(*) AS n FROM soak_audit WHERE new_status = ANY($1) "
                "AND old_status IS DISTINCT FROM new_status GROUP BY job_id",
                list(FINAL),
            )
        }
        missing = t.accepted - jobs.keys()
        not_final = [j for j, s in jobs.items() if s not in FINAL]
        twice = [j for j, n in finals.items() if n != 1]
        never = [j for j, s in jobs.items() if s in FINAL and j not in finals]
        checks.append(
            (
                "every accepted job final exactly once",
                drained and not missing and not not_final and not twice and not never,
                f"{len(t.accepted)} accepted, {len(jobs)} in the DB ({dict(by_status)}); "
                f"{len(missing)} accepted but absent, {len(not_final)} not final, "
                f"{len(twice)} finalised more than once, {len(never)} final without a transition",
            )
        )
        # A claim only takes a pending job; a lease leaves a job through its holder (fenced by the
        # token) or through the reaper (error_code worker_lost). So two runs overlap only if a claim
        # replaced a live token, or the reaper took a lease away before it expired.
        audit = await conn.fetchrow(
            """
            SELECT
                count(*) FILTER (WHERE new_token IS NOT NULL AND new_token IS DISTINCT FROM old_token) AS claims,
                count(*) FILTER (WHERE new_token IS NOT NULL AND old_token IS NOT NULL
                                 AND new_token <> old_token) AS steals,
                count(*) FILTER (WHERE new_error = 'worker_lost' AND old_token IS NOT NULL) AS reaped,
                count(*) FILTER (WHERE new_error = 'worker_lost' AND old_token IS NOT NULL
                                 AND at < old_expires) AS reaped_early
            FROM soak_audit
            """
        )
        checks.append(
            (
                "no job ran twice at the same time",
                audit["steals"] == 0 and audit["reaped_early"] == 0,
                f"{audit['claims']} claims; {audit['reaped']} leases of killed replicas reclaimed, "
                f"{audit['reaped_early']} of them before they expired; {audit['steals']} claims over a live token",
            )
        )
        terminal = [
            r["id"]
            for r in await conn.fetch(
                "SELECT e.id FROM events e JOIN generation_jobs j ON j.id = e.job_id "
                "WHERE e.type = ANY($1) AND j.webhook_url IS NOT NULL",
                ["job.completed", "job.failed", "job.canceled"],
            )
        ]
        undelivered = [i for i in terminal if i not in t.hooks]
        checks.append(
            (
                "every terminal webhook delivered at least once",
                bool(terminal) and not undelivered and t.bad_signatures == 0,
                f"{len(terminal)} terminal events, {len(undelivered)} never received; "
                f"{sum(t.hooks.values())} deliveries received ({sum(n - 1 for n in t.hooks.values())} repeats), "
                f"{t.bad_signatures} bad signatures",
            )
        )
        expected = [r["id"] for r in await conn.fetch("SELECT id FROM events ORDER BY id")]
        gaps = [i for i, seen in enumerate(t.streams) if seen != expected]
        (self.workdir / "streams.json").write_text(json.dumps({"expected": expected, "streams": t.streams}))
        known = set(expected)
        problems = [
            f"client {i}: {len(seen) - len(set(seen))} repeated, "
            f"{sum(1 for a, b in itertools.pairwise(seen) if b <= a)} not increasing, "
            f"{len(known - set(seen))} missing, {len(set(seen) - known)} unknown"
            for i, seen in enumerate(t.streams)
            if i in gaps
        ]
        checks.append(
            (
                "no SSE client saw a gap",
                not gaps and bool(expected),
                f"{len(t.streams)} clients, {len(expected)} events each expected, "
                f"received {[len(s) for s in t.streams]}; {t.reconnects} reconnects; "
                + ("; ".join(problems) or "in order"),
            )
        )
        lives = [life for r in self.replicas for life in r.lives if "growth" in life]
        worst = max(lives, key=lambda life: life["growth"], default=None)
        checks.append(
            (
                f"each replica's RSS growth <= {RSS_GROWTH_LIMIT:.0%} (from {RSS_SETTLE:.0f}s after start)",
                bool(lives) and all(life["growth"] <= RSS_GROWTH_LIMIT for life in lives),
                f"{len(lives)} replica lives measured; "
                + ", ".join(
                    f"r{life['replica']} {life['rss_from']:.0f}->{life['rss_to']:.0f} MiB "
                    f"({life['growth']:+.1%}, {life['seconds']:.0f}s, {life['ended_by']})"
                    for life in lives
                )
                + (f"; worst {worst['growth']:+.1%}" if worst else ""),
            )
        )
        print()
        print(
            f"soak: {self.args.seconds:.0f}s at {self.args.rate:g} jobs/s, {REPLICAS} replicas, lease {LEASE_SECONDS}s"
        )
        print(f"submitted late (>1 s behind schedule): {t.late}; refused: {dict(t.refused)}")
        for fault in t.faults:
            print(f"fault: {fault}")
        for name, ok, detail in checks:
            print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
        return 0 if all(ok for _, ok, _ in checks) else 1


def _steps(every: float, seconds: float) -> list[float]:
    steps, t = [], every
    while t < seconds - 5:
        steps.append(t)
        t += every
    return steps


def _start_s3(workdir: Path, port: int) -> S3Server:
    """moto again on the same port, so the replicas' S3 endpoint stays valid."""
    log_path = workdir / f"moto-{port}.log"
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    server = S3Server(process, port, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{server.endpoint}/", timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("moto did not restart")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 600)))
    parser.add_argument("--rate", type=float, default=float(os.environ.get("SOAK_RATE", 10)), help="jobs per second")
    parser.add_argument("--drain", type=float, default=120.0, help="at most this long for the drain after the load")
    return parser.parse_args()


async def amain(args: argparse.Namespace) -> int:
    args.caught_up = asyncio.Event()
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    workdir.chmod(0o711)  # reachable by the unprivileged user the embedded PostgreSQL runs as under root
    status = 1
    try:
        status = await Soak(args, workdir).run()
        return status
    finally:
        if status == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(asyncio.run(amain(parse())))
