"""Webhook delivery: a loop that drains the outbox, in every process that runs the worker.

The outbox (`webhook_deliveries`) is filled by the events trigger in the job change's own
transaction, so a delivery exists exactly when its event does. Delivery loops on every replica
claim due rows with SKIP LOCKED (the claim moves `next_attempt_at` past the attempt's deadline,
a lease: a process that dies mid-send leaves the row due again). Each claimed delivery is sent
by its own task, so one slow receiver holds one slot for at most WEBHOOK_TIMEOUT.

Requests follow Standard Webhooks (https://www.standardwebhooks.com/, spec/standard-webhooks.md):
`webhook-id` (the same on every attempt), `webhook-timestamp` (seconds, per attempt) and
`webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` keyed with the
base64 part of the account's `whsec_…` secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import random
import secrets
import time
import uuid
from dataclasses import dataclass

import httpx

from backend.accounts import ANONYMOUS_ACCOUNT_ID
from backend.config import Settings
from backend.db import database_down
from backend.events import guard
from backend.events.hub import EventHub, stop_tasks
from backend.events.repository import Claimed, EventRepository
from backend.events.service import event_json
from backend.notify import DELIVERIES_CHANNEL
from backend.storage import Storage

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
# What we keep of a receiver's answer: enough to show in `lastError`, never its whole body.
MAX_RESPONSE_BYTES = 4096
# How far past the request timeout a claimed delivery stays ours before another loop may retry it.
LEASE_MARGIN = 30.0
RETRY_FACTOR = 6


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def retry_delay(attempt: int, settings: Settings) -> float | None:
    """Seconds before the next attempt after `attempt` failed, or None when out of attempts.

    Six times longer per attempt from WEBHOOK_RETRY_BASE_DELAY, capped at WEBHOOK_RETRY_MAX_DELAY, ±20 % jitter:
    with the defaults 5 s, 30 s, 3 min, 18 min, 1.8 h, 10 h, 10 h — about a day in all.
    """
    if attempt >= settings.webhook_max_attempts:
        return None
    delay = min(settings.webhook_retry_base_delay * RETRY_FACTOR ** (attempt - 1), settings.webhook_retry_max_delay)
    return float(delay) * random.uniform(0.8, 1.2)


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.error is None


class Deliverer:
    """The delivery loop. Created and stopped by the app lifespan (with the worker)."""

    def __init__(self, repo: EventRepository, hub: EventHub, storage: Storage, settings: Settings) -> None:
        self.repo = repo
        self.storage = storage
        self.settings = settings
        self.base = (settings.public_base_url or f"http://{settings.host}:{settings.port}").rstrip("/")
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Never the environment's proxies, never a redirect: we call exactly the checked address.
        self._client = httpx.AsyncClient(
            timeout=settings.webhook_timeout, follow_redirects=False, trust_env=False, verify=True
        )
        hub.on_channel(DELIVERIES_CHANNEL, lambda _: self._wake.set())

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="webhook-deliveries")

    async def stop(self) -> None:
        self._closed = True
        await stop_tasks([*self._in_flight, *([self._task] if self._task else [])])
        await self._client.aclose()

    async def _loop(self) -> None:
        failures = 0
        while not self._closed:
            self._wake.clear()
            free = self.settings.webhook_concurrency - len(self._in_flight)
            claimed: list[Claimed] = []
            if free > 0:
                try:
                    lease = self.settings.webhook_timeout + LEASE_MARGIN
                    claimed = await self.repo.claim_deliveries(free, lease)
                    failures = 0
                except Exception as exc:
                    if not database_down(exc):
                        raise
                    failures += 1
                    log.warning("webhook deliveries: database unavailable: %s", exc)
                    await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                    continue
            for item in claimed:
                task = asyncio.create_task(self._deliver(item), name=f"webhook-{item.delivery.id}")
                self._in_flight.add(task)
                task.add_done_callback(self._finished)
            if claimed and len(claimed) == free:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.worker_poll_interval)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()  # a slot is free
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("webhook delivery crashed", exc_info=exc)

    async def _secret(self, item: Claimed) -> str:
        if item.delivery.account_id == ANONYMOUS_ACCOUNT_ID and self.settings.webhook_secret is not None:
            return self.settings.webhook_secret.get_secret_value()
        if item.secret:
            return item.secret
        return await self.repo.account_secret(item.delivery.account_id, new_secret())

    async def _deliver(self, item: Claimed) -> None:
        delivery = item.delivery
        outcome = await self.send(item)
        try:
            if outcome.delivered:
                await self.repo.delivery_done(delivery.id, delivery.attempts, outcome.status_code or 0)
                log.info("webhook %s delivered (attempt %d)", delivery.id, delivery.attempts)
                return
            delay = retry_delay(delivery.attempts, self.settings)
            await self.repo.delivery_failed(
                delivery.id, delivery.attempts, outcome.status_code, outcome.error or "", delay
            )
        except Exception as exc:
            if not database_down(exc):
                raise
            # The claim's lease runs out and the delivery is sent again: at least once.
            log.warning("webhook %s: could not record the outcome: %s", delivery.id, exc)
            return
        log.warning(
            "webhook %s attempt %d failed (%s)%s",
            delivery.id,
            delivery.attempts,
            outcome.error,
            f"; next in {delay:.1f}s" if delay is not None else "; giving up",
        )
        if delay is not None:
            asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def send(self, item: Claimed) -> Outcome:
        """One attempt: check the address again, POST the signed event, read a bounded answer."""
        delivery = item.delivery
        try:
            target = await guard.resolve(delivery.url, allow_private=self.settings.webhook_allow_private)
        except guard.UnsafeURL as exc:
            return Outcome(None, f"refused: {exc}")
        body = event_json(item.event, self.storage, self.base)
        msg_id = webhook_id(delivery.id)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": f"{self.settings.app_name}/{self.settings.version} webhooks",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(await self._secret(item), msg_id, timestamp, body),
        }
        url, extensions = _pinned(target, headers)
        try:
            async with asyncio.timeout(self.settings.webhook_timeout):
                request = self._client.build_request("POST", url, content=body, headers=headers, extensions=extensions)
                response = await self._client.send(request, stream=True)
                try:
                    answer = await _read_bounded(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            return Outcome(None, f"no answer within WEBHOOK_TIMEOUT ({self.settings.webhook_timeout:g}s)")
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__)
        if 200 <= response.status_code < 300:
            return Outcome(response.status_code, None)
        snippet = answer.decode("utf-8", "replace").strip()[:300]
        return Outcome(response.status_code, f"HTTP {response.status_code}" + (f": {snippet}" if snippet else ""))


def _pinned(target: guard.Target, headers: dict[str, str]) -> tuple[str, dict[str, object]]:
    """The URL with its host replaced by the checked address (no second DNS answer to trust);
    the Host header and TLS SNI keep the name, so virtual hosts and certificates still work."""
    parts = httpx.URL(target.url)
    headers["host"] = parts.netloc.decode("ascii")
    extensions: dict[str, object] = {"sni_hostname": target.host} if parts.scheme == "https" else {}
    return str(parts.copy_with(host=target.address)), extensions


async def _read_bounded(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_RESPONSE_BYTES:
            break
    return b"".join(chunks)[:MAX_RESPONSE_BYTES]


def webhook_id(delivery_id: uuid.UUID) -> str:
    return f"msg_{delivery_id.hex}"
