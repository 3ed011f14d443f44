"""HTTP routes of the chat assistant: parse, call the chat service, answer."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from backend.accounts import Account
from backend.chat.models import Chat, Message
from backend.chat.schemas import (
    ChatCreate,
    ChatOut,
    MediaChunk,
    MessageCreate,
    MessageOut,
    MessagePair,
    ModelOut,
    OptionOut,
    message_view,
    option_view,
)
from backend.chat.service import CHAT_KEY_PREFIX, ChatService
from backend.deps import CurrentAccount, ImageStorage, JobRateLimited, RateLimited, Service, base_url
from backend.errors import PROBLEM_JSON, FieldError, Problem, validation_problem
from backend.events.endpoints import STREAM_RESPONSE, After, Hub, LastEventId, event_stream_response, resume_cursor
from backend.events.models import Event
from backend.events.service import event_json, job_from_snapshot, stream
from backend.jobs.endpoints import job_out, json_response
from backend.jobs.schemas import JobOut, OutputOut
from backend.jobs.service import JobService
from backend.storage import Storage


async def get_chat_service(request: Request) -> ChatService:
    service: ChatService = request.app.state.chat
    return service


Chats = Annotated[ChatService, Depends(get_chat_service)]


def _problems(*pairs: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    return {code: {"description": text, "content": {PROBLEM_JSON: {}}} for code, text in pairs}


COMMON = _problems((413, "Body larger than 64 KiB"), (415, "Body is not JSON"), (503, "Database unavailable"))
router = APIRouter(tags=["chat"], responses=COMMON)
Limit = Annotated[int, Query(ge=1, le=200, description="Page size.")]
PageCursor = Annotated[
    str | None, Query(max_length=200, description="From the `Link: rel=next` header of the previous page.")
]


def chat_out(chat: Chat) -> ChatOut:
    return ChatOut(
        id=chat.id,
        title=chat.title,
        message_count=chat.message_count,
        last_message_at=chat.last_message_at,
        created_at=chat.created_at,
    )


def _link_next(request: Request, response: Response, cursor: str | None, limit: int) -> None:
    if cursor is not None:
        response.headers["Link"] = f'<{request.url.include_query_params(cursor=cursor, limit=limit)}>; rel="next"'


async def _outputs(
    job_id: uuid.UUID, account: Account, jobs: JobService, storage: Storage, base: str
) -> list[OutputOut]:
    """A result's outputs as the job shows them now (fresh signed URLs); none once the job is deleted."""
    try:
        job = await jobs.get(account, str(job_id))
    except Problem:
        return []
    return job_out(job, storage, base).outputs or []


async def message_out(
    message: Message | MessageOut, account: Account, jobs: JobService, storage: Storage, base: str
) -> MessageOut:
    """The message with each media chunk's outputs as its job shows them now."""
    view = message if isinstance(message, MessageOut) else message_view(message)
    for chunk in view.render_chunks:
        if isinstance(chunk, MediaChunk):
            chunk.outputs = await _outputs(chunk.job_id, account, jobs, storage, base)
    return view


@router.get("/models", response_model=list[ModelOut])
async def list_models(chats: Chats) -> list[ModelOut]:
    """The models the assistant may recommend: those of enabled providers, from the catalog."""
    return [ModelOut.of(model) for model in chats.catalog.models]


@router.post("/chats", status_code=201, response_model=ChatOut, responses=_problems((422, "Invalid request")))
async def create_chat(
    chats: Chats, account: CurrentAccount, response: Response, body: ChatCreate | None = None
) -> ChatOut:
    """Start a conversation. Without a title, the first message names it."""
    chat = await chats.create_chat(account, body.title if body else None)
    response.headers["Location"] = f"/chats/{chat.id}"
    return chat_out(chat)


@router.get("/chats", response_model=list[ChatOut], responses=_problems((422, "Invalid cursor")))
async def list_chats(
    request: Request,
    response: Response,
    chats: Chats,
    account: CurrentAccount,
    limit: Limit = 50,
    cursor: PageCursor = None,
) -> list[ChatOut]:
    """The account's chats, newest first. The next page's URL is in the `Link` header."""
    found, next_cursor = await chats.list_chats(account, limit, cursor)
    _link_next(request, response, next_cursor, limit)
    return [chat_out(chat) for chat in found]


@router.get("/chats/{chat_id}", response_model=ChatOut, responses=_problems((404, "No such chat")))
async def get_chat(chat_id: str, chats: Chats, account: CurrentAccount) -> ChatOut:
    return chat_out(await chats.get_chat(account, chat_id))


@router.delete("/chats/{chat_id}", status_code=204, responses=_problems((404, "No such chat")))
async def delete_chat(chat_id: str, chats: Chats, account: CurrentAccount) -> Response:
    """Delete a chat: it disappears, and its options can no longer be generated (410)."""
    await chats.delete_chat(account, chat_id)
    return Response(status_code=204)


@router.post(
    "/chats/{chat_id}/messages",
    status_code=201,
    response_model=MessagePair,
    responses=_problems((404, "No such chat"), (422, "Invalid text or attachments"), (429, "Rate limited")),
    dependencies=[RateLimited],
)
async def post_message(
    chat_id: str,
    body: MessageCreate,
    request: Request,
    chats: Chats,
    service: Service,
    storage: ImageStorage,
    account: CurrentAccount,
) -> MessagePair:
    """Say what you want; the assistant answers with two to four options (buttons) to generate."""
    exchange = await chats.post_message(account, chat_id, body.text, body.attachments)
    base = base_url(request)
    return MessagePair(
        user_message=await message_out(exchange.user, account, service, storage, base),
        assistant_message=await message_out(exchange.assistant, account, service, storage, base),
    )


@router.get(
    "/chats/{chat_id}/messages",
    response_model=list[MessageOut],
    responses=_problems((404, "No such chat"), (422, "Invalid cursor")),
)
async def list_messages(
    chat_id: str,
    request: Request,
    response: Response,
    chats: Chats,
    service: Service,
    storage: ImageStorage,
    account: CurrentAccount,
    limit: Limit = 50,
    cursor: PageCursor = None,
) -> list[MessageOut]:
    """The conversation, oldest first. The next page's URL is in the `Link` header."""
    found, next_cursor = await chats.list_messages(account, chat_id, limit, cursor)
    _link_next(request, response, next_cursor, limit)
    base = base_url(request)
    return [await message_out(message, account, service, storage, base) for message in found]


@router.get(
    "/options/{option_id}",
    response_model=OptionOut,
    responses=_problems((404, "No such option"), (410, "The option's chat was deleted")),
)
async def get_option(option_id: str, chats: Chats, account: CurrentAccount) -> OptionOut:
    option, job_ids = await chats.get_option(account, option_id)
    return option_view(option, job_ids)


@router.post(
    "/options/{option_id}/generate",
    status_code=202,
    response_model=JobOut,
    responses=_problems(
        (400, "Idempotency-Key header missing"),
        (404, "No such option"),
        (410, "The option's chat was deleted"),
        (422, "Invalid Idempotency-Key, or the option's provider is no longer enabled"),
        (429, "Rate limited or too many pending jobs"),
    ),
    dependencies=[JobRateLimited],
)
async def generate_option(
    option_id: str,
    request: Request,
    chats: Chats,
    storage: ImageStorage,
    account: CurrentAccount,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="Required: the same key returns the same job, however often it is sent.",
        ),
    ] = None,
) -> Response:
    """Run the option as an ordinary job (202). Its result is added to the chat when it finishes."""
    if idempotency_key is None:
        raise Problem(
            400,
            "idempotency_key_required",
            "Idempotency-Key required",
            "send an Idempotency-Key header (1 to 255 characters) so a retried press cannot start a second job",
        )
    if not idempotency_key:
        raise validation_problem([FieldError("Idempotency-Key", "must be 1 to 255 characters", "string_too_short")])
    job, replayed = await chats.generate(account, option_id, idempotency_key)
    headers = {"Location": f"/generations/{job.id}", "Retry-After": str(chats.jobs.retry_after(job))}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(job_out(job, storage, base_url(request)), 202, headers)


def _option_of(job_key: str | None) -> uuid.UUID | None:
    """The option a chat job was generated from, read from its scoped idempotency key."""
    if not job_key or not job_key.startswith(CHAT_KEY_PREFIX):
        return None
    try:
        return uuid.UUID(job_key.split(":")[1])
    except (ValueError, IndexError):
        return None


def _job_of_options(event: Event, option_ids: set[uuid.UUID]) -> bool:
    if event.job_id is None or not event.type.startswith("job."):
        return False
    return _option_of(job_from_snapshot(event.data).idempotency_key) in option_ids


@router.get(
    "/chats/{chat_id}/events",
    response_class=EventSourceResponse,
    responses={**STREAM_RESPONSE, **_problems((404, "No such chat"), (422, "Invalid Last-Event-ID"))},
)
async def chat_events(
    chat_id: str,
    request: Request,
    hub: Hub,
    chats: Chats,
    service: Service,
    storage: ImageStorage,
    account: CurrentAccount,
    last_event_id: LastEventId = None,
    after: After = None,
) -> EventSourceResponse:
    """The chat's events, replayed after `Last-Event-ID` and then live: `message.created`,
    `option.created`, and `job.updated` for each change of a job generated from its options."""
    cursor = resume_cursor(last_event_id, after)
    chat = await chats.get_chat(account, chat_id)
    # Options always exist (and are announced) before any job made from them, so this set,
    # grown by each option.created, knows every job's chat by the time its events arrive.
    option_ids = set(await chats.repo.option_ids(chat.id))
    base = base_url(request)

    async def messages() -> AsyncIterator[ServerSentEvent]:
        async for event in stream(hub, account.id, cursor):
            body: dict[str, Any] | None = None
            if event.chat_id == chat.id:
                body = json.loads(event_json(event, storage, base))
                if event.type == "option.created":
                    option_ids.add(uuid.UUID(body["data"]["id"]))
                elif event.type == "message.created":
                    shown = MessageOut.model_validate(body["data"])
                    shown = await message_out(shown, account, service, storage, base)
                    body["data"] = shown.model_dump(mode="json", by_alias=True)
            elif _job_of_options(event, option_ids):
                body = json.loads(event_json(event, storage, base))
                body["type"], body["jobEvent"], body["chatId"] = "job.updated", event.type, str(chat.id)
            if body is not None:
                yield ServerSentEvent(json.dumps(body, separators=(",", ":")), id=str(event.id), event=body["type"])

    return event_stream_response(request, messages())
