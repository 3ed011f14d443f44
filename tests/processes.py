"""Start the real service (`python -m backend`) as a child process and talk to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from backend.embedded_pg import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"service exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"service not ready after {timeout}s:\n{self.output()}")

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def start_service(data_dir: Path, env: dict[str, str] | None = None, *, port: int | None = None) -> Service:
    """Start `python -m backend` with a clean environment plus `env`; it logs to data_dir.

    It runs in data_dir, so a developer's `.env` in the repository cannot leak into the test.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    full_env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "TEST_DATABASE_URL", "DEBUGPY"))
    }
    full_env.update(
        {
            "PORT": str(port),
            "DATA_DIR": str(data_dir),
            "IMAGE_PROVIDER_DELAY": "0",
            "EMBEDDED_DB_PORT": str(free_port()),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    full_env.update(env or {})
    log = data_dir / f"service-{port}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "backend"], cwd=data_dir, env=full_env, stdout=out, stderr=subprocess.STDOUT
        )
    return Service(process, port, log)


def kill_all(*services: Service) -> None:
    for service in services:
        if service.process.poll() is None:
            service.process.send_signal(signal.SIGKILL)
            service.process.wait(10)
