"""The embedded PostgreSQL never uses a server it did not start, and survives its server dying."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from backend.embedded_pg import POSTGRES_BIN_PATH, SYSTEM_DIR, EmbeddedPostgres, free_port
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


@pytest.mark.skipif(os.geteuid() != 0, reason="only as root does the server run as another user")
def test_as_root_a_private_folder_is_not_opened_up_and_relocated_data_is_cleaned(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)

    with EmbeddedPostgres(private / "postgres", free_port()) as pg:
        assert stat.S_IMODE(private.stat().st_mode) == 0o700  # no permission changed outside it
        assert pg.pgdata.parent == SYSTEM_DIR
        assert (private / "postgres.location").read_text().splitlines()[0] == str(pg.pgdata)
        assert Path(psql(pg.url, "SHOW data_directory")) == pg.pgdata
    relocated = pg.pgdata

    shutil.rmtree(private)  # its owner removed the folder: the relocated data belongs to nobody
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    with EmbeddedPostgres(other / "postgres", free_port()) as second:
        assert not relocated.exists()
        assert second.pgdata.exists()
    shutil.rmtree(other)
    private.mkdir(mode=0o700)
    with EmbeddedPostgres(private / "postgres", free_port()) as third:  # it sweeps `other`'s
        assert not second.pgdata.exists()
    shutil.rmtree(private)
    with EmbeddedPostgres(tmp_path / "postgres", free_port()) as fourth:  # in place; sweeps the third's
        assert fourth.pgdata == (tmp_path / "postgres").resolve()
        assert not third.pgdata.exists()
