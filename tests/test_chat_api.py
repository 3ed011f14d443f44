"""The chat assistant's HTTP contract: models, chats, messages, options, generate, results."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.accounts import Account
from backend.app import create_app
from backend.chat.service import ChatService
from backend.config import SettingsError
from backend.providers import PermanentProviderError
from backend.providers.animals import AnimalsProvider
from tests.conftest import APPS, AppFactory, wait_for_status
from tests.fake_chat_completions import serve_fake_chat_completions
from tests.fakes import ScriptedProvider
from tests.test_api import assert_problem
from tests.test_uploads import picture, upload

pytestmark = pytest.mark.usefixtures("engine")

MODEL_FIELDS = {"key", "toolType", "provider", "model", "title", "description", "costTier", "latencyTier"}
CHAT_FIELDS = {"id", "title", "messageCount", "lastMessageAt", "createdAt"}
MESSAGE_FIELDS = {"id", "chatId", "role", "text", "attachments", "renderChunks", "createdAt"}


async def new_chat(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/chats", json=body)
    assert response.status_code == 201, response.text
    chat: dict[str, Any] = response.json()
    return chat


async def say(client: httpx.AsyncClient, chat_id: str, message: str, **extra: Any) -> dict[str, Any]:
    response = await client.post(f"/chats/{chat_id}/messages", json={"text": message, **extra})
    assert response.status_code == 201, response.text
    pair: dict[str, Any] = response.json()
    return pair


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [chunk for chunk in message["renderChunks"] if chunk["type"] == "button"]


async def messages_of(client: httpx.AsyncClient, chat_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/chats/{chat_id}/messages?limit=200")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


async def wait_for_result(client: httpx.AsyncClient, chat_id: str, job_id: str, timeout: float = 15) -> dict[str, Any]:
    """Poll the chat until the assistant's message showing `job_id` is in it."""
    deadline = time.monotonic() + timeout
    while True:
        for message in await messages_of(client, chat_id):
            if any(chunk.get("jobId") == job_id for chunk in message["renderChunks"]):
                return message
        assert time.monotonic() < deadline, f"no result message for job {job_id} after {timeout}s"
        await asyncio.sleep(0.05)


async def other_account(engine: AsyncEngine) -> Account:
    async with engine.begin() as connection:
        account_id = (
            await connection.execute(text("INSERT INTO accounts (name) VALUES ('other') RETURNING id"))
        ).scalar_one()
    return Account(account_id, "other")


def chat_service(client: httpx.AsyncClient) -> ChatService:
    service: ChatService = APPS[client].state.chat
    return service


# --- GET /models ---------------------------------------------------------------------------


async def test_models_lists_enabled_providers_only(client: httpx.AsyncClient) -> None:
    response = await client.get("/models")
    assert response.status_code == 200
    models = response.json()
    assert models and all(set(model) == MODEL_FIELDS for model in models)
    assert {model["provider"] for model in models} == {"animals"}  # openai, sora, … are not enabled
    assert {model["toolType"] for model in models} >= {"text_to_image"}
    assert len({model["key"] for model in models}) == len(models)


async def test_a_catalog_file_adds_and_replaces_models_without_code(make_client: AppFactory, tmp_path: Path) -> None:
    extra = tmp_path / "catalog.json"
    extra.write_text(
        json.dumps(
            [
                {
                    "key": "noop-instant",
                    "toolType": "text_to_image",
                    "provider": "noop",
                    "model": "noop",
                    "title": "Instant nothing",
                    "description": "Finishes at once.",
                    "costTier": "free",
                    "latencyTier": "fast",
                },
                {
                    "key": "animals-quick",
                    "toolType": "text_to_image",
                    "provider": "animals",
                    "model": "animals",
                    "title": "Renamed sketch",
                    "description": "Replaced by the deployment.",
                    "costTier": "free",
                    "latencyTier": "fast",
                },
                {
                    "key": "not-enabled",
                    "toolType": "text_to_image",
                    "provider": "replicate",
                    "model": "x/y",
                    "title": "Off",
                    "description": "Its provider is not enabled.",
                    "costTier": "low",
                    "latencyTier": "fast",
                },
            ]
        )
    )
    client = await make_client(model_catalog_file=extra)
    models = {model["key"]: model for model in (await client.get("/models")).json()}
    assert models["noop-instant"]["provider"] == "noop"
    assert models["animals-quick"]["title"] == "Renamed sketch"
    assert "not-enabled" not in models


@pytest.mark.parametrize(
    ("content", "named"),
    [("not json", "not JSON"), ('[{"key": "x"}]', "toolType"), ('[{"key": "bad key!"}]', "key")],
)
def test_a_bad_catalog_file_stops_start_up_naming_the_setting(
    make_settings: Any, tmp_path: Path, content: str, named: str
) -> None:
    bad = tmp_path / "catalog.json"
    bad.write_text(content)
    with pytest.raises(SettingsError, match="MODEL_CATALOG_FILE") as raised:
        create_app(make_settings(model_catalog_file=bad))
    assert named in str(raised.value)
    with pytest.raises(SettingsError, match="MODEL_CATALOG_FILE"):
        create_app(make_settings(model_catalog_file=tmp_path / "missing.json"))


# --- chats ---------------------------------------------------------------------------------


async def test_create_get_and_delete_a_chat(client: httpx.AsyncClient) -> None:
    response = await client.post("/chats", json={"title": "Holiday card"})
    assert response.status_code == 201
    chat = response.json()
    assert set(chat) == CHAT_FIELDS
    assert response.headers["location"] == f"/chats/{chat['id']}"
    assert chat["title"] == "Holiday card" and chat["messageCount"] == 0 and chat["lastMessageAt"] is None

    assert (await client.get(f"/chats/{chat['id']}")).json() == chat
    deleted = await client.delete(f"/chats/{chat['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert_problem(await client.get(f"/chats/{chat['id']}"), 404)
    assert_problem(await client.delete(f"/chats/{chat['id']}"), 404)
    assert chat["id"] not in [c["id"] for c in (await client.get("/chats")).json()]


async def test_a_chat_without_title_is_named_by_its_first_message(client: httpx.AsyncClient) -> None:
    empty_body = await client.post("/chats")
    assert empty_body.status_code == 201 and empty_body.json()["title"] is None
    chat = await new_chat(client)
    await say(client, chat["id"], "a   lighthouse in a storm\nwith big waves")
    await say(client, chat["id"], "something else entirely")
    shown = (await client.get(f"/chats/{chat['id']}")).json()
    assert shown["title"] == "a lighthouse in a storm with big waves"
    assert shown["messageCount"] == 4 and shown["lastMessageAt"] is not None


async def test_chats_are_newest_first_with_keyset_pages(client: httpx.AsyncClient) -> None:
    ids = [(await new_chat(client, title=f"chat {n}"))["id"] for n in range(5)]
    seen: list[str] = []
    url: str | None = "/chats?limit=2"
    while url:
        response = await client.get(url)
        assert response.status_code == 200
        assert len(response.json()) <= 2
        seen += [chat["id"] for chat in response.json()]
        link = response.headers.get("link")
        url = link[link.index("<") + 1 : link.index(">")] if link else None
    assert seen == list(reversed(ids))
    assert_problem(await client.get("/chats?cursor=garbage"), 422, "cursor")
    assert_problem(await client.get("/chats?limit=0"), 422, "limit")


@pytest.mark.parametrize(
    "body",
    [{"title": ""}, {"title": "x" * 201}, {"title": 5}, {"nope": 1}, [1, 2]],
)
async def test_bad_chat_bodies_are_422(client: httpx.AsyncClient, body: Any) -> None:
    assert_problem(await client.post("/chats", json=body), 422)


async def test_another_accounts_chat_and_option_are_404(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    other = await other_account(engine)
    service = chat_service(client)
    theirs = await service.create_chat(other, "secret")
    exchange = await service.post_message(other, str(theirs.id), "a cat", [])
    option_id = exchange.options[0].id

    for response in (
        await client.get(f"/chats/{theirs.id}"),
        await client.get(f"/chats/{theirs.id}/messages"),
        await client.post(f"/chats/{theirs.id}/messages", json={"text": "hi"}),
        await client.delete(f"/chats/{theirs.id}"),
        await client.get(f"/options/{option_id}"),
        await client.post(f"/options/{option_id}/generate", headers={"Idempotency-Key": "k"}),
    ):
        assert_problem(response, 404)
    assert str(theirs.id) not in [chat["id"] for chat in (await client.get("/chats")).json()]
    assert (await service.get_chat(other, str(theirs.id))).deleted_at is None


# --- messages ------------------------------------------------------------------------------


async def test_a_message_gets_an_answer_with_two_to_four_option_buttons(client: httpx.AsyncClient) -> None:
    chat = await new_chat(client)
    pair = await say(client, chat["id"], "a cute bear having a picnic")

    user, answer = pair["userMessage"], pair["assistantMessage"]
    assert set(user) == MESSAGE_FIELDS and set(answer) == MESSAGE_FIELDS
    assert user["role"] == "user" and user["text"] == "a cute bear having a picnic" and user["chatId"] == chat["id"]
    assert user["renderChunks"] == [{"type": "text", "text": "a cute bear having a picnic"}]
    assert answer["role"] == "assistant" and answer["createdAt"] >= user["createdAt"]
    chunks = answer["renderChunks"]
    assert {chunk["type"] for chunk in chunks} == {"text", "button"}
    assert all(set(chunk) == {"type", "label", "optionId"} for chunk in buttons(answer))
    assert all(set(chunk) == {"type", "text"} and chunk["text"] for chunk in chunks if chunk["type"] == "text")
    assert 2 <= len(buttons(answer)) <= 4
    # Each button follows the text chunk that explains it.
    for index, chunk in enumerate(chunks):
        if chunk["type"] == "button":
            assert chunks[index - 1]["type"] == "text"

    for button in buttons(answer):
        option = (await client.get(f"/options/{button['optionId']}")).json()
        assert option["chatId"] == chat["id"] and option["messageId"] == answer["id"]
        assert option["toolType"] == "text_to_image" and option["provider"] == "animals"
        assert option["prompt"] == "a cute bear having a picnic" and option["jobIds"] == []
        assert option["label"] == button["label"]


async def test_hints_in_the_text_reach_the_options_params(client: httpx.AsyncClient) -> None:
    chat = await new_chat(client)
    answer = (await say(client, chat["id"], "a widescreen picture of a castle, 3 pictures"))["assistantMessage"]
    params = [(await client.get(f"/options/{b['optionId']}")).json()["params"] for b in buttons(answer)]
    assert all(p["aspectRatio"] == "16:9" and p["numImages"] == 3 for p in params)


async def test_messages_are_oldest_first_with_keyset_pages(client: httpx.AsyncClient) -> None:
    chat = await new_chat(client)
    expected: list[str] = []
    for n in range(3):
        pair = await say(client, chat["id"], f"picture number {n}")
        expected += [pair["userMessage"]["id"], pair["assistantMessage"]["id"]]
    seen: list[str] = []
    url: str | None = f"/chats/{chat['id']}/messages?limit=4"
    while url:
        response = await client.get(url)
        assert response.status_code == 200
        seen += [message["id"] for message in response.json()]
        link = response.headers.get("link")
        url = link[link.index("<") + 1 : link.index(">")] if link else None
    assert seen == expected
    assert_problem(await client.get(f"/chats/{chat['id']}/messages?cursor=x1"), 422, "cursor")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": ""}, "text"),
        ({"text": "   \n "}, "text"),
        ({"text": "x" * 4001}, "text"),
        ({}, "text"),
        ({"text": 7}, "text"),
        ({"text": "a cat", "attachments": "abc"}, "attachments"),
        ({"text": "a cat", "attachments": [str(uuid.uuid4())]}, "attachments.0"),
        ({"text": "a cat", "attachments": ["not-an-upload"]}, "attachments.0"),
        ({"text": "a cat", "attachments": [""]}, "attachments.0"),
        ({"text": "a cat", "attachments": [str(uuid.uuid4()) for _ in range(5)]}, "attachments"),
        ({"text": "a cat", "extra": 1}, "extra"),
    ],
)
async def test_bad_messages_are_422_naming_the_field(client: httpx.AsyncClient, body: Any, field: str) -> None:
    chat = await new_chat(client)
    assert_problem(await client.post(f"/chats/{chat['id']}/messages", json=body), 422, field)
    assert await messages_of(client, chat["id"]) == []


async def test_longest_message_is_accepted_and_the_prompt_fits_a_job(client: httpx.AsyncClient) -> None:
    chat = await new_chat(client)
    text_4000 = ("word " * 800)[:4000]
    answer = (await say(client, chat["id"], text_4000))["assistantMessage"]
    option = (await client.get(f"/options/{buttons(answer)[0]['optionId']}")).json()
    assert 0 < len(option["prompt"]) <= 1000


async def test_messages_to_unknown_or_deleted_chats_are_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post(f"/chats/{uuid.uuid4()}/messages", json={"text": "a cat"}), 404)
    assert_problem(await client.post("/chats/not-a-uuid/messages", json={"text": "a cat"}), 404)
    assert_problem(await client.get(f"/chats/{uuid.uuid4()}/messages"), 404)
    chat = await new_chat(client)
    await client.delete(f"/chats/{chat['id']}")
    assert_problem(await client.post(f"/chats/{chat['id']}/messages", json={"text": "a cat"}), 404)


# --- options and generate ------------------------------------------------------------------


async def test_unknown_options_are_404(client: httpx.AsyncClient) -> None:
    for option_id in (str(uuid.uuid4()), "nope"):
        assert_problem(await client.get(f"/options/{option_id}"), 404)
        assert_problem(await client.post(f"/options/{option_id}/generate", headers={"Idempotency-Key": "k"}), 404)


async def test_generate_needs_an_idempotency_key(client: httpx.AsyncClient) -> None:
    chat = await new_chat(client)
    option_id = buttons((await say(client, chat["id"], "a cat"))["assistantMessage"])[0]["optionId"]
    body = assert_problem(await client.post(f"/options/{option_id}/generate"), 400)
    assert body["code"] == "idempotency_key_required" and "Idempotency-Key" in body["detail"]
    assert_problem(await client.post(f"/options/{option_id}/generate", headers={"Idempotency-Key": ""}), 422)
    too_long = {"Idempotency-Key": "k" * 256}
    assert_problem(await client.post(f"/options/{option_id}/generate", headers=too_long), 422)
    assert (await client.get(f"/options/{option_id}")).json()["jobIds"] == []


async def test_generate_runs_an_ordinary_job_and_the_result_lands_in_the_chat(client: httpx.AsyncClient) -> None:
    chat = await new_chat(client)
    option_id = buttons((await say(client, chat["id"], "a square picture of an owl"))["assistantMessage"])[0][
        "optionId"
    ]

    response = await client.post(f"/options/{option_id}/generate", headers={"Idempotency-Key": "press-1"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/generations/{job['jobId']}"
    assert job["status"] in ("pending", "processing", "completed") and job["provider"] == "animals"
    assert job["prompt"] == "a square picture of an owl"
    done = await wait_for_status(client, job["jobId"], {"completed"})

    result = await wait_for_result(client, chat["id"], job["jobId"])
    assert result["role"] == "assistant"
    media = [chunk for chunk in result["renderChunks"] if chunk["type"] == "media"]
    assert len(media) == 1 and set(media[0]) == {"type", "jobId", "outputs"}
    outputs = media[0]["outputs"]
    assert [output["url"] for output in outputs] == done["imageUrls"]
    assert all(output["contentType"] == "image/png" for output in outputs)
    image = await client.get(outputs[0]["url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert (await client.get(f"/options/{option_id}")).json()["jobIds"] == [job["jobId"]]
    assert (await client.get(f"/chats/{chat['id']}")).json()["messageCount"] == 3


async def test_same_key_same_job_other_key_other_job(client: httpx.AsyncClient) -> None:
    chat = await new_chat(client)
    option_id = buttons((await say(client, chat["id"], "a cat"))["assistantMessage"])[0]["optionId"]
    url = f"/options/{option_id}/generate"
    first = await client.post(url, headers={"Idempotency-Key": "a"})
    again = await client.post(url, headers={"Idempotency-Key": "a"})
    other = await client.post(url, headers={"Idempotency-Key": "b"})
    assert first.status_code == again.status_code == other.status_code == 202
    assert again.json()["jobId"] == first.json()["jobId"] != other.json()["jobId"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert (await client.get(f"/options/{option_id}")).json()["jobIds"] == sorted(
        [first.json()["jobId"], other.json()["jobId"]],
        key=[first.json()["jobId"], other.json()["jobId"]].index,
    )


async def test_the_same_key_on_two_options_makes_two_jobs(client: httpx.AsyncClient) -> None:
    chat = await new_chat(client)
    first, second = [b["optionId"] for b in buttons((await say(client, chat["id"], "a cat"))["assistantMessage"])[:2]]
    one = await client.post(f"/options/{first}/generate", headers={"Idempotency-Key": "same"})
    two = await client.post(f"/options/{second}/generate", headers={"Idempotency-Key": "same"})
    assert one.status_code == two.status_code == 202
    assert one.json()["jobId"] != two.json()["jobId"]
    # A client's own /generations key cannot collide with a chat's either.
    plain = await client.post("/generations", json={"numImages": 1}, headers={"Idempotency-Key": "same"})
    assert plain.status_code == 202 and plain.json()["jobId"] not in (one.json()["jobId"], two.json()["jobId"])


async def test_concurrent_duplicate_generates_make_one_job(make_client: AppFactory, engine: AsyncEngine) -> None:
    client = await make_client(worker_enabled=False)
    chat = await new_chat(client)
    option_id = buttons((await say(client, chat["id"], "a cat"))["assistantMessage"])[0]["optionId"]

    responses = await asyncio.gather(
        *(client.post(f"/options/{option_id}/generate", headers={"Idempotency-Key": "twin"}) for _ in range(12))
    )
    assert {response.status_code for response in responses} == {202}
    assert len({response.json()["jobId"] for response in responses}) == 1
    async with engine.connect() as connection:
        jobs = (await connection.execute(text("SELECT count(*) FROM generation_jobs"))).scalar_one()
        links = (await connection.execute(text("SELECT count(*) FROM chat_generations"))).scalar_one()
    assert jobs == 1 and links == 1


async def test_a_deleted_chats_options_cannot_be_generated(make_client: AppFactory, engine: AsyncEngine) -> None:
    client = await make_client(worker_enabled=False)
    chat = await new_chat(client)
    option_id = buttons((await say(client, chat["id"], "a cat"))["assistantMessage"])[0]["optionId"]
    assert (await client.delete(f"/chats/{chat['id']}")).status_code == 204

    body = assert_problem(await client.post(f"/options/{option_id}/generate", headers={"Idempotency-Key": "k"}), 410)
    assert body["code"] == "chat_deleted" and "deleted" in body["detail"]
    assert_problem(await client.get(f"/options/{option_id}"), 410)
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM generation_jobs"))).scalar_one() == 0


async def test_a_job_of_a_chat_deleted_before_it_finished_adds_no_message(
    make_client: AppFactory, engine: AsyncEngine
) -> None:
    client = await make_client(worker_enabled=False)
    chat = await new_chat(client)
    option_id = buttons((await say(client, chat["id"], "a cat"))["assistantMessage"])[0]["optionId"]
    job = (await client.post(f"/options/{option_id}/generate", headers={"Idempotency-Key": "k"})).json()
    await client.delete(f"/chats/{chat['id']}")
    await client.post(f"/generations/{job['jobId']}/cancel")  # finished, as far as the chat is concerned

    service = chat_service(client)
    assert await service.append_results() == []
    async with engine.connect() as connection:
        count = "SELECT count(*) FROM chat_messages WHERE job_id IS NOT NULL"
        assert (await connection.execute(text(count))).scalar_one() == 0
        unresolved = "SELECT count(*) FROM chat_generations WHERE resolved_at IS NULL"
        assert (await connection.execute(text(unresolved))).scalar_one() == 0


async def test_a_failed_job_is_explained_in_words(make_client: AppFactory, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(
        json.dumps(
            [
                {
                    "key": "refuser",
                    "toolType": "text_to_image",
                    "provider": "scripted",
                    "model": "refuser-1",
                    "title": "Picky painter",
                    "description": "Refuses everything.",
                    "costTier": "premium",
                    "latencyTier": "slow",
                }
            ]
        )
    )
    refusing = ScriptedProvider(script=[PermanentProviderError("content_policy", "the request was refused")])
    client = await make_client(
        {"animals": AnimalsProvider(0), "scripted": refusing},
        model_catalog_file=catalog,
        chat_result_poll_interval=0.05,
    )
    chat = await new_chat(client)
    answer = (await say(client, chat["id"], "a cat"))["assistantMessage"]
    picky = [b for b in buttons(answer) if b["label"].startswith("Picky painter")]
    assert picky, answer
    job = (await client.post(f"/options/{picky[0]['optionId']}/generate", headers={"Idempotency-Key": "k"})).json()
    await wait_for_status(client, job["jobId"], {"failed"})

    deadline = time.monotonic() + 10
    while True:
        last = (await messages_of(client, chat["id"]))[-1]
        if last["id"] != answer["id"]:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert last["role"] == "assistant"
    assert [chunk["type"] for chunk in last["renderChunks"]] == ["text"]
    assert "the request was refused" in last["text"] and "content_policy" in last["text"]


async def test_a_result_is_appended_once_even_when_appended_again(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    chat = await new_chat(client)
    option_id = buttons((await say(client, chat["id"], "a cat"))["assistantMessage"])[0]["optionId"]
    job = (await client.post(f"/options/{option_id}/generate", headers={"Idempotency-Key": "k"})).json()
    await wait_for_result(client, chat["id"], job["jobId"])

    # As if a replica crashed after appending but before marking the job done: it appends again.
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE chat_generations SET resolved_at = NULL"))
    await asyncio.gather(*(chat_service(client).append_results() for _ in range(4)))
    results = [m for m in await messages_of(client, chat["id"]) if any(c["type"] == "media" for c in m["renderChunks"])]
    assert len(results) == 1
    assert (await client.get(f"/chats/{chat['id']}")).json()["messageCount"] == 3


# --- the prompt enhancer -------------------------------------------------------------------


async def test_the_enhancer_rewrites_the_prompt(make_client: AppFactory) -> None:
    with serve_fake_chat_completions() as fake:
        client = await make_client(
            prompt_enhancer="openai", prompt_enhancer_base_url=fake.url, openai_api_key="sk-test", worker_enabled=False
        )
        chat = await new_chat(client)
        answer = (await say(client, chat["id"], "fox in snow"))["assistantMessage"]
    option = (await client.get(f"/options/{buttons(answer)[0]['optionId']}")).json()
    assert option["prompt"] == fake.reply
    assert fake.reply in answer["text"]
    sent = fake.requests[0]
    assert sent["authorization"] == "Bearer sk-test" and sent["model"] == "gpt-4o-mini"
    assert sent["messages"][0]["role"] == "system" and sent["messages"][1] == {"role": "user", "content": "fox in snow"}


@pytest.mark.parametrize("failure", ["down", "slow", "error", "garbage"])
async def test_the_message_is_answered_when_the_enhancer_fails(make_client: AppFactory, failure: str) -> None:
    with serve_fake_chat_completions() as fake:
        if failure == "slow":
            fake.delay = 30
        elif failure == "error":
            fake.status, fake.body = 503, {"error": {"message": "overloaded", "type": "server_error"}}
        elif failure == "garbage":
            fake.body = {"choices": []}
        # The discard port: nothing listens there.
        fake_url = "http://127.0.0.1:9" if failure == "down" else fake.url
        client = await make_client(
            prompt_enhancer="openai",
            prompt_enhancer_base_url=fake_url,
            prompt_enhancer_timeout=0.5,
            worker_enabled=False,
        )
        chat = await new_chat(client)
        answer = (await say(client, chat["id"], "fox in snow"))["assistantMessage"]
        # Answered while the slow fake still sits on the request: PROMPT_ENHANCER_TIMEOUT bounds the wait.
        assert fake.answered == (0 if failure in ("down", "slow") else 1)
    option = (await client.get(f"/options/{buttons(answer)[0]['optionId']}")).json()
    assert option["prompt"] == "fox in snow"


async def test_a_video_request_runs_a_video_job_with_the_asked_shape(client: httpx.AsyncClient) -> None:
    chat = await new_chat(client)
    answer = (await say(client, chat["id"], "a vertical video of a fox running, 2 seconds"))["assistantMessage"]
    options = [(await client.get(f"/options/{b['optionId']}")).json() for b in buttons(answer)]
    video = [option for option in options if option["toolType"] == "text_to_video"]
    assert options[0]["toolType"] == "text_to_video" and video
    assert video[0]["params"] == {"aspectRatio": "9:16", "durationSeconds": 2}

    response = await client.post(f"/options/{video[0]['id']}/generate", headers={"Idempotency-Key": "v"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert (job["kind"], job["durationSeconds"], job["aspectRatio"]) == ("video", 2, "9:16")
    await wait_for_status(client, job["jobId"], {"completed"}, timeout=60)
    result = await wait_for_result(client, chat["id"], job["jobId"])
    outputs = next(c for c in result["renderChunks"] if c["type"] == "media")["outputs"]
    assert len(outputs) == 1 and outputs[0]["contentType"] == "video/mp4" and outputs[0]["durationSeconds"] == 2


async def test_messages_and_generates_spend_the_accounts_rate_limit(make_client: AppFactory) -> None:
    client = await make_client(rate_limit_per_minute=3, worker_enabled=False)
    chat = await new_chat(client)
    pair = await client.post(f"/chats/{chat['id']}/messages", json={"text": "a cat"})
    assert pair.status_code == 201 and "ratelimit" in pair.headers
    option_id = buttons(pair.json()["assistantMessage"])[0]["optionId"]
    assert (await client.post(f"/options/{option_id}/generate", headers={"Idempotency-Key": "a"})).status_code == 202
    assert (await client.post(f"/chats/{chat['id']}/messages", json={"text": "a dog"})).status_code == 201
    limited = assert_problem(await client.post(f"/chats/{chat['id']}/messages", json={"text": "an owl"}), 429)
    assert limited["code"] == "rate_limited"
    assert_problem(await client.post(f"/options/{option_id}/generate", headers={"Idempotency-Key": "b"}), 429)
    assert len(await messages_of(client, chat["id"])) == 4


# --- attachments ---------------------------------------------------------------------------


async def test_an_attached_picture_gets_image_to_x_options_that_use_it(client: httpx.AsyncClient) -> None:
    upload_id = await upload(client, picture((200, 30, 30)))
    chat = await new_chat(client)
    pair = await say(client, chat["id"], "make it look like winter", attachments=[upload_id])
    assert pair["userMessage"]["attachments"] == [upload_id]
    options = [(await client.get(f"/options/{b['optionId']}")).json() for b in buttons(pair["assistantMessage"])]
    assert [o["toolType"] for o in options][:2] == ["image_to_image", "image_to_image"]
    assert "image_to_video" in [o["toolType"] for o in options]
    assert all(o["attachments"] == [upload_id] for o in options)

    job = (await client.post(f"/options/{options[0]['id']}/generate", headers={"Idempotency-Key": "k"})).json()
    assert job["inputImages"] == [upload_id] and job["kind"] == "image"
    await wait_for_status(client, job["jobId"], {"completed"})
    await wait_for_result(client, chat["id"], job["jobId"])


async def test_animate_my_picture_runs_an_image_to_video_job(client: httpx.AsyncClient) -> None:
    upload_id = await upload(client, picture((30, 200, 30)))
    chat = await new_chat(client)
    answer = (await say(client, chat["id"], "animate this, 2 seconds", attachments=[upload_id]))["assistantMessage"]
    first = (await client.get(f"/options/{buttons(answer)[0]['optionId']}")).json()
    assert first["toolType"] == "image_to_video" and first["params"]["durationSeconds"] == 2
    job = (await client.post(f"/options/{first['id']}/generate", headers={"Idempotency-Key": "k"})).json()
    assert (job["kind"], job["inputImages"], job["durationSeconds"]) == ("video", [upload_id], 2)


async def test_bad_attachments_are_422_naming_each(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    announced = await client.post("/uploads", json={"fileName": "a.png", "contentType": "image/png", "size": 100})
    not_sent = announced.json()["uploadId"]
    garbage = await upload(client, b"not a picture at all", "image/png")
    service = chat_service(client)
    other = await other_account(engine)
    theirs, _ = await service.jobs.uploads.create(other, "x.png", "image/png", 10, "http://testserver")
    good = await upload(client, picture((1, 2, 3)))
    chat = await new_chat(client)

    response = await client.post(
        f"/chats/{chat['id']}/messages",
        json={"text": "a cat", "attachments": [good, not_sent, garbage, str(theirs.id)]},
    )
    body = assert_problem(response, 422)
    by_field = {e["field"]: e["code"] for e in body["errors"]}
    assert by_field == {
        "attachments.1": "not_uploaded",
        "attachments.2": "undecodable",
        "attachments.3": "unknown_upload",
    }
    assert "inputImages" not in response.text
    twice = await client.post(f"/chats/{chat['id']}/messages", json={"text": "a cat", "attachments": [good, good]})
    assert_problem(twice, 422, "attachments.1")
    assert await messages_of(client, chat["id"]) == []


async def test_a_finished_job_wakes_the_result_appender(make_client: AppFactory) -> None:
    # With an hour between polls, only the job's own events can bring its result in.
    client = await make_client(chat_result_poll_interval=3600)
    chat = await new_chat(client)
    await asyncio.wait_for(APPS[client].state.events.listening.wait(), 10)
    option_id = buttons((await say(client, chat["id"], "a cat"))["assistantMessage"])[0]["optionId"]
    job = (await client.post(f"/options/{option_id}/generate", headers={"Idempotency-Key": "k"})).json()
    await wait_for_result(client, chat["id"], job["jobId"])


async def test_models_of_remote_providers_appear_when_enabled(make_client: AppFactory) -> None:
    client = await make_client(providers="animals,replicate,fal", replicate_api_token="r8_test", fal_key="k:s")
    models = (await client.get("/models")).json()
    offered = {(model["provider"], model["toolType"]) for model in models}
    assert {("replicate", "text_to_image"), ("replicate", "text_to_video"), ("fal", "text_to_video")} <= offered
    assert "sora" not in {model["provider"] for model in models}
    chat = await new_chat(client)
    answer = (await say(client, chat["id"], "a video of a horse"))["assistantMessage"]
    providers = {(await client.get(f"/options/{b['optionId']}")).json()["provider"] for b in buttons(answer)}
    assert providers >= {"animals", "fal"}  # the fastest and the finest video models, then an image
