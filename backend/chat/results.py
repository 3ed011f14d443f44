"""The result appender: puts each finished chat job's outcome into its chat, in every replica.

Why a sweep over a table rather than a reaction to an in-memory signal: the to-do list is
`chat_generations` rows whose job has finished and whose result is not yet in the chat. That state
lives in PostgreSQL, so a replica that crashes or restarts mid-way loses nothing (the rows are still
there), and any replica can finish another's work. `wake()` lets a fresher signal (a job event)
cut the wait short (every event wakes it: the trigger's NOTIFY through the process's one LISTEN
connection); the poll is the floor that needs no signal at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from backend.chat.service import ChatService
from backend.db import database_down

log = logging.getLogger(__name__)

BATCH = 100
# Wakes come with every job event; under load this caps the sweeps at ten a second per process.
MIN_GAP = 0.1


class ResultAppender:
    def __init__(self, chats: ChatService, poll_interval: float) -> None:
        self.chats = chats
        self.poll_interval = poll_interval
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chat-results")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._wake.clear()
            try:
                appended = await self.chats.append_results(BATCH)
            except Exception as exc:
                # A database outage is expected now and then; anything else is a bug worth a traceback.
                if database_down(exc):
                    log.warning("chat results: database unavailable (%s)", exc)
                else:
                    log.exception("chat results: append failed")
                appended = []
            if len(appended) == BATCH:
                continue  # more may be waiting
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
                    # Coalesce a burst of wakes into one sweep.
                    await asyncio.wait_for(self._stop.wait(), max(0.0, started + MIN_GAP - time.monotonic()))
