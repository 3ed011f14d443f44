"""Every SQL statement of the chat assistant (SQLAlchemy Core; none of these is a hot path)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backend.chat.models import Chat, Message, Option, chats, generations, messages, options
from backend.chat.schemas import message_view, option_view
from backend.events.repository import append_in
from backend.jobs.models import FINISHED, jobs


@dataclass(frozen=True)
class NewOption:
    id: uuid.UUID
    model_key: str
    tool_type: str
    provider: str
    model: str
    title: str
    label: str
    prompt: str
    params: dict[str, Any]
    input_images: list[uuid.UUID]


@dataclass(frozen=True)
class FinishedGeneration:
    """A chat job that has finished and whose result message is not yet in its chat."""

    job_id: uuid.UUID
    chat_id: uuid.UUID
    account_id: uuid.UUID
    option_title: str
    status: str
    error_code: str | None
    error_message: str | None
    chat_deleted: bool


_CHAT = tuple(chats.c)
_MESSAGE = tuple(messages.c)
_OPTION = tuple(options.c)


def _chat(row: Any) -> Chat:
    return Chat(*row[: len(_CHAT)])


def _message(row: Any) -> Message:
    return Message(*row[: len(_MESSAGE)])


def _option(row: Any) -> Option:
    return Option(*row[: len(_OPTION)])


class ChatRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create_chat(self, account_id: uuid.UUID, title: str | None) -> Chat:
        async with self.engine.begin() as connection:
            row = (
                await connection.execute(insert(chats).values(account_id=account_id, title=title).returning(*_CHAT))
            ).one()
        return _chat(row)

    async def get_chat(self, chat_id: uuid.UUID, account_id: uuid.UUID) -> Chat | None:
        """The account's chat, deleted or not (callers decide what a deleted one means)."""
        async with self.engine.connect() as connection:
            stmt = select(*_CHAT).where(chats.c.id == chat_id, chats.c.account_id == account_id)
            row = (await connection.execute(stmt)).first()
        return _chat(row) if row is not None else None

    async def page_chats(
        self, account_id: uuid.UUID, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[Chat]:
        stmt = (
            select(*_CHAT)
            .where(chats.c.account_id == account_id, chats.c.deleted_at.is_(None))
            .order_by(chats.c.created_at.desc(), chats.c.id.desc())
            .limit(limit)
        )
        if after is not None:
            stmt = stmt.where(tuple_(chats.c.created_at, chats.c.id) < tuple_(*after))
        async with self.engine.connect() as connection:
            return [_chat(row) for row in await connection.execute(stmt)]

    async def delete_chat(self, chat_id: uuid.UUID, account_id: uuid.UUID) -> bool:
        stmt = (
            update(chats)
            .where(chats.c.id == chat_id, chats.c.account_id == account_id, chats.c.deleted_at.is_(None))
            .values(deleted_at=func.now())
            .returning(chats.c.id)
        )
        async with self.engine.begin() as connection:
            return (await connection.execute(stmt)).first() is not None

    async def add_exchange(
        self,
        chat: Chat,
        *,
        text: str,
        attachments: list[uuid.UUID],
        answer_text: str,
        answer_chunks: list[dict[str, Any]],
        new_options: list[NewOption],
        title: str,
    ) -> tuple[Message, Message, list[Option]] | None:
        """The person's message, the assistant's answer and its options, in one transaction.

        None if the chat was deleted meanwhile: the row lock orders this against DELETE.
        """
        async with self.engine.begin() as connection:
            if not await _lock_live_chat(connection, chat.id, "update"):
                return None
            user = await _insert_message(connection, chat, "user", text, attachments, [{"type": "text", "text": text}])
            answer = await _insert_message(connection, chat, "assistant", answer_text, [], answer_chunks)
            made: list[Option] = []
            if new_options:
                rows = await connection.execute(
                    insert(options)
                    .values(
                        [
                            {
                                "id": new.id,
                                "chat_id": chat.id,
                                "message_id": answer.id,
                                "account_id": chat.account_id,
                                "position": position,
                                "model_key": new.model_key,
                                "tool_type": new.tool_type,
                                "provider": new.provider,
                                "model": new.model,
                                "title": new.title,
                                "label": new.label,
                                "prompt": new.prompt,
                                "params": new.params,
                                "input_images": new.input_images,
                            }
                            for position, new in enumerate(new_options)
                        ]
                    )
                    .returning(*_OPTION)
                )
                made = sorted((_option(row) for row in rows), key=lambda option: option.position)
            await _announce(connection, "message.created", user.account_id, user.chat_id, _message_data(user))
            for option in made:
                await _announce(connection, "option.created", option.account_id, option.chat_id, _option_data(option))
            await _announce(connection, "message.created", answer.account_id, answer.chat_id, _message_data(answer))
            await connection.execute(
                update(chats)
                .where(chats.c.id == chat.id)
                .values(
                    message_count=chats.c.message_count + 2,
                    last_message_at=func.now(),
                    title=func.coalesce(chats.c.title, title),
                )
            )
        return user, answer, made

    async def page_messages(self, chat_id: uuid.UUID, limit: int, after_seq: int | None) -> list[Message]:
        stmt = select(*_MESSAGE).where(messages.c.chat_id == chat_id).order_by(messages.c.seq).limit(limit)
        if after_seq is not None:
            stmt = stmt.where(messages.c.seq > after_seq)
        async with self.engine.connect() as connection:
            return [_message(row) for row in await connection.execute(stmt)]

    async def get_option(self, option_id: uuid.UUID, account_id: uuid.UUID) -> tuple[Option, bool] | None:
        """The account's option and whether its chat is deleted."""
        stmt = (
            select(*_OPTION, chats.c.deleted_at.is_not(None).label("deleted"))
            .join(chats, chats.c.id == options.c.chat_id)
            .where(options.c.id == option_id, options.c.account_id == account_id)
        )
        async with self.engine.connect() as connection:
            row = (await connection.execute(stmt)).first()
        return (_option(row), bool(row.deleted)) if row is not None else None

    async def option_ids(self, chat_id: uuid.UUID) -> list[uuid.UUID]:
        async with self.engine.connect() as connection:
            return list((await connection.execute(select(options.c.id).where(options.c.chat_id == chat_id))).scalars())

    async def option_job_ids(self, option_id: uuid.UUID) -> list[uuid.UUID]:
        stmt = (
            select(generations.c.job_id)
            .where(generations.c.option_id == option_id)
            .order_by(generations.c.created_at, generations.c.job_id)
        )
        async with self.engine.connect() as connection:
            return list((await connection.execute(stmt)).scalars())

    async def link_generation(self, option: Option, job_id: uuid.UUID) -> bool:
        """Record that `job_id` was generated from `option`; False if its chat is deleted.

        Sharing the chat's row lock orders this against DELETE: once a delete commits, no
        new job joins the chat, and a job linked before it still gets no result message.
        """
        async with self.engine.begin() as connection:
            if not await _lock_live_chat(connection, option.chat_id, "share"):
                return False
            await connection.execute(
                insert(generations)
                .values(job_id=job_id, option_id=option.id, chat_id=option.chat_id, account_id=option.account_id)
                .on_conflict_do_nothing(index_elements=[generations.c.job_id])
            )
        return True

    async def append_results(
        self, limit: int, render: Callable[[FinishedGeneration], tuple[str, list[dict[str, Any]]]]
    ) -> list[Message]:
        """Append the result message of up to `limit` finished chat jobs; return the messages appended.

        Replicas share the work through SKIP LOCKED; the unique (chat, job) index makes a second
        append of the same result a no-op even if two ever raced, so each lands exactly once.
        The to-do list is the table itself, so nothing is lost to a crash or a restart.
        """
        due = (
            select(
                generations.c.job_id,
                generations.c.chat_id,
                generations.c.account_id,
                options.c.title,
                jobs.c.status,
                jobs.c.error_code,
                jobs.c.error_message,
                chats.c.deleted_at.is_not(None),
            )
            .join(jobs, jobs.c.id == generations.c.job_id)
            .join(options, options.c.id == generations.c.option_id)
            .join(chats, chats.c.id == generations.c.chat_id)
            .where(generations.c.resolved_at.is_(None), jobs.c.status.in_([status.value for status in FINISHED]))
            .order_by(generations.c.created_at)
            .limit(limit)
            .with_for_update(of=generations, skip_locked=True)
        )
        appended: list[Message] = []
        async with self.engine.begin() as connection:
            # Chat rows are updated in one order (by id) so two replicas' batches cannot deadlock.
            found = sorted(
                (FinishedGeneration(*row) for row in await connection.execute(due)),
                key=lambda item: (item.chat_id, item.job_id),
            )
            for item in found:
                if not item.chat_deleted:
                    text, chunks = render(item)
                    message = await _insert_result(connection, item, text, chunks)
                    if message is not None:
                        appended.append(message)
                        await _announce(
                            connection, "message.created", message.account_id, message.chat_id, _message_data(message)
                        )
                        await connection.execute(
                            update(chats)
                            .where(chats.c.id == item.chat_id)
                            .values(message_count=chats.c.message_count + 1, last_message_at=func.now())
                        )
            if found:
                await connection.execute(
                    update(generations)
                    .where(generations.c.job_id.in_([item.job_id for item in found]))
                    .values(resolved_at=func.now())
                )
        return appended


def _message_data(message: Message) -> dict[str, Any]:
    return message_view(message).model_dump(mode="json", by_alias=True)


def _option_data(option: Option) -> dict[str, Any]:
    return option_view(option, []).model_dump(mode="json", by_alias=True)


async def _announce(
    connection: AsyncConnection, type_: str, account_id: uuid.UUID, chat_id: uuid.UUID, data: dict[str, Any]
) -> None:
    """The chat's event, committed in the same transaction as what it announces."""
    await append_in(connection, account_id, type_, data, chat_id=chat_id)


async def _lock_live_chat(connection: AsyncConnection, chat_id: uuid.UUID, mode: str) -> bool:
    stmt = select(chats.c.id).where(chats.c.id == chat_id, chats.c.deleted_at.is_(None))
    stmt = stmt.with_for_update(read=mode == "share")
    return (await connection.execute(stmt)).first() is not None


async def _insert_message(
    connection: AsyncConnection,
    chat: Chat,
    role: str,
    text: str,
    attachments: list[uuid.UUID],
    chunks: list[dict[str, Any]],
) -> Message:
    stmt = (
        insert(messages)
        .values(
            chat_id=chat.id,
            account_id=chat.account_id,
            role=role,
            text=text,
            attachments=attachments,
            render_chunks=chunks,
            created_at=func.clock_timestamp(),
        )
        .returning(*_MESSAGE)
    )
    return _message((await connection.execute(stmt)).one())


async def _insert_result(
    connection: AsyncConnection, item: FinishedGeneration, text: str, chunks: list[dict[str, Any]]
) -> Message | None:
    stmt = (
        insert(messages)
        .values(
            chat_id=item.chat_id,
            account_id=item.account_id,
            role="assistant",
            text=text,
            attachments=[],
            render_chunks=chunks,
            job_id=item.job_id,
            created_at=func.clock_timestamp(),
        )
        .on_conflict_do_nothing(
            index_elements=[messages.c.chat_id, messages.c.job_id], index_where=messages.c.job_id.is_not(None)
        )
        .returning(*_MESSAGE)
    )
    row = (await connection.execute(stmt)).first()
    return _message(row) if row is not None else None
