"""`python -m bench.soak`: endurance with faults across three replicas, bounded in time.

Three `python -m backend` replicas (S3 storage on a local moto server, short leases, otherwise the
product's defaults: MAX_ATTEMPTS, backoff, STORAGE_WAIT_SECONDS) take jobs with a `webhookUrl`;
SSE clients follow `GET /events` and reconnect with Last-Event-ID to any live replica, and a
local receiver verifies every webhook's Standard Webhooks signature.

First a calibration measures the setup's capacity (closed-loop clients, the same job shape, about
20 s), then the replicas start afresh and for `--seconds` (SOAK_SECONDS, default 600) a
constant-rate submitter offers half of it (`--rate` overrides). Meanwhile a random replica is
SIGKILLed (and restarted) every minute, PostgreSQL is restarted once and the object store is
stopped and restarted once. After a bounded drain it prints, checks, and writes to
bench/results/soak.json:

- every job in the database is final exactly once (an audit trigger this script installs counts
  the transitions into completed/failed/canceled), and every accepted (202) job is there;
- no job failed because of an outage (the provider never fails on its own), with the final
  statuses, the failed jobs by error and by the fault they followed, and the attempts that went
  back to the queue by cause;
- no job ran twice at once: a claim that takes over another lease starts after that lease expired;
- every terminal event of a job was delivered to the receiver at least once, signature verified;
- no SSE client saw a gap: the ids it received, in order, equal the account's events in the DB;
- each replica's RSS grew at most 10 % from 30 s after its start to its end.

Exit status 1 if any check fails. The object store is moto, in memory: after its restart the
earlier outputs are gone and the bucket is created again a moment after the store answers (the
replicas' first writes find no bucket). The checks are about jobs, not files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import signal
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
S3_DOWN = 5.0  # how long the object store stays stopped (plus moto's restart)
FINAL = ("completed", "failed", "canceled")
TERMINAL_EVENTS = ("job.completed", "job.failed", "job.canceled")
CALIBRATION_CLIENTS = 64  # closed-loop clients: more than enough to keep all 3 x 32 slots busy
CALIBRATION_WARMUP = 5.0
CALIBRATION_SECONDS = 15.0
LOAD_FRACTION = 0.5  # the soak offers this share of the measured capacity
RESULTS = ROOT / "bench" / "results" / "soak.json"

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
    new_message text,
    attempts integer,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION soak_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status OR NEW.lease_token IS DISTINCT FROM OLD.lease_token THEN
        INSERT INTO soak_audit (job_id, old_status, new_status, old_token, new_token, old_expires, new_error,
                                new_message, attempts)
        VALUES (NEW.id, OLD.status, NEW.status, OLD.lease_token, NEW.lease_token, OLD.lease_expires_at,
                NEW.error_code, NEW.error_message, NEW.attempts);
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
    ready: bool = False  # answered /readyz since it started: the submitters send it work (as a balancer would)
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
                        self.ready = True
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
        self.ready = False
        if self.alive and self.process is not None:
            self.end_life("SIGKILL")
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self, how: str = "end of run") -> None:
        self.ready = False
        if self.alive and self.process is not None:
            self.end_life(how)
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
    submitted: int = 0  # by the constant-rate submitter (the calibration's are not counted)
    calibration_accepted: int = 0
    hooks: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # event id -> deliveries
    bad_signatures: int = 0
    streams: list[list[int]] = field(default_factory=list)
    reconnects: int = 0
    faults: list[Fault] = field(default_factory=list)


@dataclass
class Fault:
    what: str  # "SIGKILL replica 2", "PostgreSQL restart", "object store stop"
    start: float  # wall clock (time.time()), comparable with the database's timestamps
    end: float  # when the faulted piece answered again


class CpuMeter:
    """CPU time of the replicas, PostgreSQL, the object store and this script since creation,
    as shares of the whole machine (all cores), to see who used the cores a measurement had."""

    def __init__(self, soak: Soak) -> None:
        self.soak = soak
        self.wall = time.monotonic()
        self.start = self.sample()

    def groups(self) -> dict[str, list[psutil.Process]]:
        def tree(pid: int | None) -> list[psutil.Process]:
            if pid is None:
                return []
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                return [process, *process.children(recursive=True)]
            return []

        pg = self.soak.pg.process if self.soak.pg is not None else None
        s3 = self.soak.s3.process if self.soak.s3 is not None else None
        return {
            "replicas": [p for r in self.soak.replicas if r.process is not None for p in tree(r.process.pid)],
            "postgres": tree(pg.pid if pg is not None else None),
            "object store": tree(s3.pid if s3 is not None else None),
            "this script": [psutil.Process()],
        }

    def sample(self) -> dict[str, dict[int, float]]:
        out: dict[str, dict[int, float]] = {}
        for group, processes in self.groups().items():
            out[group] = {}
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    out[group][process.pid] = times.user + times.system
        return out

    def shares(self) -> dict[str, float]:
        """Each group's share of all cores since creation (processes that came and went: in part)."""
        end, wall = self.sample(), time.monotonic() - self.wall
        cores = psutil.cpu_count() or 1
        return {
            group: round(
                sum(t - self.start.get(group, {}).get(pid, 0.0) for pid, t in end[group].items()) / wall / cores, 3
            )
            for group in end
        }


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
        self.t0 = time.time()  # the load's start, wall clock
        self.rate = 0.0  # the soak's offered rate, jobs/s
        self.waiters: dict[str, asyncio.Future[None]] = {}  # job id -> its terminal webhook (calibration)
        self.calibrating = False
        self.figures: dict[str, Any] = {}  # what bench/results/soak.json gets

    def live_urls(self) -> list[str]:
        return [r.url for r in self.replicas if r.alive and r.ready] or [self.replicas[0].url]

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
            event = json.loads(body)
            self.tally.hooks[int(event["id"])] += 1
            if self.calibrating and event["type"] in TERMINAL_EVENTS:
                # The webhook may come before the client that submitted the job starts waiting.
                waiter = self.waiters.setdefault(event["jobId"], asyncio.get_running_loop().create_future())
                if not waiter.done():
                    waiter.set_result(None)
            return Response(status_code=204)

        app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.hook_port, log_level="warning", lifespan="off")
        return uvicorn.Server(config)

    @property
    def job(self) -> dict[str, Any]:
        """The one job shape of the calibration and the soak."""
        return {"numImages": 1, "provider": "animals", "webhookUrl": f"http://127.0.0.1:{self.hook_port}/hook"}

    async def calibrate(self, conn: asyncpg.Connection) -> float:
        """The three replicas' capacity in jobs/s, measured closed-loop with the soak's job shape.

        CALIBRATION_CLIENTS clients each submit a job and wait for its terminal webhook before the
        next, so the queue stays shallow and full; the rate is the jobs completed (per the database)
        in CALIBRATION_SECONDS after a warm-up. Webhooks and SSE clients are attached as in the
        soak, and this process's own share of the two cores is printed beside it.
        """
        done = asyncio.Event()

        async def client(index: int, http: httpx.AsyncClient) -> None:
            urls = [r.url for r in self.replicas]
            n = index
            while not done.is_set():
                n += CALIBRATION_CLIENTS
                try:
                    response = await http.post(f"{urls[n % len(urls)]}/generations", json=self.job)
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
                    continue
                if response.status_code != 202:
                    await asyncio.sleep(0.1)
                    continue
                job_id = response.json()["jobId"]
                self.tally.accepted.add(job_id)
                waiter = self.waiters.setdefault(job_id, asyncio.get_running_loop().create_future())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, 30)
                self.waiters.pop(job_id, None)

        log(
            f"calibration: {CALIBRATION_CLIENTS} closed-loop clients, {CALIBRATION_WARMUP:.0f}s warm-up, "
            f"{CALIBRATION_SECONDS:.0f}s measured"
        )
        self.calibrating = True
        limits = httpx.Limits(max_connections=CALIBRATION_CLIENTS)
        async with httpx.AsyncClient(timeout=10, limits=limits) as http:
            tasks = [asyncio.create_task(client(i, http)) for i in range(CALIBRATION_CLIENTS)]
            await asyncio.sleep(CALIBRATION_WARMUP)
            cpu = CpuMeter(self)
            began = await conn.fetchval("SELECT clock_timestamp()")
            await asyncio.sleep(CALIBRATION_SECONDS)
            ended = await conn.fetchval("SELECT clock_timestamp()")
            shares = cpu.shares()
            done.set()
            await asyncio.wait(tasks, timeout=40)
            for task in tasks:
                task.cancel()
        self.calibrating = False
        self.waiters.clear()
        self.tally.calibration_accepted = len(self.tally.accepted)
        completed = await conn.fetchval(
            "SELECT count(*) FROM generation_jobs "
            "WHERE status = 'completed' AND completed_at >= $1 AND completed_at < $2",
            began,
            ended,
        )
        capacity: float = completed / (ended - began).total_seconds()
        log(
            f"calibration: {completed} jobs completed in {(ended - began).total_seconds():.1f}s = "
            f"{capacity:.1f} jobs/s; CPU shares of the machine: {shares}"
        )
        self.figures["calibration"] = {
            "clients": CALIBRATION_CLIENTS,
            "warmup_seconds": CALIBRATION_WARMUP,
            "seconds": (ended - began).total_seconds(),
            "completed": completed,
            "capacity_jobs_per_second": capacity,
            "cpu_share_of_machine": shares,
        }
        return capacity

    async def submitter(self, rate: float) -> None:
        body = self.job
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
                self.tally.submitted += 1
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
            began = time.time()
            if what == "kill":
                victim = random.choice(self.replicas)
                await victim.kill()
                log(f"SIGKILL replica {victim.index}; restarting it")
                await victim.start()
                await victim.wait_ready(90)
                self.tally.faults.append(Fault(f"SIGKILL replica {victim.index}", began, time.time()))
            elif what == "postgres" and self.pg is not None:
                log("restarting PostgreSQL")
                port = self.pg.port
                await asyncio.to_thread(self.pg.stop)
                # start() keeps the port: it binds with SO_REUSEADDR as PostgreSQL does, so the
                # stopped server's connections in TIME_WAIT do not make it look taken.
                await asyncio.to_thread(self.pg.start, 60)
                if self.pg.port != port:
                    raise RuntimeError(f"PostgreSQL came back on port {self.pg.port}, not {port}")
                self.tally.faults.append(Fault("PostgreSQL restart", began, time.time()))
            elif what == "s3" and self.s3 is not None:
                log(f"stopping the object store for {S3_DOWN:.0f} s")
                await asyncio.to_thread(self.s3.stop)
                await asyncio.sleep(S3_DOWN)
                # On the same port, so the replicas' endpoint stays valid. moto keeps everything in
                # memory: it comes back empty, and the replicas' first writes find no bucket.
                await asyncio.to_thread(self.s3.start_again)
                await asyncio.to_thread(self.s3.create_bucket, self.bucket)
                self.tally.faults.append(Fault("object store stop", began, time.time()))
            log(f"{self.tally.faults[-1].what}: back after {time.time() - began:.1f}s")

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
            clients = [asyncio.create_task(self.sse_client(i)) for i in range(SSE_CLIENTS)]
            seconds, rate = self.args.seconds, self.args.rate
            conn = await asyncpg.connect(url)
            try:
                if rate is None:
                    rate = LOAD_FRACTION * await self.calibrate(conn)
                    await self.settle(conn)
            finally:
                await conn.close()
            self.rate = rate
            log(f"soak: {seconds:.0f}s at {rate:.1f} jobs/s over {REPLICAS} replicas, {SSE_CLIENTS} SSE clients")
            self.t0 = time.time()
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

    async def settle(self, conn: asyncpg.Connection) -> None:
        """After the calibration: its last jobs finish, then the replicas start afresh, so each
        replica life's RSS is measured under the soak's load only (not the calibration's peak)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not await conn.fetchval("SELECT count(*) FROM generation_jobs WHERE status IN ('pending','processing')"):
                break
            await asyncio.sleep(0.2)
        await asyncio.gather(*(replica.stop("calibration") for replica in self.replicas))
        for replica in self.replicas:
            replica.lives.clear()
            await replica.start()
        for replica in self.replicas:
            await replica.wait_ready()

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

    def after_fault(self, at: float) -> str:
        """Which fault an event at wall time `at` followed, and how long after its start."""
        before = [f for f in self.tally.faults if f.start <= at]
        if not before:
            return f"{at - self.t0:.0f}s, before any fault"
        fault = before[-1]
        down = fault.end - fault.start
        return f"{fault.start - self.t0:.0f}s {fault.what} (down {down:.1f}s) +{at - fault.start:.1f}s"

    async def failures(self, conn: asyncpg.Connection) -> list[str]:
        """Failed jobs grouped by error code, message and the fault they followed."""
        rows = await conn.fetch(
            """
            SELECT j.error_code, j.error_message, j.attempts, extract(epoch FROM j.completed_at)::float8 AS at,
                   (SELECT string_agg(coalesce(a.new_error, '-'), ',' ORDER BY a.seq) FROM soak_audit a
                    WHERE a.job_id = j.id AND a.old_status = 'processing' AND a.new_status <> 'processing') AS tries
            FROM generation_jobs j WHERE j.status = 'failed' ORDER BY j.completed_at
            """
        )
        groups: dict[tuple[str, str, str], list[asyncpg.Record]] = defaultdict(list)
        for row in rows:
            before = [f for f in self.tally.faults if f.start <= row["at"]]
            fault = f"{before[-1].start - self.t0:.0f}s {before[-1].what}" if before else "no fault"
            message = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<id>", row["error_message"] or "")[:140]
            groups[(row["error_code"], message, fault)].append(row)
        lines = []
        for (code, message, _), members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            first, last = members[0], members[-1]
            lines.append(
                f"{len(members)} x {code}: {message!r}; first {self.after_fault(first['at'])}, "
                f"last {self.after_fault(last['at'])}; attempts {sorted({m['attempts'] for m in members})}; "
                f"e.g. outcomes per attempt {first['tries']}"
            )
        return lines

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
        failed = await self.failures(conn)
        checks.append(
            (
                "no job failed because of an outage",
                not failed,
                # The animals provider never fails on its own: a failed job here can only be the
                # faults' doing (or a bug), and the user accepted it expecting a result.
                f"{len(failed)} failed" + "".join(f"\n      {line}" for line in failed),
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
                list(TERMINAL_EVENTS),
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
        retries = await conn.fetch(
            "SELECT coalesce(new_error, '-') AS code, count(*) AS n FROM soak_audit "
            "WHERE old_status = 'processing' AND new_status = 'pending' GROUP BY 1 ORDER BY 2 DESC"
        )
        requeued = {r["code"]: r["n"] for r in retries}
        # Waits for the object store happen inside an attempt, so the database does not see them:
        # the replicas' logs do (one warning per job and wait).
        store_waits = sum(
            path.read_text(errors="replace").count("waits for the object store")
            for path in self.workdir.glob("replica-*.log")
        )
        calibration = self.figures.get("calibration")
        passed = all(ok for _, ok, _ in checks)
        print()
        print(
            f"soak: {self.args.seconds:.0f}s at {self.rate:.1f} jobs/s, {REPLICAS} replicas, lease {LEASE_SECONDS}s, "
            f"{SSE_CLIENTS} SSE clients, webhooks on every job"
        )
        if calibration:
            print(
                f"capacity: {calibration['capacity_jobs_per_second']:.1f} jobs/s measured "
                f"({calibration['completed']} jobs completed in {calibration['seconds']:.1f}s by "
                f"{calibration['clients']} closed-loop clients); the soak offered {LOAD_FRACTION:.0%} of it; "
                "CPU shares of the machine then: "
                + ", ".join(f"{k} {v:.0%}" for k, v in calibration["cpu_share_of_machine"].items())
            )
        else:
            print("capacity: not measured (--rate given)")
        print(
            f"submitted {t.submitted}, accepted {len(t.accepted) - t.calibration_accepted} "
            f"(+{t.calibration_accepted} in the calibration), refused {dict(t.refused)}, "
            f"submitted >1 s late {t.late}"
        )
        print("final statuses: " + ", ".join(f"{s} {by_status.get(s, 0)}" for s in FINAL))
        print(
            "attempts that went back to the queue, by error code: "
            + (", ".join(f"{code} {n}" for code, n in requeued.items()) or "none")
        )
        print(f"jobs that waited out the object store within their attempt (replica logs): {store_waits}")
        for fault in t.faults:
            print(f"fault: {fault.what} at {fault.start - self.t0:.0f}s, back after {fault.end - fault.start:.1f}s")
        for name, ok, detail in checks:
            print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
        print(f"soak: {'PASS' if passed else 'FAIL'} ({sum(ok for _, ok, _ in checks)} of {len(checks)} checks)")
        self.figures.update(
            {
                "command": " ".join(["python -m bench.soak", *sys.argv[1:]]),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "seconds": self.args.seconds,
                "rate_jobs_per_second": self.rate,
                "load_fraction": LOAD_FRACTION if calibration else None,
                "replicas": REPLICAS,
                "sse_clients": SSE_CLIENTS,
                "lease_seconds": LEASE_SECONDS,
                "submitted": t.submitted,
                "accepted": len(t.accepted) - t.calibration_accepted,
                "calibration_accepted": t.calibration_accepted,
                "refused": dict(t.refused),
                "late": t.late,
                "statuses": {s: by_status.get(s, 0) for s in FINAL},
                "requeued_by_error_code": requeued,
                "store_waits_within_attempt": store_waits,
                "faults": [
                    {"what": f.what, "at_seconds": f.start - self.t0, "down_seconds": f.end - f.start} for f in t.faults
                ],
                "rss_lives": [life for r in self.replicas for life in r.lives],
                "checks": [{"name": name, "pass": ok, "detail": detail} for name, ok, detail in checks],
                "pass": passed,
            }
        )
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(self.figures, indent=2) + "\n")
        print(f"figures in {RESULTS.relative_to(ROOT)}")
        return 0 if passed else 1


def _steps(every: float, seconds: float) -> list[float]:
    steps, t = [], every
    while t < seconds - 5:
        steps.append(t)
        t += every
    return steps


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 600)))
    rate = os.environ.get("SOAK_RATE")
    parser.add_argument(
        "--rate",
        type=float,
        default=float(rate) if rate else None,
        help=f"jobs per second (default: {LOAD_FRACTION:.0%} of the capacity a calibration measures first)",
    )
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
