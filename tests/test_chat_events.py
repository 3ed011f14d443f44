"""A chat's server-sent events: messages, options and its jobs' updates, in order and resumable."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.chat.service import ChatService
from tests.servers import ServeFactory, read_events
from tests.test_api import assert_problem
from tests.test_chat_api import buttons, new_chat, other_account, say

pytestmark = pytest.mark.usefixtures("engine")


async def test_a_conversation_streams_in_order_and_resumes_exactly(serve: ServeFactory) -> None:
    served = await serve(chat_result_poll_interval=0.05)
    async with httpx.AsyncClient(base_url=served.url) as client:
        chat = await new_chat(client)
        other = await new_chat(client)
        opened = asyncio.Event()
        live_task = asyncio.create_task(read_until_result(client, f"/chats/{chat['id']}/events", opened))
        await asyncio.wait_for(opened.wait(), 10)
        await say(client, other["id"], "noise in another chat")
        await client.post("/generations", json={"numImages": 1})  # a job of no chat
        pair = await say(client, chat["id"], "a cute bear")
        option_ids = [b["optionId"] for b in buttons(pair["assistantMessage"])]
        job = (await client.post(f"/options/{option_ids[0]}/generate", headers={"Idempotency-Key": "k"})).json()
        live = await live_task

        # The user's message, two options, the answer; the job's updates; the result message.
        assert [m["event"] for m in live[:4]] == [
            "message.created",
            "option.created",
            "option.created",
            "message.created",
        ]
        assert {m["event"] for m in live[4:-1]} == {"job.updated"} and live[-1]["event"] == "message.created"
        ids = [int(m["id"]) for m in live]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        for message in live:
            event = message["data"]
            assert event["id"] == int(message["id"]) and event["type"] == message["event"]
            assert event["chatId"] == chat["id"]
        assert live[0]["data"]["data"] == pair["userMessage"]
        assert [m["data"]["data"]["id"] for m in live[1:3]] == option_ids
        assert live[3]["data"]["data"] == pair["assistantMessage"]
        updates = [m["data"] for m in live[4:-1]]
        kinds = [u["jobEvent"] for u in updates]
        assert kinds[:2] == ["job.created", "job.started"] and kinds[-1] == "job.completed"
        assert set(kinds[2:-1]) <= {"job.progress"}
        assert {u["jobId"] for u in updates} == {job["jobId"]}
        assert updates[-1]["data"]["status"] == "completed"
        result = live[-1]["data"]["data"]
        media = next(c for c in result["renderChunks"] if c["type"] == "media")
        assert media["jobId"] == job["jobId"] and media["outputs"] == updates[-1]["data"]["outputs"]

        # Replay from the start, and resume after each event: exactly the rest.
        assert await read_events(client, f"/chats/{chat['id']}/events", count=len(live)) == live
        for index, message in enumerate(live[:-1]):
            rest = await read_events(
                client,
                f"/chats/{chat['id']}/events",
                headers={"Last-Event-ID": message["id"]},
                count=len(live) - index - 1,
            )
            assert rest == live[index + 1 :]


async def read_until_result(client: httpx.AsyncClient, path: str, opened: asyncio.Event) -> list[dict[str, Any]]:
    """The stream's messages up to and including the first message with a media chunk."""
    received: list[dict[str, Any]] = []

    async def read() -> None:
        async with aconnect_sse(client, "GET", path, timeout=None) as source:
            source.response.raise_for_status()
            opened.set()
            async for message in source.aiter_sse():
                if not message.data:
                    continue
                received.append({"id": message.id, "event": message.event, "data": message.json()})
                chunks = message.json()["data"].get("renderChunks", [])
                if any(chunk["type"] == "media" for chunk in chunks):
                    return

    await asyncio.wait_for(read(), 20)
    return received


async def test_chat_event_streams_refuse_bad_requests(serve: ServeFactory, engine: AsyncEngine) -> None:
    served = await serve()
    async with httpx.AsyncClient(base_url=served.url) as client:
        chat = await new_chat(client)
        bad = await client.get(f"/chats/{chat['id']}/events", headers={"Last-Event-ID": "nope"})
        assert_problem(bad, 422, "Last-Event-ID")
        assert_problem(await client.get(f"/chats/{uuid.uuid4()}/events"), 404)
        service: ChatService = served.app.state.chat
        theirs = await service.create_chat(await other_account(engine), None)
        assert_problem(await client.get(f"/chats/{theirs.id}/events"), 404)
        await client.delete(f"/chats/{chat['id']}")
        assert_problem(await client.get(f"/chats/{chat['id']}/events"), 404)
