"""Wake-ups after commit: one NOTIFY connection per process, coalesced, plus direct local calls.

A NOTIFY inside a writing transaction serialises commits: PostgreSQL holds a global lock on its
notification queue from pre-commit through the commit's WAL flush, so every notifying insert
commits alone (measured: raw inserts 1.9-2.9k/s without a notifying trigger, 430-930/s with
one). The service's connections therefore carry `generation_jobs.notify = 'after_commit'`, which
tells the triggers to leave NOTIFY out (migration notify_after_commit), and the repository calls
`Notifier.notify` once its statement committed. Listeners in this process are called at once;
for other processes, every channel/payload poked while one round is in flight goes out in the
next round, as one statement on a connection of its own with `synchronous_commit = off` (a
wake-up need not wait for the disk). Listeners ignore the rounds they sent themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

log = logging.getLogger(__name__)

# Channels. Workers wake on new work and stop a job on its cancel (payload: the job id; sent in
# the cancelling transaction, it is rare); event streams wake per account (payload: its id);
# webhook senders wake on new deliveries.
NEW_JOB_CHANNEL = "generation_jobs_new"
CANCEL_CHANNEL = "generation_jobs_cancel"
EVENTS_CHANNEL = "events"
DELIVERIES_CHANNEL = "webhook_deliveries"

# The session setting the triggers read (backend/migrations/versions/0012_notify_after_commit.py).
SESSION_SETTINGS = {"generation_jobs.notify": "after_commit"}
_NOTIFY_SQL = "SELECT count(pg_notify(c, p)) FROM unnest($1::text[], $2::text[]) AS t(c, p)"
_RETRY_FIRST, _RETRY_MAX = 0.1, 5.0


class Notifier:
    """`notify(channel, payload)` after a commit; `listen` for this process's own wake-ups."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._local: dict[str, list[Callable[[str], None]]] = {}
        self._pending: set[tuple[str, str]] = set()
        self._due = asyncio.Event()
        self._connection: asyncpg.Connection | None = None
        self._pid: int | None = None
        self._task: asyncio.Task[None] | None = None

    def listen(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call `callback(payload)` directly when this process notifies `channel`."""
        self._local.setdefault(channel, []).append(callback)

    def notify(self, channel: str, payload: str = "") -> None:
        for callback in self._local.get(channel, ()):
            callback(payload)
        self._pending.add((channel, payload))
        self._due.set()

    def sent_by_us(self, pid: int) -> bool:
        """True for a notification from our own connection: its listeners were called already."""
        return pid == self._pid

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notifier")

    async def stop(self) -> None:
        """Send what is pending (briefly), then close."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception):
            if self._pending:
                await asyncio.wait_for(self._send(), 1)
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._connection.close(), 2)

    async def _run(self) -> None:
        delay = _RETRY_FIRST
        while True:
            await self._due.wait()
            try:
                await self._send()
                delay = _RETRY_FIRST
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # What was not sent stays pending; listeners also look again after reconnecting.
                log.warning("notifier: cannot send wake-ups: %s", exc)
                await self._drop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)

    async def _send(self) -> None:
        self._due.clear()
        batch, self._pending = self._pending, set()
        try:
            connection = await self._connect()
            await connection.fetchval(_NOTIFY_SQL, [c for c, _ in batch], [p for _, p in batch])
        except BaseException:
            self._pending |= batch
            self._due.set()
            raise

    async def _connect(self) -> asyncpg.Connection:
        if self._connection is None or self._connection.is_closed():
            self._connection = await asyncpg.connect(
                self.dsn, timeout=5, command_timeout=10, server_settings={"synchronous_commit": "off"}
            )
            self._pid = self._connection.get_server_pid()
        return self._connection

    async def _drop(self) -> None:
        if self._connection is not None:
            self._connection.terminate()
            self._connection = None
