"""Engine, migrations, and what counts as "the database is down"."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from backend.config import Settings
from backend.notify import SESSION_SETTINGS

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


# The worker's own pools: SQLAlchemy's for heartbeat, sweeper and the rarer fenced writes;
# asyncpg's for the claim loop and the completion flusher, with a spare.
WORKER_POOL_SIZE = 3
WORKER_HOT_POOL_SIZE = 3


def create_engine(settings: Settings, pool_size: int | None = None, *, notifies: bool = False) -> AsyncEngine:
    """`notifies`: this engine's writers send their wake-ups after commit (backend/notify.py)."""
    return create_async_engine(
        settings.sqlalchemy_url,
        # A fixed pool: overflow connections are opened and closed on every burst, and a new
        # connection costs far more than waiting a moment for a pooled one.
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=0,
        # No pre-ping: it would cost a round trip per checkout. After a restart the first
        # statement on a dead connection fails (503) and SQLAlchemy then recycles the whole pool.
        # A request should fail fast with 503 during an outage, not hang.
        pool_timeout=5,
        connect_args={"timeout": 5, "command_timeout": 30, "server_settings": _session(notifies)},
    )


async def create_pool(settings: Settings, size: int, *, notifies: bool = False) -> asyncpg.Pool:
    """A plain asyncpg pool for the per-job statements (insert, get, claim, complete).

    Checking a connection out of SQLAlchemy's async pool and back costs ~0.2 ms of CPU and an
    extra turn of the event loop; asyncpg's own pool costs a tenth of that. No connection is
    opened until one is needed (min_size 0), so the app starts while the database is down.
    """
    pool = asyncpg.create_pool(
        settings.asyncpg_dsn,
        min_size=0,
        max_size=size,
        timeout=5,
        command_timeout=30,
        # asyncpg's default reset is a round trip on every release (UNLISTEN, RESET ALL…). The
        # hot statements are single autocommit statements that leave no session state to reset.
        reset=_no_reset,
        server_settings=_session(notifies),
    )
    return await pool


def _session(notifies: bool) -> dict[str, str]:
    return dict(SESSION_SETTINGS) if notifies else {}


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully, or drop the connections if the server does not answer in time."""
    try:
        await asyncio.wait_for(pool.close(), 5)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        pool.terminate()


async def _no_reset(_: asyncpg.Connection) -> None:
    return None


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.exists() else Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def migrate(url: str) -> None:
    """Upgrade the database at `url` to head (blocking; run before the event loop)."""
    command.upgrade(alembic_config(url), "head")


async def migrate_async(connection: AsyncConnection) -> None:
    """Upgrade to head over an open connection, from inside a running event loop."""

    def upgrade(sync_connection: object) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_connection
        command.upgrade(cfg, "head")

    await connection.run_sync(upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        result = await connection.execute(text("SELECT version_num FROM alembic_version"))
        return result.scalar_one_or_none()


class DatabaseUnavailable(ConnectionError):
    """PostgreSQL could not be reached or dropped the connection (raised by the raw asyncpg path)."""


# SQLSTATE classes that mean "the server is not there right now": connection
# exceptions (08) and operator intervention such as shutdown or start-up (57P).
_DOWN_SQLSTATES = ("08", "57P")
_DOWN_TYPES = (
    OSError,
    PoolTimeout,
    SAInterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
)


def database_down(exc: BaseException) -> bool:
    """True when `exc` means PostgreSQL is unreachable, as opposed to a bug or bad data."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _DOWN_TYPES):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_DOWN_SQLSTATES):
            return True
        following = current.orig if isinstance(current, DBAPIError) else None
        current = following or current.__cause__ or current.__context__
    return False


_RAW_DOWN = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def fetch_raw(engine: AsyncEngine, sql: str, *args: object) -> list[asyncpg.Record]:
    """One statement straight through asyncpg on a pooled connection (no SQLAlchemy execution layer).

    SQLAlchemy cannot see a dropped connection on this path, so this discards it itself and
    raises what the rest of the code knows as "down".
    """
    async with engine.connect() as connection:
        raw: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
        try:
            records: list[asyncpg.Record] = await raw.fetch(sql, *args)
        except (*_RAW_DOWN, asyncpg.InternalClientError) as exc:
            # A server killed mid-statement can leave the protocol in a state asyncpg calls an
            # internal error ("another operation is in progress"): that connection is done for.
            broken = isinstance(exc, asyncpg.InternalClientError)
            if not (broken or raw.is_closed() or database_down(exc)):
                raise
            await connection.invalidate()
            raise DatabaseUnavailable(str(exc)) from exc
        return records


async def fetch_pooled(pool: asyncpg.Pool, sql: str, *args: object) -> list[asyncpg.Record]:
    """One statement on a connection of a plain asyncpg pool (see `create_pool`).

    A dropped connection raises what the rest of the code knows as "down". asyncpg's pool
    discards a closed connection on release; one left in an unknown state is terminated.
    """
    try:
        # asyncio.timeout, not acquire(timeout=): on Python 3.11 that is wait_for, a task per call.
        async with asyncio.timeout(5):
            raw = await pool.acquire()
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailable(f"no database connection: {exc}") from exc
    try:
        records: list[asyncpg.Record] = await raw.fetch(sql, *args)
    except (*_RAW_DOWN, asyncpg.InternalClientError) as exc:  # internal: see fetch_raw
        if isinstance(exc, asyncpg.PostgresError) and not database_down(exc):
            raise  # the statement failed on a healthy connection
        # Whatever state it was left in, it must not serve another statement. (A closed one
        # was already taken back by the pool, and its proxy refuses every call.)
        with contextlib.suppress(asyncpg.InterfaceError):
            raw.terminate()
        raise DatabaseUnavailable(str(exc)) from exc
    finally:
        await pool.release(raw)  # a no-op if the pool took it back already
    return records
