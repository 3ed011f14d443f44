"""Fan-out: one LISTEN connection per process wakes every event stream of that process.

The trigger that writes events NOTIFYs `events` with the account id. The hub keeps one feed per
account that has listeners here: a wake costs one query for that account, whose rows go to every
subscriber of the account at once; no stream ever polls the database itself. A subscriber is a
queue; leaving the `subscribe` block frees it, and the last one out stops its account's feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg

from backend.db import database_down
from backend.events.models import Event
from backend.events.repository import EventRepository
from backend.notify import DELIVERIES_CHANNEL, EVENTS_CHANNEL, Notifier

log = logging.getLogger(__name__)

FEED_PAGE = 500
# A subscriber this far behind is cut off; it resumes with Last-Event-ID from the table.
MAX_BACKLOG = 10_000
# How soon to look again when committed events wait behind an older open transaction.
BLOCKED_RETRY_FIRST, BLOCKED_RETRY_MAX = 0.01, 1.0


class Overflow(Exception):
    """The subscriber fell too far behind and was dropped."""


class Subscription:
    def __init__(self) -> None:
        self._pending: list[Event] = []
        self._ready = asyncio.Event()
        self.overflowed = False

    def push(self, events: list[Event]) -> None:
        if self.overflowed:
            return
        self._pending.extend(events)
        if len(self._pending) > MAX_BACKLOG:
            self.overflowed, self._pending = True, []
        self._ready.set()

    async def next(self) -> list[Event]:
        """The events that arrived since the last call (waits for at least one)."""
        await self._ready.wait()
        self._ready.clear()
        if self.overflowed:
            raise Overflow
        events, self._pending = self._pending, []
        return events


class Feed:
    """One account's live events in this process, read from `cursor` on each wake."""

    def __init__(self, hub: EventHub, account_id: uuid.UUID) -> None:
        self.hub = hub
        self.account_id = account_id
        self.subscribers: set[Subscription] = set()
        self.cursor = -1
        self.wake = asyncio.Event()
        self.started = asyncio.Event()
        self.blocked_reads = 0  # reads that found committed events behind an open transaction
        self.task = asyncio.create_task(self._run(), name=f"events-feed-{account_id}")

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if self.cursor < 0:
                    # Whatever lies below the horizon now, subscribers replay from the table.
                    self.cursor = await self.hub.repo.horizon() - 1
                    self.started.set()
                await self._drain()
                failures = 0
            except Exception as exc:
                if not database_down(exc):
                    raise
                failures += 1
                log.warning("event feed: database unavailable: %s", exc)
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                continue
            await self.wake.wait()

    async def _drain(self) -> None:
        delay = BLOCKED_RETRY_FIRST
        while True:
            self.wake.clear()
            page = await self.hub.repo.account_page(self.account_id, self.cursor, FEED_PAGE)
            if page.events:
                self.cursor = page.events[-1].id
                for subscriber in self.subscribers:
                    subscriber.push(page.events)
            if page.full and not page.blocked:
                continue
            if not page.blocked:
                return
            self.blocked_reads += 1
            # Committed events wait behind an older transaction that has not finished; it may
            # never write an event (so no NOTIFY would come), hence a short timer.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)
            delay = min(delay * 2, BLOCKED_RETRY_MAX)


class EventHub:
    """Created by the app lifespan; `subscribe` to an account's events, `on_channel` for wakes."""

    def __init__(self, repo: EventRepository, dsn: str, notifier: Notifier | None = None) -> None:
        self.repo = repo
        self.dsn = dsn
        self.notifier = notifier
        self.feeds: dict[uuid.UUID, Feed] = {}
        self.listeners: dict[str, list[Callable[[str], None]]] = {EVENTS_CHANNEL: [], DELIVERIES_CHANNEL: []}
        self.listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self.notifier is not None:
            # Changes made by this process reach its own streams without the round trip.
            for channel in self.listeners:
                self.notifier.listen(channel, functools.partial(self._dispatch, channel))
        self._task = asyncio.create_task(self._listen_loop(), name="events-listen")

    async def stop(self) -> None:
        self._closed = True
        tasks = [feed.task for feed in self.feeds.values()]
        if self._task is not None:
            tasks.append(self._task)
        await stop_tasks(tasks)
        self.feeds.clear()

    def on_channel(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call `callback(payload)` on each notification of `channel`, and with "" after a
        reconnect (notifications sent while the connection was down are lost)."""
        self.listeners[channel].append(callback)

    @asynccontextmanager
    async def subscribe(self, account_id: uuid.UUID) -> AsyncIterator[Subscription]:
        """Receive every event of the account committed from now on, in id order.

        Register first, then replay from the table: the replay reaches at least the feed's
        starting point, and ids it also sees live are dropped by the caller's cursor.
        """
        feed = self.feeds.get(account_id)
        if feed is None:
            feed = self.feeds[account_id] = Feed(self, account_id)
        subscription = Subscription()
        feed.subscribers.add(subscription)
        try:
            await feed.started.wait()
            yield subscription
        finally:
            feed.subscribers.discard(subscription)
            if not feed.subscribers and self.feeds.get(account_id) is feed:
                del self.feeds[account_id]
                feed.task.cancel()

    @property
    def streams(self) -> int:
        return sum(len(feed.subscribers) for feed in self.feeds.values())

    def _on_notify(self, _conn: object, pid: int, channel: str, payload: str) -> None:
        if self.notifier is None or not self.notifier.sent_by_us(pid):
            self._dispatch(channel, payload)

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == EVENTS_CHANNEL:
            with contextlib.suppress(ValueError):
                feed = self.feeds.get(uuid.UUID(payload))
                if feed is not None:
                    feed.wake.set()
        for callback in self.listeners.get(channel, []):
            callback(payload)

    async def _listen_loop(self) -> None:
        failures = 0
        while not self._closed:
            try:
                connection = await asyncpg.connect(self.dsn, timeout=5)
            except Exception as exc:
                failures += 1
                log.warning("events listener: cannot connect: %s", exc)
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                continue
            closed = asyncio.Event()
            try:
                connection.add_termination_listener(lambda _, closed=closed: closed.set())
                for channel in self.listeners:
                    await connection.add_listener(channel, self._on_notify)
                failures = 0
                self.listening.set()
                # Anything committed while we were not listening: look now.
                for feed in self.feeds.values():
                    feed.wake.set()
                for callbacks in self.listeners.values():
                    for callback in callbacks:
                        callback("")
                await closed.wait()
            except Exception as exc:
                if not database_down(exc):
                    raise
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), 2)


STOP_TIMEOUT = 5.0


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel and wait, bounded: a task that swallowed its cancellation (asyncio.wait_for can,
    when the awaited thing finishes at that moment) must not hang the app's shutdown."""
    for task in tasks:
        task.cancel()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
        for task in pending:
            log.warning("task %s did not stop within %.0fs", task.get_name(), STOP_TIMEOUT)
