"""HTTP routes: server-sent event streams of an account or a job, and a job's webhook deliveries."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from backend.deps import CurrentAccount, ImageStorage, Service, base_url
from backend.errors import FieldError, not_found, validation_problem
from backend.events.hub import EventHub, Overflow
from backend.events.models import Event
from backend.events.schemas import DeliveryOut, delivery_out
from backend.events.service import event_json, stream
from backend.jobs.endpoints import PROBLEM_RESPONSES
from backend.jobs.models import FINISHED
from backend.storage import Storage

router = APIRouter(responses=PROBLEM_RESPONSES)

STREAM_RESPONSE: dict[int | str, dict[str, object]] = {
    200: {
        "description": "`text/event-stream`: each message has `id:` (the event id), `event:` (its type) and"
        " `data:` (the event as JSON). A `: keepalive` comment comes every SSE_HEARTBEAT_SECONDS.",
        "content": {"text/event-stream": {}},
    }
}


async def get_hub(request: Request) -> EventHub:
    hub: EventHub = request.app.state.events
    return hub


Hub = Annotated[EventHub, Depends(get_hub)]
LastEventId = Annotated[
    str | None,
    Header(alias="Last-Event-ID", max_length=40, description="Resume after this event id (browsers send it)."),
]
After = Annotated[
    str | None,
    Query(max_length=40, description="Resume after this event id (for clients that cannot set Last-Event-ID)."),
]


def resume_cursor(last_event_id: str | None, after: str | None) -> int:
    """Where a stream resumes: `Last-Event-ID`, else `?after=`, else the beginning."""
    for name, value in (("Last-Event-ID", last_event_id), ("after", after)):
        if value is None or value == "":
            continue
        if not value.isascii() or not value.isdigit():
            raise validation_problem([FieldError(name, "must be an event id (a non-negative integer)", "invalid")])
        return int(value)
    return 0


def event_stream_response(request: Request, messages: AsyncIterator[ServerSentEvent]) -> EventSourceResponse:
    """A server-sent event response with the product's cache header and keepalive."""

    async def guarded() -> AsyncIterator[ServerSentEvent]:
        try:
            async for message in messages:
                yield message
        except Overflow:
            return  # too far behind: the client reconnects with Last-Event-ID and reads the table

    return EventSourceResponse(
        guarded(),
        # no-cache (not sse-starlette's no-store): proxies and browsers must not serve it from a cache.
        headers={"Cache-Control": "no-cache"},
        ping=request.app.state.settings.sse_heartbeat_seconds,
        ping_message_factory=lambda: ServerSentEvent(comment="keepalive"),
    )


def _respond(request: Request, events: AsyncIterator[Event], storage: Storage) -> EventSourceResponse:
    base = base_url(request)

    async def messages() -> AsyncIterator[ServerSentEvent]:
        async for event in events:
            yield ServerSentEvent(event_json(event, storage, base), id=str(event.id), event=event.type)

    return event_stream_response(request, messages())


@router.get("/events", tags=["events"], responses=STREAM_RESPONSE, response_class=EventSourceResponse)
async def account_events(
    request: Request,
    hub: Hub,
    storage: ImageStorage,
    account: CurrentAccount,
    last_event_id: LastEventId = None,
    after: After = None,
) -> EventSourceResponse:
    """Every event of your account, replayed after `Last-Event-ID` and then live; never ends."""
    cursor = resume_cursor(last_event_id, after)
    return _respond(request, stream(hub, account.id, cursor), storage)


@router.get(
    "/generations/{job_id}/events", tags=["events"], responses=STREAM_RESPONSE, response_class=EventSourceResponse
)
async def job_events(
    job_id: str,
    request: Request,
    hub: Hub,
    service: Service,
    storage: ImageStorage,
    account: CurrentAccount,
    last_event_id: LastEventId = None,
    after: After = None,
) -> EventSourceResponse:
    """The job's events, replayed after `Last-Event-ID` and then live; ends after the terminal one."""
    cursor = resume_cursor(last_event_id, after)
    job = await service.get(account, job_id)
    events = stream(hub, account.id, cursor, job_id=job.id, job_finished=job.status in FINISHED)
    return _respond(request, events, storage)


@router.get("/generations/{job_id}/deliveries", response_model=list[DeliveryOut], tags=["webhooks"])
async def list_deliveries(
    job_id: str,
    request: Request,
    response: Response,
    hub: Hub,
    service: Service,
    account: CurrentAccount,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=40, description="From the `Link: rel=next` header of the previous page.")
    ] = None,
) -> list[DeliveryOut]:
    """The job's webhook deliveries, one per event sent to its `webhookUrl`, in event order."""
    after = resume_cursor(None, cursor) if cursor is not None else 0
    job = await service.get(account, job_id)
    found = await hub.repo.list_deliveries(job.id, after, limit + 1)
    if len(found) > limit:
        found = found[:limit]
        next_url = request.url.include_query_params(cursor=str(found[-1][0].event_id), limit=limit)
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return [delivery_out(delivery, event_type) for delivery, event_type in found]


@router.post(
    "/generations/{job_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=DeliveryOut,
    tags=["webhooks"],
)
async def redeliver(job_id: str, delivery_id: str, hub: Hub, service: Service, account: CurrentAccount) -> DeliveryOut:
    """Send a delivery again (same `webhook-id`, a fresh set of attempts), whatever its status."""
    job = await service.get(account, job_id)
    try:
        parsed = uuid.UUID(delivery_id)
    except ValueError:
        raise not_found(f"delivery {delivery_id!r}") from None
    again = await hub.repo.redeliver(job.id, parsed)
    if again is None:
        raise not_found(f"delivery {delivery_id!r}")
    return delivery_out(*again)
