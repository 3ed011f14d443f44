"""The chat assistant's rules: what a message gets as an answer, and how an option becomes a job."""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from backend.accounts import Account
from backend.chat.catalog import Catalog, ToolType
from backend.chat.enhancer import NoEnhancer, OpenAIEnhancer, PromptEnhancer
from backend.chat.models import Chat, Message, Option
from backend.chat.recommender import recommend
from backend.chat.repository import ChatRepository, FinishedGeneration, NewOption
from backend.config import Settings
from backend.errors import FieldError, Problem, not_found, validation_problem
from backend.jobs.models import Job, JobStatus
from backend.jobs.repository import Cursor
from backend.jobs.schemas import PROMPT_MAX_LENGTH, GenerationCreate
from backend.jobs.service import JobService, decode_cursor, encode_cursor

log = logging.getLogger(__name__)

TITLE_LENGTH = 60
CHAT_KEY_PREFIX = "chat:"


@dataclass(frozen=True)
class Exchange:
    user: Message
    assistant: Message
    options: list[Option]


def _parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _title_from(text: str) -> str:
    first_line = " ".join(text.split())
    return first_line if len(first_line) <= TITLE_LENGTH else first_line[: TITLE_LENGTH - 1].rstrip() + "…"


def _prompt_from(text: str) -> str:
    """The job's prompt: the message, cut at a word boundary to the job engine's limit."""
    words = " ".join(text.split())
    if len(words) <= PROMPT_MAX_LENGTH:
        return words
    cut = words[:PROMPT_MAX_LENGTH]
    return cut.rsplit(" ", 1)[0] if " " in cut else cut


def scoped_idempotency_key(option_id: uuid.UUID, client_key: str) -> str:
    """The job engine's key for a generate: one namespace per option, so chats never collide.

    Hashing the client's key keeps the result within the engine's 255 characters whatever it sent.
    """
    return f"{CHAT_KEY_PREFIX}{option_id}:{hashlib.sha256(client_key.encode()).hexdigest()}"


class ChatService:
    def __init__(
        self,
        repo: ChatRepository,
        catalog: Catalog,
        enhancer: PromptEnhancer,
        jobs: JobService,
        settings: Settings,
    ) -> None:
        self.repo = repo
        self.catalog = catalog
        self.enhancer = enhancer
        self.jobs = jobs
        self.settings = settings

    async def create_chat(self, account: Account, title: str | None) -> Chat:
        return await self.repo.create_chat(account.id, title)

    async def get_chat(self, account: Account, chat_id: str) -> Chat:
        parsed = _parse_uuid(chat_id)
        chat = await self.repo.get_chat(parsed, account.id) if parsed else None
        if chat is None or chat.deleted_at is not None:
            raise not_found(f"chat {chat_id!r}")
        return chat

    async def list_chats(self, account: Account, limit: int, cursor: str | None) -> tuple[list[Chat], str | None]:
        after = decode_cursor(cursor) if cursor else None
        found = await self.repo.page_chats(account.id, limit + 1, (after.created_at, after.id) if after else None)
        if len(found) <= limit:
            return found, None
        found = found[:limit]
        return found, encode_cursor(Cursor(found[-1].created_at, found[-1].id))

    async def delete_chat(self, account: Account, chat_id: str) -> None:
        parsed = _parse_uuid(chat_id)
        if parsed is None or not await self.repo.delete_chat(parsed, account.id):
            raise not_found(f"chat {chat_id!r}")

    async def post_message(self, account: Account, chat_id: str, text: str, attachments: list[str]) -> Exchange:
        chat = await self.get_chat(account, chat_id)
        if not text.strip():
            raise validation_problem([FieldError("text", "must contain more than white space", "blank")])
        inputs = await self._check_attachments(account, attachments)
        recommendation = recommend(text, bool(inputs), self.catalog)
        enhanced = await self.enhancer.enhance(text) if recommendation.options else None
        prompt = _prompt_from(enhanced or text)

        chunks: list[dict[str, Any]] = [{"type": "text", "text": recommendation.intro}]
        if enhanced:
            chunks.append({"type": "text", "text": f"I described it to the models as: {prompt}"})
        new_options: list[NewOption] = []
        for draft in recommendation.options:
            option_id = uuid.uuid4()
            params = dict(draft.params)
            if "numImages" in params:
                params["numImages"] = max(1, min(int(params["numImages"]), self.settings.max_images_per_job))
            new_options.append(
                NewOption(
                    id=option_id,
                    model_key=draft.model.key,
                    tool_type=draft.model.tool_type.value,
                    provider=draft.model.provider,
                    model=draft.model.model,
                    title=draft.model.title,
                    label=draft.label,
                    prompt=prompt,
                    params=params,
                    input_images=inputs if draft.model.tool_type.needs_input else [],
                )
            )
            chunks.append({"type": "text", "text": draft.explanation})
            chunks.append({"type": "button", "label": draft.label, "optionId": str(option_id)})
        answer_text = " ".join(chunk["text"] for chunk in chunks if chunk["type"] == "text")
        made = await self.repo.add_exchange(
            chat,
            text=text,
            attachments=inputs,
            answer_text=answer_text,
            answer_chunks=chunks,
            new_options=new_options,
            title=_title_from(text),
        )
        if made is None:
            raise not_found(f"chat {chat_id!r}")
        user, assistant, options = made
        return Exchange(user, assistant, options)

    async def _check_attachments(self, account: Account, attachments: list[str]) -> list[uuid.UUID]:
        """The account's uploaded pictures, checked (and kept from the unused-upload sweep) as a
        job's inputs are; a 422 names each bad one as `attachments.N`."""
        if not attachments:
            return []
        try:
            return await self.jobs.uploads.claim_inputs(account, attachments)
        except Problem as problem:
            for error in problem.errors:
                renamed = FieldError(error.field.replace("inputImages", "attachments", 1), error.message, error.code)
                problem.errors[problem.errors.index(error)] = renamed
            problem.detail = problem.detail.replace("inputImages", "attachments")
            raise

    async def list_messages(
        self, account: Account, chat_id: str, limit: int, cursor: str | None
    ) -> tuple[list[Message], str | None]:
        chat = await self.get_chat(account, chat_id)
        after = _decode_seq(cursor) if cursor else None
        found = await self.repo.page_messages(chat.id, limit + 1, after)
        if len(found) <= limit:
            return found, None
        found = found[:limit]
        return found, str(found[-1].seq)

    async def get_option(self, account: Account, option_id: str) -> tuple[Option, list[uuid.UUID]]:
        option = await self._live_option(account, option_id)
        return option, await self.repo.option_job_ids(option.id)

    async def _live_option(self, account: Account, option_id: str) -> Option:
        parsed = _parse_uuid(option_id)
        found = await self.repo.get_option(parsed, account.id) if parsed else None
        if found is None:
            raise not_found(f"option {option_id!r}")
        option, chat_deleted = found
        if chat_deleted:
            raise _chat_deleted(option_id)
        return option

    def job_request(self, option: Option) -> GenerationCreate:
        """The ordinary job an option stands for."""
        video = ToolType(option.tool_type).video
        params = option.params
        return GenerationCreate(
            kind="video" if video else "image",
            num_images=None if video else int(params.get("numImages", 1)),
            duration_seconds=params.get("durationSeconds") if video else None,
            aspect_ratio=params.get("aspectRatio", "1:1"),
            prompt=option.prompt,
            provider=option.provider,
            model=option.model,
            input_images=[str(upload) for upload in option.input_images] or None,
        )

    async def generate(self, account: Account, option_id: str, idempotency_key: str) -> tuple[Job, bool]:
        """Run an option as a job; the same key gives the same job (replayed=True)."""
        option = await self._live_option(account, option_id)
        job, replayed = await self.jobs.create(
            account, self.job_request(option), scoped_idempotency_key(option.id, idempotency_key)
        )
        if not await self.repo.link_generation(option, job.id):
            # The chat was deleted between the check and the link: the job has no chat to land in.
            if job.status in (JobStatus.PENDING, JobStatus.PROCESSING):
                await self.jobs.repo.cancel(job.id, account.id)
            raise _chat_deleted(option_id)
        return job, replayed

    async def append_results(self, limit: int = 100) -> list[Message]:
        """Put each finished chat job's result into its chat (see ChatRepository.append_results)."""
        appended = await self.repo.append_results(limit, render_result)
        for message in appended:
            log.info("result of job %s added to chat %s", message.job_id, message.chat_id)
        return appended


def render_result(item: FinishedGeneration) -> tuple[str, list[dict[str, Any]]]:
    """The assistant's words for a finished job. Output URLs are not stored: they are signed and
    expire, so each read builds them afresh from the job."""
    if item.status == JobStatus.COMPLETED:
        text = f"Here is the result of {item.option_title}."
        return text, [{"type": "text", "text": text}, {"type": "media", "jobId": str(item.job_id)}]
    if item.status == JobStatus.CANCELED:
        text = f"The {item.option_title} generation was canceled, so there is nothing to show."
    else:
        reason = item.error_message or "the provider gave no reason"
        code = f" ({item.error_code})" if item.error_code else ""
        text = (
            f"Sorry, {item.option_title} could not make this: {reason}{code}. "
            "You can press the option again, or pick another one."
        )
    return text, [{"type": "text", "text": text}]


def _chat_deleted(option_id: str) -> Problem:
    return Problem(
        410,
        "chat_deleted",
        "Chat deleted",
        f"option {option_id!r} belongs to a deleted chat; its options can no longer be generated",
    )


def _decode_seq(cursor: str) -> int:
    if not cursor.isdigit() or len(cursor) > 18:
        raise validation_problem([FieldError("cursor", "not a cursor from a Link header of this API", "invalid")])
    return int(cursor)


def build_enhancer(settings: Settings) -> PromptEnhancer:
    if settings.prompt_enhancer == "none":
        return NoEnhancer()
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    return OpenAIEnhancer(
        base_url=settings.prompt_enhancer_base_url or settings.openai_base_url,
        api_key=key,
        model=settings.prompt_enhancer_model,
        timeout=settings.prompt_enhancer_timeout,
    )
