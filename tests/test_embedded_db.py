"""The embedded PostgreSQL never uses a server it did not start, and survives its server dying."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from backend.embedded_pg import POSTGRES_BIN_PATH, EmbeddedPostgres, free_port
from tests.processes import kill_all, start_service

pytestmark = pytest.mark.slow


def psql(url: str, sql: str) -> str:
    port = url.rsplit(":", 1)[1].split("/")[0]
    result = subprocess.run(
        [str(POSTGRES_BIN_PATH / "psql"), "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-Atc", sql],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


def test_a_taken_port_is_replaced_by_a_free_one(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with EmbeddedPostgres(tmp_path / "pg", taken) as pg:
            assert pg.port != taken
            assert Path(psql(pg.url, "SHOW data_directory")) == pg.pgdata


def test_a_second_service_never_touches_the_first_ones_database(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "first-pg", free_port()) as first:
        psql(first.url, "CREATE TABLE marker (x int)")
        # A second service configured with the port the first server already listens on.
        second = start_service(tmp_path / "second", {"EMBEDDED_DB_PORT": str(first.port)})
        try:
            second.wait_ready()
            job = httpx.post(f"{second.url}/generations", json={"numImages": 1}, timeout=10).json()
            own_url = (tmp_path / "second" / "embedded-postgres.url").read_text().strip()
            assert not own_url.endswith(f":{first.port}/postgres")
            assert "instead" in second.output() and str(first.port) in second.output()
            assert psql(own_url, f"SELECT count(*) FROM generation_jobs WHERE id = '{job['jobId']}'") == "1"
            # The first server still holds only what was put there: no tables of the app.
            assert (
                psql(first.url, "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'")
                == "marker"
            )
        finally:
            kill_all(second)


def test_a_second_service_on_the_same_data_dir_stops_with_a_clear_error(tmp_path: Path) -> None:
    first = start_service(tmp_path / "shared")
    try:
        first.wait_ready()
        second = start_service(tmp_path / "shared")
        assert second.wait(60) != 0
        assert "already run by another process" in second.output()
        assert httpx.get(f"{first.url}/readyz", timeout=5).status_code == 200
    finally:
        kill_all(first)


def test_a_dead_embedded_server_makes_readyz_503_then_is_restarted(tmp_path: Path) -> None:
    service = start_service(tmp_path / "svc", {"WORKER_POLL_INTERVAL": "0.2"})
    try:
        service.wait_ready()
        [postmaster] = [p for p in psutil.Process(service.process.pid).children() if p.name() == "postgres"]

        postmaster.send_signal(signal.SIGKILL)

        deadline = time.monotonic() + 5
        while httpx.get(f"{service.url}/readyz", timeout=5).status_code != 503:
            assert time.monotonic() < deadline, "readyz still 200 after the database died"
            time.sleep(0.05)
        service.wait_ready(60)
        assert "restarted" in service.output()
        job = httpx.post(f"{service.url}/generations", json={"numImages": 1}, timeout=10).json()
        deadline = time.monotonic() + 30
        while httpx.get(f"{service.url}/generations/{job['jobId']}", timeout=5).json()["status"] != "completed":
            assert time.monotonic() < deadline, "no job completes after the restart"
            time.sleep(0.05)
    finally:
        kill_all(service)
