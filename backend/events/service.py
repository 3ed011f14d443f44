"""Rendering events for clients, and the stream a client reads: replay, then live."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, DateTime
from sqlalchemy.dialects.postgresql import UUID

from backend.events.hub import EventHub
from backend.events.models import Event
from backend.events.repository import Page
from backend.jobs.endpoints import job_out
from backend.jobs.models import Job, jobs
from backend.storage import Storage

REPLAY_PAGE = 500


def _column_reader(column: Any) -> Callable[[Any], Any]:
    if isinstance(column.type, UUID):
        return lambda value: uuid.UUID(value) if value is not None else None
    if isinstance(column.type, DateTime):
        return lambda value: datetime.fromisoformat(value) if value is not None else None
    if isinstance(column.type, ARRAY):
        return lambda value: list(value) if value is not None else None
    return lambda value: value


# Built from the table's declaration, so a column someone adds is carried without a change here.
_READERS = [(column.name, _column_reader(column)) for column in jobs.c]


def job_from_snapshot(data: dict[str, Any]) -> Job:
    """The job as it was when the event was written (the trigger stores the row as JSON)."""
    return Job(*[read(data.get(name)) for name, read in _READERS])


def event_json(event: Event, storage: Storage, base: str) -> str:
    """The event as clients see it; a job's data is rendered as GET /generations/{id} renders it."""
    cached = event.rendered.get(base)
    if cached is not None:
        return cached
    data = event.data
    if event.job_id is not None and event.type.startswith("job."):
        job = job_from_snapshot(data)
        rendered: dict[str, Any] = job_out(job, storage, base).model_dump(mode="json", by_alias=True)
        rendered["completedOutputs"] = len(job.outputs or [])
        rendered["totalOutputs"] = 1 if job.kind == "video" else job.num_images
        data = rendered
    body: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "jobId": str(event.job_id) if event.job_id is not None else None,
        "createdAt": event.created_at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    if event.chat_id is not None:
        body["chatId"] = str(event.chat_id)
    text = json.dumps(body, separators=(",", ":"))
    event.rendered[base] = text
    return text


async def stream(
    hub: EventHub,
    account_id: uuid.UUID,
    after: int,
    *,
    job_id: uuid.UUID | None = None,
    chat_id: uuid.UUID | None = None,
    job_finished: bool = False,
) -> AsyncIterator[Event]:
    """Every event of the account (or of one job or chat in it) after `after`, then live ones.

    A job's stream ends after its terminal event. Nothing is yielded twice or skipped: the
    subscription starts before the replay, and the cursor drops what both see.
    """
    repo = hub.repo

    async def page(cursor: int) -> Page:
        if job_id is not None:
            return await repo.job_page(job_id, cursor, REPLAY_PAGE)
        if chat_id is not None:
            return await repo.chat_page(chat_id, cursor, REPLAY_PAGE)
        return await repo.account_page(account_id, cursor, REPLAY_PAGE)

    def wanted(event: Event) -> bool:
        if job_id is not None:
            return event.job_id == job_id
        return chat_id is None or event.chat_id == chat_id

    cursor = after
    async with hub.subscribe(account_id) as subscription:
        while True:
            replayed = await page(cursor)
            for event in replayed.events:
                cursor = event.id
                yield event
                if job_id is not None and event.terminal:
                    return
            if not replayed.full or replayed.blocked:
                break
        if job_id is not None and job_finished:
            # Its terminal event was sent before this resume, or the job finished before
            # events existed: nothing more will come.
            terminal = await repo.terminal_id(job_id)
            if terminal is None or terminal <= cursor:
                return
        while True:
            for event in await subscription.next():
                if event.id <= cursor or not wanted(event):
                    continue
                cursor = event.id
                yield event
                if job_id is not None and event.terminal:
                    return
