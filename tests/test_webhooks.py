"""Signed webhooks: the outbox, retries, restarts, the SSRF guard, and the deliveries routes.

Receivers are real HTTP servers on 127.0.0.1 (tests/receiver.py); signatures are checked with
the Standard Webhooks reference library.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import Webhook

from tests.conftest import AppFactory
from tests.processes import kill_all, start_service
from tests.receiver import Receiver
from tests.servers import ServeFactory

pytestmark = pytest.mark.usefixtures("engine")

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
FAST = {
    "webhook_allow_private": True,
    "webhook_secret": SECRET,
    "webhook_retry_base_delay": 0.05,
    "webhook_retry_max_delay": 0.3,
}


async def create_job(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/generations", json={"numImages": 1, **body})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


async def deliveries_when(
    client: httpx.AsyncClient, job_id: str, done: Any, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """Poll the job's deliveries until `done(deliveries)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/generations/{job_id}/deliveries")
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        if done(found):
            return found
        assert time.monotonic() < deadline, f"deliveries never got there: {found}"
        await asyncio.sleep(0.02)


def verified(received: Any) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(SECRET).verify(received.body, received.headers)
    return payload


async def test_a_receiver_failing_twice_gets_three_signed_attempts_with_one_id(make_client: AppFactory) -> None:
    client = await make_client(**FAST)
    async with Receiver([500, 503]).running() as receiver:
        job = await create_job(client, webhookUrl=f"{receiver.url}/hooks?x=1")
        assert job["webhookUrl"] == f"{receiver.url}/hooks?x=1"
        assert job["webhookEvents"] == ["job.completed", "job.failed", "job.canceled"]
        attempts = await receiver.wait_for(3)
        (delivery,) = await deliveries_when(client, job["jobId"], lambda d: d and d[0]["status"] == "delivered")

    assert len({a.headers["webhook-id"] for a in attempts}) == 1
    assert attempts[0].headers["webhook-id"] == delivery["webhookId"]
    payloads = [verified(a) for a in attempts]  # raises unless every signature is valid
    assert all(a.path == "/hooks" and a.headers["content-type"] == "application/json" for a in attempts)
    event = payloads[0]
    assert payloads == [event] * 3
    assert (event["type"], event["jobId"], event["data"]["status"]) == ("job.completed", job["jobId"], "completed")
    assert event["id"] == delivery["eventId"] and delivery["eventType"] == "job.completed"
    assert delivery["attempts"] == 3 and delivery["lastStatusCode"] == 200 and delivery["nextAttemptAt"] is None
    assert delivery["url"] == job["webhookUrl"] and delivery["deliveredAt"] is not None
    tampered = {**attempts[0].headers, "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()}
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(attempts[0].body, tampered)


async def test_chosen_events_each_get_one_delivery_in_event_order(make_client: AppFactory) -> None:
    client = await make_client(**FAST)
    async with Receiver().running() as receiver:
        job = await create_job(
            client, numImages=2, webhookUrl=receiver.url, webhookEvents=["job.created", "job.progress", "job.completed"]
        )
        await receiver.wait_for(3)
        found = await deliveries_when(client, job["jobId"], lambda d: len(d) == 3)
        assert [d["eventType"] for d in found] == ["job.created", "job.progress", "job.completed"]
        assert sorted(verified(r)["type"] for r in receiver.received) == sorted(d["eventType"] for d in found)
        pages: list[list[str]] = []
        url: str | None = f"/generations/{job['jobId']}/deliveries?limit=2"
        while url is not None:
            page = await client.get(url)
            pages.append([d["eventType"] for d in page.json()])
            url = page.headers["link"].split(";")[0].strip("<>") if "link" in page.headers else None
        assert pages == [["job.created", "job.progress"], ["job.completed"]]


async def test_a_receiver_that_is_down_gets_the_event_when_it_comes_back(make_client: AppFactory) -> None:
    client = await make_client(**FAST)
    receiver = Receiver()  # not listening yet: connections are refused
    job = await create_job(client, webhookUrl=f"{receiver.url}/down")
    (failing,) = await deliveries_when(client, job["jobId"], lambda d: d and d[0]["attempts"] >= 2)
    assert failing["status"] == "pending" and failing["lastError"] and failing["lastStatusCode"] is None
    assert failing["nextAttemptAt"] is not None
    async with receiver.running():
        (arrived,) = await receiver.wait_for(1)
        (delivery,) = await deliveries_when(client, job["jobId"], lambda d: d[0]["status"] == "delivered")
    assert verified(arrived)["jobId"] == job["jobId"]
    assert delivery["attempts"] >= 3


async def test_a_pending_delivery_survives_a_restart(serve: ServeFactory) -> None:
    receiver = Receiver()
    first = await serve(**{**FAST, "webhook_retry_base_delay": 1.0, "webhook_retry_max_delay": 1.0})
    async with httpx.AsyncClient(base_url=first.url) as client:
        job = await create_job(client, webhookUrl=receiver.url)
        await deliveries_when(client, job["jobId"], lambda d: d and d[0]["attempts"] == 1 and d[0]["lastError"])
    await first.stop()  # nothing of the delivery lives in the process

    async with receiver.running():
        second = await serve(**FAST)
        async with httpx.AsyncClient(base_url=second.url) as client:
            (arrived,) = await receiver.wait_for(1)
            (delivery,) = await deliveries_when(client, job["jobId"], lambda d: d[0]["status"] == "delivered")
    assert verified(arrived)["type"] == "job.completed"
    assert delivery["attempts"] == 2 and arrived.headers["webhook-id"] == delivery["webhookId"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.1/hook",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://[fd00::1]/hook",
        "ftp://example.com/hook",
        "http://user:secret@example.com/hook",
        "not a url",
        "http://no-such-host.invalid/hook",
    ],
)
async def test_unsafe_webhook_urls_are_refused_at_creation(make_client: AppFactory, url: str) -> None:
    client = await make_client()
    response = await client.post("/generations", json={"numImages": 1, "webhookUrl": url})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == ["webhookUrl"]
    assert (await client.get("/generations")).json() == []


async def test_webhook_fields_are_validated(make_client: AppFactory) -> None:
    client = await make_client(**FAST)
    for body, field in [
        ({"webhookEvents": ["job.completed"]}, "webhookEvents"),
        ({"webhookUrl": "http://127.0.0.1:9/", "webhookEvents": ["job.exploded"]}, "webhookEvents.0"),
        ({"webhookUrl": "http://127.0.0.1:9/", "webhookEvents": []}, "webhookEvents"),
        ({"webhookUrl": "http://127.0.0.1:9/" + "a" * 2100}, "webhookUrl"),
    ]:
        response = await client.post("/generations", json={"numImages": 1, **body})
        assert response.status_code == 422, body
        assert field in [e["field"] for e in response.json()["errors"]], response.json()


async def test_the_guard_is_applied_again_at_delivery_time(make_client: AppFactory, engine: AsyncEngine) -> None:
    """A URL that became unsafe after the job was accepted (DNS changed, or a DBA wrote it) is not called."""
    client = await make_client(webhook_secret=SECRET, webhook_max_attempts=1)
    async with Receiver().running() as receiver:
        async with engine.begin() as connection:
            job_id = await connection.scalar(
                text(
                    "INSERT INTO generation_jobs (num_images, provider, webhook_url, webhook_events)"
                    " VALUES (1, 'animals', :url, ARRAY['job.created']) RETURNING id"
                ),
                {"url": receiver.url},
            )
        (delivery,) = await deliveries_when(client, str(job_id), lambda d: d and d[0]["status"] == "failed")
        assert delivery["lastError"].startswith("refused: ") and "127.0.0.1" in delivery["lastError"]
        assert receiver.received == []


async def test_a_redirect_is_a_failure_and_is_not_followed(make_client: AppFactory) -> None:
    client = await make_client(**FAST, webhook_max_attempts=2)
    async with Receiver([307, 500]).running() as receiver:
        job = await create_job(client, webhookUrl=f"{receiver.url}/hook")
        (delivery,) = await deliveries_when(client, job["jobId"], lambda d: d and d[0]["status"] == "failed")
    assert [r.path for r in receiver.received] == ["/hook", "/hook"]
    assert delivery["attempts"] == 2 and delivery["lastStatusCode"] == 500
    # A big answer is read only up to a bound and shown shortened.
    assert delivery["lastError"].startswith("HTTP 500: xxx") and len(delivery["lastError"]) < 400


async def test_a_stalled_receiver_does_not_hold_up_others(make_client: AppFactory) -> None:
    client = await make_client(**FAST, webhook_timeout=1.0)
    async with Receiver(["stall"]).running() as slow, Receiver().running() as fast:
        stuck = await create_job(client, webhookUrl=slow.url)
        await slow.wait_for(1)
        quick = await create_job(client, webhookUrl=fast.url)
        await fast.wait_for(1)
        await deliveries_when(client, quick["jobId"], lambda d: d and d[0]["status"] == "delivered")
        # Delivered while the stalled receiver still holds its first attempt open.
        (pending,) = (await client.get(f"/generations/{stuck['jobId']}/deliveries")).json()
        assert pending["status"] == "pending" and pending["attempts"] == 1 and pending["lastError"] is None
        (timed_out,) = await deliveries_when(client, stuck["jobId"], lambda d: d[0]["lastError"] is not None)
    assert "WEBHOOK_TIMEOUT" in timed_out["lastError"]


async def test_redeliver_sends_again_with_the_same_id_and_ownership_holds(
    make_client: AppFactory, engine: AsyncEngine
) -> None:
    client = await make_client(**FAST)
    async with Receiver().running() as receiver:
        job = await create_job(client, webhookUrl=receiver.url)
        (delivery,) = await deliveries_when(client, job["jobId"], lambda d: d and d[0]["status"] == "delivered")
        response = await client.post(f"/generations/{job['jobId']}/deliveries/{delivery['id']}/redeliver")
        assert response.status_code == 202
        assert response.json()["status"] == "pending" and response.json()["attempts"] == 0
        first, again = await receiver.wait_for(2)
        await deliveries_when(client, job["jobId"], lambda d: d[0]["status"] == "delivered" and d[0]["attempts"] == 1)
    assert first.headers["webhook-id"] == again.headers["webhook-id"] == delivery["webhookId"]
    assert verified(again) == verified(first)

    for path in (
        f"/generations/{job['jobId']}/deliveries/{uuid.uuid4()}/redeliver",
        f"/generations/{job['jobId']}/deliveries/not-an-id/redeliver",
        f"/generations/{uuid.uuid4()}/deliveries/{delivery['id']}/redeliver",
    ):
        assert (await client.post(path)).status_code == 404
    other = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO accounts (id, name) VALUES (:id, 'other')"), {"id": other})
        foreign = await connection.scalar(
            text("INSERT INTO generation_jobs (num_images, provider, account_id) VALUES (1, 'noop', :a) RETURNING id"),
            {"a": other},
        )
    assert (await client.get(f"/generations/{foreign}/deliveries")).status_code == 404


async def test_each_account_signs_with_its_own_secret(make_client: AppFactory, engine: AsyncEngine) -> None:
    from tests.test_accounts import bearer, make_key

    account, key = await make_key(engine)
    assert account.webhook_secret is not None and account.webhook_secret.startswith("whsec_")
    client = await make_client(**FAST)
    async with Receiver().running() as receiver:
        response = await client.post(
            "/generations", json={"numImages": 1, "webhookUrl": receiver.url}, headers=bearer(key)
        )
        job = response.json()
        (arrived,) = await receiver.wait_for(1)
        assert Webhook(account.webhook_secret).verify(arrived.body, arrived.headers)["jobId"] == job["jobId"]
        with pytest.raises(Exception, match="signature"):
            Webhook(SECRET).verify(arrived.body, arrived.headers)  # not the anonymous account's
        # The account's deliveries and streams are its own.
        assert (await client.get(f"/generations/{job['jobId']}/deliveries")).status_code == 404
        mine = await client.get(f"/generations/{job['jobId']}/deliveries", headers=bearer(key))
        assert [d["eventType"] for d in mine.json()] == ["job.completed"]


async def test_without_webhook_secret_one_is_generated_once_and_kept(
    make_client: AppFactory, engine: AsyncEngine
) -> None:
    client = await make_client(**{**FAST, "webhook_secret": None})
    async with Receiver().running() as receiver:
        for _ in range(2):
            await create_job(client, webhookUrl=receiver.url)
        first, second = await receiver.wait_for(2)
    async with engine.begin() as connection:
        kept = await connection.scalar(text("SELECT webhook_secret FROM accounts WHERE name = 'anonymous'"))
        # The anonymous account's row outlives a test: leave it as the migration made it.
        await connection.execute(text("UPDATE accounts SET webhook_secret = NULL WHERE name = 'anonymous'"))
    assert kept is not None and kept.startswith("whsec_")
    assert Webhook(kept).verify(first.body, first.headers) and Webhook(kept).verify(second.body, second.headers)


@pytest.mark.slow
async def test_a_pending_delivery_survives_sigkill_and_another_process_sends_it(
    database_url: str, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": database_url,
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_RETRY_BASE_DELAY": "0.5",
        "WEBHOOK_RETRY_MAX_DELAY": "0.5",
        "RUN_MIGRATIONS": "false",
    }
    receiver = Receiver()
    first = start_service(tmp_path / "first", env)
    second = None
    try:
        first.wait_ready()
        async with httpx.AsyncClient(base_url=first.url) as client:
            job = await create_job(client, webhookUrl=receiver.url)
            await deliveries_when(client, job["jobId"], lambda d: d and d[0]["attempts"] >= 1 and d[0]["lastError"])
        first.signal(signal.SIGKILL)
        first.wait(10)
        async with receiver.running():
            second = start_service(tmp_path / "second", env)
            second.wait_ready()
            (arrived,) = await receiver.wait_for(1, timeout=30)
            async with httpx.AsyncClient(base_url=second.url) as client:
                (delivery,) = await deliveries_when(client, job["jobId"], lambda d: d[0]["status"] == "delivered")
        assert verified(arrived)["jobId"] == job["jobId"]
        assert arrived.headers["webhook-id"] == delivery["webhookId"] and delivery["attempts"] >= 2
    finally:
        kill_all(first, *([second] if second else []))
