"""Fixtures: one real PostgreSQL per session (TEST_DATABASE_URL, or an embedded one).

Migrations run once per session; every test starts from an empty jobs table.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backend.accounts import ANONYMOUS_ACCOUNT_ID
from backend.app import create_app
from backend.config import Settings
from backend.db import migrate_async
from backend.embedded_pg import EmbeddedPostgres, free_port
from backend.jobs.repository import JobRepository
from backend.providers import Provider
from tests.s3server import CREDENTIALS, S3Server, start_s3_server

# `serve`: the app over real HTTP in the test's loop (for streams).
pytest_plugins = ["tests.servers"]
ROOT = Path(__file__).resolve().parent.parent
# Tables whose rows a migration seeds and the app needs (kept between tests).
KEEP_ROWS: frozenset[str] = frozenset({"accounts"})


@pytest.fixture(scope="session", autouse=True)
def reachable_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """As root, the embedded PostgreSQL runs as an unprivileged user, which must reach the test's
    folders (under --basetemp, see pyproject); pytest makes them private (0700). Opening them is
    the tests' choice about their own folders: the app never changes permissions outside DATA_DIR."""
    if os.geteuid() == 0:
        _let_others_traverse(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True)
def reachable_tmp_path(request: pytest.FixtureRequest) -> None:
    if os.geteuid() == 0 and "tmp_path" in request.fixturenames:
        _let_others_traverse(request.getfixturevalue("tmp_path"))


def _let_others_traverse(*folders: Path) -> None:
    for folder in folders:
        folder.chmod(folder.stat().st_mode | stat.S_IXOTH)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A postgresql:// URL for this session's database."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    folder = tmp_path_factory.mktemp("pg")
    if os.geteuid() == 0:
        _let_others_traverse(folder)
    pg = EmbeddedPostgres(folder / "data", free_port())
    pg.start()
    yield pg.url
    pg.stop()


def asyncpg_url(url: str) -> str:
    return "postgresql+asyncpg" + url[url.index("://") :]


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(asyncpg_url(database_url))
    async with engine.begin() as connection:
        # Start from nothing but our own objects: the test database is ours alone.
        await connection.execute(text("DROP SCHEMA public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))
        await migrate_async(connection)
    yield engine
    await engine.dispose()


@pytest.fixture(autouse=True)
async def clean_tables(request: pytest.FixtureRequest) -> None:
    if "engine" not in request.fixturenames:
        return
    engine: AsyncEngine = request.getfixturevalue("engine")
    async with engine.begin() as connection:
        # Every table of ours but the migration marker and reference data a migration seeded.
        tables = await connection.scalars(
            text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'alembic_version' AND tablename <> ALL(:keep)"
            ),
            {"keep": list(KEEP_ROWS)},
        )
        names = ", ".join(f'"{name}"' for name in tables)
        if names:
            await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        # Keep the built-in anonymous account that the migration seeded; drop the ones tests made.
        await connection.execute(
            text("DELETE FROM accounts WHERE id <> CAST(:anonymous AS uuid)"), {"anonymous": str(ANONYMOUS_ACCOUNT_ID)}
        )


@pytest.fixture
def make_settings(database_url: str, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "data_dir": tmp_path / "data",
            "image_provider_delay": 0.0,
            "worker_poll_interval": 0.2,
            "lease_seconds": 5.0,
            "retry_base_delay": 0.05,
            "retry_max_delay": 0.2,
            "shutdown_grace_seconds": 2.0,
            "providers": "animals,noop",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def repo(engine: AsyncEngine) -> JobRepository:
    return JobRepository(engine)


AppFactory = Callable[..., Awaitable[httpx.AsyncClient]]
# The app behind each test client, for tests that reach into its state (the worker).
APPS: weakref.WeakKeyDictionary[httpx.AsyncClient, FastAPI] = weakref.WeakKeyDictionary()


@pytest.fixture
async def make_client(make_settings: Callable[..., Settings]) -> AsyncIterator[AppFactory]:
    """Build an app with its own settings, run its lifespan, and talk to it in-process."""
    managers: list[LifespanManager] = []
    clients: list[httpx.AsyncClient] = []

    async def make(fakes: dict[str, Provider] | None = None, **overrides: Any) -> httpx.AsyncClient:
        """`fakes` replace the providers settings would build; `overrides` are settings."""
        app = create_app(make_settings(**overrides), fakes)
        manager = LifespanManager(app, startup_timeout=30, shutdown_timeout=30)
        await manager.__aenter__()
        managers.append(manager)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver")
        clients.append(client)
        APPS[client] = app
        return client

    yield make
    for client in clients:
        await client.aclose()
    for manager in reversed(managers):
        await manager.__aexit__(None, None, None)


@pytest.fixture
async def client(engine: AsyncEngine, make_client: AppFactory) -> httpx.AsyncClient:
    return await make_client()


async def wait_for_status(
    client: httpx.AsyncClient, job_id: str, statuses: set[str], timeout: float = 10.0
) -> dict[str, Any]:
    """Poll a job until its status is one of `statuses`, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/generations/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")
        await asyncio.sleep(0.02)


LiveServerFactory = Callable[..., str]


@pytest.fixture
def make_live_server(engine: AsyncEngine, make_settings: Callable[..., Settings]) -> Iterator[LiveServerFactory]:
    """Serve an app on 127.0.0.1 with uvicorn in a thread, for clients that need a real socket
    (OpenAI's SDK, the command line run as a subprocess). Returns its base URL."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(fakes: dict[str, Provider] | None = None, **overrides: Any) -> str:
        port = free_port()
        app = create_app(make_settings(port=port, **overrides), fakes)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
        thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "the server thread stopped before it served"
            assert time.monotonic() < deadline, "the server did not start within 30s"
            time.sleep(0.01)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, _ in running:
        server.should_exit = True
    for _, thread in running:
        thread.join(30)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One S3-protocol server (moto, a real process) per session; each test takes its own bucket."""
    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture
def s3_settings(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Settings overrides for an in-process app storing in a fresh bucket of the test server."""
    # The object store client reads the standard AWS variables, as it would in production.
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return {
        "storage_backend": "s3",
        "s3_bucket": s3_server.create_bucket(),
        "s3_endpoint_internal": s3_server.endpoint,
        "s3_public_endpoint": s3_server.public_endpoint,
        "s3_use_path_style": True,
    }
