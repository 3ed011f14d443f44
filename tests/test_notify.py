"""Wake-ups after commit: the service's own writes leave NOTIFY out of their transaction, and
the notifier sends them afterwards, coalesced; anyone else's writes still notify in the trigger.

Notifications reach a listener in commit order, so a marker NOTIFY sent after a write proves,
once it arrives, that the write itself sent nothing: no waiting for something not to happen.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.accounts import ANONYMOUS_ACCOUNT_ID
from backend.notify import EVENTS_CHANNEL, NEW_JOB_CHANNEL, SESSION_SETTINGS, Notifier
from tests.polling import until

DEADLINE = 10.0
MARKER = "test_marker"
INSERT = "INSERT INTO generation_jobs (num_images, provider) VALUES (1, 'noop')"


class Heard:
    """What a LISTEN connection received, in order: (pid, channel, payload)."""

    def __init__(self) -> None:
        self.items: list[tuple[int, str, str]] = []
        self.marker = asyncio.Event()

    def __call__(self, _conn: object, pid: int, channel: str, payload: str) -> None:
        self.items.append((pid, channel, payload))
        if channel == MARKER:
            self.marker.set()

    async def until_marker(self) -> list[tuple[int, str, str]]:
        await asyncio.wait_for(self.marker.wait(), DEADLINE)
        return [item for item in self.items if item[1] != MARKER]


@asynccontextmanager
async def listening(database_url: str, *channels: str) -> AsyncIterator[Heard]:
    heard = Heard()
    connection = await asyncpg.connect(database_url)
    try:
        for channel in (*channels, MARKER):
            await connection.add_listener(channel, heard)
        yield heard
    finally:
        await connection.close()


async def test_service_connections_leave_notify_to_after_commit(engine: AsyncEngine, database_url: str) -> None:
    async with listening(database_url, NEW_JOB_CHANNEL, EVENTS_CHANNEL) as heard:
        service = await asyncpg.connect(database_url, server_settings=SESSION_SETTINGS)
        try:
            await service.execute(INSERT)
            await service.execute(f"NOTIFY {MARKER}")
        finally:
            await service.close()
        assert await heard.until_marker() == []


async def test_other_writers_still_notify_in_the_trigger(engine: AsyncEngine, database_url: str) -> None:
    async with listening(database_url, NEW_JOB_CHANNEL, EVENTS_CHANNEL) as heard:
        dba = await asyncpg.connect(database_url)
        try:
            await dba.execute(INSERT)
            await dba.execute(f"NOTIFY {MARKER}")
        finally:
            await dba.close()
        channels = [(channel, payload) for _, channel, payload in await heard.until_marker()]
    assert sorted(channels) == [(EVENTS_CHANNEL, str(ANONYMOUS_ACCOUNT_ID)), (NEW_JOB_CHANNEL, "")]


async def test_notifier_calls_local_listeners_at_once_and_sends_each_pair_once(
    engine: AsyncEngine, database_url: str
) -> None:
    notifier = Notifier(database_url)
    local: list[str] = []
    notifier.listen(EVENTS_CHANNEL, local.append)
    accounts = [str(uuid.uuid4()) for _ in range(2)]
    async with listening(database_url, NEW_JOB_CHANNEL, EVENTS_CHANNEL) as heard:
        notifier.start()
        try:
            for _ in range(50):  # one loop turn: all of it goes out in one round
                for account in accounts:
                    notifier.notify(EVENTS_CHANNEL, account)
                notifier.notify(NEW_JOB_CHANNEL)
            assert local == accounts * 50  # before any round trip
            # One round, one transaction: its three distinct pairs arrive together.
            await until(lambda: len(heard.items) >= 3, "the notifier's round")
            marker = await asyncpg.connect(database_url)
            await marker.execute(f"NOTIFY {MARKER}")
            await marker.close()
            received = await heard.until_marker()
        finally:
            await notifier.stop()
    pairs = sorted((channel, payload) for _, channel, payload in received)
    assert pairs == sorted([(EVENTS_CHANNEL, a) for a in accounts] + [(NEW_JOB_CHANNEL, "")])
    assert all(notifier.sent_by_us(pid) for pid, _, _ in received)
