"""`python -m backend [serve]`: start the database if needed, migrate, serve the API and its worker."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from backend.accounts.auth import anonymous_exposure
from backend.chat.catalog import load_catalog
from backend.config import Settings, SettingsError, load_settings
from backend.logs import configure_logging
from backend.providers import build_providers

if TYPE_CHECKING:
    from backend.embedded_pg import EmbeddedPostgres

log = logging.getLogger("backend")


def main() -> int:
    try:
        settings = load_settings()
        build_providers(settings)  # fail now, with the setting's name, not after the database started
        load_catalog(settings.model_catalog_file)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    refusal = anonymous_exposure(settings)
    if refusal is not None:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if settings.debugpy_enabled:
        start_debugger(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.database_url:
        return serve(settings)

    from backend.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError

    pg = EmbeddedPostgres(
        settings.data_dir / "postgres",
        settings.embedded_db_port,
        url_file=settings.data_dir / "embedded-postgres.url",
        watch=True,
    )
    try:
        pg.start()
    except EmbeddedPostgresError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        log.info("no DATABASE_URL set: using the embedded PostgreSQL at %s (psql and pgAdmin can connect)", pg.url)
        code = serve(settings.model_copy(update={"database_url": pg.url}), embedded=pg)
    finally:
        pg.stop()
    # The server died and could not be restarted: a supervisor should see a failure.
    return 1 if pg.failed else code


def serve(settings: Settings, embedded: EmbeddedPostgres | None = None) -> int:
    from backend.app import create_app
    from backend.db import migrate

    if settings.run_migrations:
        migrate(settings.sqlalchemy_url)
        log.info("database schema is at head")
    app = create_app(settings)
    # /readyz reports a dead embedded server at once, before a pooled connection notices.
    app.state.embedded_db = embedded
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
    )
    server = Server(config)
    server.run()
    # Drained: from here on we are shutting down anyway, and a signal arriving late
    # (a second SIGTERM from an impatient supervisor) must not turn exit 0 into a kill.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 0 if server.started else 1


class Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after draining; a service that drained cleanly exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def start_debugger(settings: Settings) -> None:
    import debugpy

    debugpy.listen((settings.debugpy_host, settings.debugpy_port))
    log.warning("debugpy is listening on %s:%d (DEBUGPY_ENABLED=true)", settings.debugpy_host, settings.debugpy_port)
    if settings.debugpy_wait:
        log.warning("waiting for a debugger to attach (DEBUGPY_WAIT=true)")
        debugpy.wait_for_client()
