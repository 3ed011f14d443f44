"""The real service, `python -m backend`, as child processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from backend.embedded_pg import free_port
from bench.procs import BenchError, die_with_parent
from bench.venv import ROOT

# Queue measurements use the noop provider: the queue's cost, not Pillow's.
BASE_ENV = {
    "PROVIDERS": "animals,noop",
    "DEFAULT_PROVIDER": "noop",
    "IMAGE_PROVIDER_DELAY": "0",
    "LOG_LEVEL": "WARNING",
    "RUN_MIGRATIONS": "false",
    "DEBUGPY_ENABLED": "false",
    # The queue's own capacity, not one account's budget (bench/figures/auth.py measures that).
    "RATE_LIMIT_PER_MINUTE": "0",
    "MAX_PENDING_JOBS_PER_KEY": "0",
}


@dataclass
class ServiceProcess:
    process: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1) as client:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise BenchError(f"service exited with {self.process.returncode}: {self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise BenchError(f"service not ready after {timeout:.0f}s: {self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@contextlib.asynccontextmanager
async def services(
    database_url: str,
    count: int,
    workdir: Path,
    *,
    code: Path = ROOT,
    module: str = "backend",
    **settings: str,
) -> AsyncIterator[list[ServiceProcess]]:
    """Start `count` service processes with these settings (env names); stop them on exit.

    `code` is the checkout whose `backend` runs (another one measures a before/after pair);
    `module` another server to run the same way (a baseline)."""
    workdir.mkdir(parents=True, exist_ok=True)
    started: list[ServiceProcess] = []
    try:
        for _ in range(count):
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DEBUGPY", "PG"))}
            env.update(BASE_ENV)
            env.update(settings)
            env.update(
                {
                    "DATABASE_URL": database_url,
                    "PORT": str(port),
                    "DATA_DIR": str(workdir),
                    "PYTHONPATH": str(code),
                }
            )
            log = workdir / f"service-{port}.log"
            with log.open("ab") as out:
                # cwd is the work dir, so a developer's .env cannot change what we measure.
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    module,
                    cwd=workdir,
                    env=env,
                    stdout=out,
                    stderr=out,
                    preexec_fn=die_with_parent,
                )
            started.append(ServiceProcess(process, port, log))
        for service in started:
            await service.wait_ready()
        yield started
    finally:
        await asyncio.gather(*(_stop(service) for service in started))


async def _stop(service: ServiceProcess) -> None:
    process = service.process
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 15)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
