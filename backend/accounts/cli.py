"""`python -m backend keys create|list|revoke`: API keys, administered from a shell.

It talks to DATABASE_URL, or to the embedded database: the running service's (found
through its URL file) or, when none runs, one started for the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

import typer

from backend.accounts.keys import key_hash, key_hint, new_key, new_webhook_secret
from backend.accounts.repository import AccountRepository
from backend.config import Settings, SettingsError, load_settings
from backend.logs import configure_logging

T = TypeVar("T")

keys_app = typer.Typer(
    name="keys",
    help="API keys. One key is one account; jobs and files of one account are invisible to the others.",
    no_args_is_help=True,
    add_completion=False,
)

RATE_HELP = "Creating requests per minute (default RATE_LIMIT_PER_MINUTE; 0 = no limit)."
CONCURRENT_HELP = "Jobs processing at once, across replicas (default MAX_CONCURRENT_JOBS_PER_KEY)."


@keys_app.command()
def create(
    name: Annotated[str, typer.Option("--name", help="Who the key is for (shown by `keys list`).")],
    rate_limit: Annotated[
        int | None,
        typer.Option(
            "--rate-limit", min=0, help="Creating requests per minute (default RATE_LIMIT_PER_MINUTE; 0 = off)."
        ),
    ] = None,
    max_concurrent: Annotated[
        int | None,
        typer.Option("--max-concurrent", min=1, help="Jobs processing at once (default MAX_CONCURRENT_JOBS_PER_KEY)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Make an account with a new API key and webhook signing secret; both are shown only now."""
    name = name.strip()
    if not name or len(name) > 200:
        raise typer.BadParameter("must be 1 to 200 characters", param_hint="--name")
    key, secret = new_key(), new_webhook_secret()
    account = _with_repo(
        lambda repo: repo.create(
            name=name,
            key_hash=key_hash(key),
            key_hint=key_hint(key),
            webhook_secret=secret,
            rate_limit_per_minute=rate_limit,
            max_concurrent=max_concurrent,
        )
    )
    if as_json:
        print(json.dumps({"id": str(account.id), "name": account.name, "key": key, "webhookSecret": secret}))
        return
    print(f"account        {account.id} ({account.name})")
    print(f"API key        {key}")
    print(f"webhook secret {secret}")
    print("Store both now: only their hashes and the secret's owner are kept, and they are never shown again.")


@keys_app.command("list")
def list_keys(as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array on stdout.")] = False) -> None:
    """Every key: its account id, name, a hint of the key, its limits and whether it is revoked."""
    keys = _with_repo(lambda repo: repo.keys())
    if as_json:
        rows = [
            {
                "id": str(k.id),
                "name": k.name,
                "keyHint": k.key_hint,
                "rateLimitPerMinute": k.rate_limit_per_minute,
                "maxConcurrent": k.max_concurrent,
                "createdAt": k.created_at.isoformat(),
                "revokedAt": k.revoked_at.isoformat() if k.revoked_at else None,
            }
            for k in keys
        ]
        print(json.dumps(rows))
        return
    print(f"{'ID':36}  {'NAME':20}  {'KEY':14}  {'RATE/MIN':>8}  {'MAX RUN':>7}  {'CREATED':16}  STATE")
    for k in keys:
        rate = "default" if k.rate_limit_per_minute is None else str(k.rate_limit_per_minute)
        running = "default" if k.max_concurrent is None else str(k.max_concurrent)
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        print(
            f"{k.id!s:36}  {k.name[:20]:20}  {k.key_hint or '':14}  {rate:>8}  {running:>7}"
            f"  {k.created_at:%Y-%m-%d %H:%M}  {state}"
        )


@keys_app.command()
def revoke(account_id: Annotated[uuid.UUID, typer.Argument(metavar="ID", help="The id `keys list` shows.")]) -> None:
    """Revoke a key: every replica refuses it within seconds. Its jobs stay in the database."""
    if not _with_repo(lambda repo: repo.revoke(account_id)):
        print(f"error: no API key with id {account_id}", file=sys.stderr)
        raise typer.Exit(1)
    print(f"revoked {account_id}")


def main(args: list[str]) -> int:
    """Run one `keys …` command; returns the exit code."""
    try:
        keys_app(args, prog_name="python -m backend keys", standalone_mode=True)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


def _with_repo(work: Callable[[AccountRepository], Awaitable[T]]) -> T:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    configure_logging("WARNING", settings.log_format)
    with _database(settings) as url:
        return asyncio.run(_run(settings.model_copy(update={"database_url": url}), work))


async def _run(settings: Settings, work: Callable[[AccountRepository], Awaitable[T]]) -> T:
    from backend.db import create_engine

    engine = create_engine(settings, pool_size=1)
    try:
        return await work(AccountRepository(engine))
    finally:
        await engine.dispose()


def _listening(port: int | None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port or 5432), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[str]:
    """DATABASE_URL, the running service's embedded database, or one started for this command."""
    from backend.db import migrate
    from backend.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError

    if settings.database_url:
        if settings.run_migrations:
            migrate(settings.sqlalchemy_url)
        yield settings.database_url
        return
    url_file = settings.data_dir / "embedded-postgres.url"
    running = url_file.read_text().strip() if url_file.exists() else ""
    if running and _listening(urlsplit(running).port):
        yield running  # the service's own server: it migrated at start
        return
    pg = EmbeddedPostgres(settings.data_dir / "postgres", settings.embedded_db_port)
    try:
        pg.start()
    except EmbeddedPostgresError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    try:
        migrate(settings.model_copy(update={"database_url": pg.url}).sqlalchemy_url)
        yield pg.url
    finally:
        pg.stop()
