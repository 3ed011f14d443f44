"""The skeleton every submit-and-poll service shares: submit once, poll, download, cancel.

A service module (sora, replicate, fal, higgsfield) only says how to speak its protocol:
`submit` starts a remote job and returns its id, `check` looks at it once, `cancel` asks
the service to stop it. Everything else lives here, once:

- the remote id is committed on our job (`RemoteJob.record`, a fenced write) before the
  first poll, and a job that arrives with an id (a restart, a takeover, a retry after a
  failed poll) resumes that remote job instead of paying for another;
- polls back off from POLL_INITIAL_SECONDS to POLL_MAX_SECONDS with ±20 % jitter and honour
  the service's Retry-After (or its own hint); a failed poll is retried in place, since the
  remote job is still running; the worker's heartbeat keeps the lease alive meanwhile;
- a client's cancel reaches the service's cancel call; a shutdown or a lost lease does not
  (another worker resumes the remote job);
- results are downloaded without our credentials, bounded by MAX_OUTPUT_BYTES, and checked
  to be the kind of file asked for (dimensions and duration read from the file itself).
"""

from __future__ import annotations

import asyncio
import email.utils
import io
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import av
import httpx
from PIL import Image, UnidentifiedImageError

from backend.providers.base import (
    VIDEO,
    GeneratedOutput,
    GenerationSpec,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)

log = logging.getLogger(__name__)

DEFAULT_PROMPT = "a friendly animal, studio portrait"
JITTER = 0.2
# Consecutive failed polls tolerated before the attempt gives up (the remote job lives on).
MAX_POLL_FAILURES = 5
MAX_DOWNLOAD_TRIES = 3
CANCEL_TIMEOUT = 5.0
IMAGE_TYPES = {"image/png", "image/jpeg", "image/webp"}


@dataclass(frozen=True)
class RemoteFile:
    """One result the service made, to download. `auth`: the URL needs our credentials."""

    url: str
    auth: bool = False


@dataclass(frozen=True)
class Status:
    """One look at a remote job: still running, done with files, or over with an error."""

    files: list[RemoteFile] | None = None
    error: ProviderError | None = None
    # Seconds the service asked us to wait before the next look, if it said.
    wait: float | None = None

    @property
    def running(self) -> bool:
        return self.files is None and self.error is None


RUNNING = Status()


@dataclass
class Http:
    """The two clients a service uses: `api` carries our credentials, `files` never does."""

    api: httpx.AsyncClient
    files: httpx.AsyncClient
    label: str

    async def call(self, method: str, url: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> httpx.Response:
        """One API call; transport failures and non-`ok` answers become coded errors."""
        try:
            response = await self.api.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise TransientProviderError("provider_timeout", f"{self.label} did not answer in time") from None
        except httpx.TransportError as exc:
            raise TransientProviderError("provider_unreachable", f"cannot reach {self.label} ({exc})") from None
        if response.status_code not in ok:
            raise http_error(response, self.label)
        return response

    @staticmethod
    def json(response: httpx.Response, label: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise TransientProviderError("provider_bad_response", f"{label} answered with something other than JSON")
        return body


class RemoteService(Protocol):
    """The few calls that speak one service's protocol."""

    label: str

    async def submit(self, http: Http, spec: GenerationSpec) -> str: ...

    async def check(self, http: Http, remote_id: str, spec: GenerationSpec) -> Status: ...

    async def cancel(self, http: Http, remote_id: str, spec: GenerationSpec) -> None: ...


@dataclass
class SubmitAndPollProvider:
    """A provider made of a RemoteService and the shared loop; one per configured service."""

    name: str
    service: RemoteService
    kinds: frozenset[str]
    api_base_url: str
    api_headers: Mapping[str, str]
    max_output_bytes: int
    poll_initial: float = 1.0
    poll_max: float = 30.0
    timeout: float = 60.0
    seconds_per_image: float = 10.0
    seconds_per_video: float = 60.0
    http: Http = field(init=False)

    def __post_init__(self) -> None:
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        # Many jobs in flight share one pool; a connection per poll would not scale to thousands.
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        self.http = Http(
            api=httpx.AsyncClient(
                base_url=self.api_base_url.rstrip("/"), headers=dict(self.api_headers), timeout=timeout, limits=limits
            ),
            files=httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=True),
            label=self.service.label,
        )

    async def generate(self, spec: GenerationSpec) -> AsyncIterator[GeneratedOutput]:
        remote = spec.remote
        if remote.id is None:
            await remote.record(await self.service.submit(self.http, spec))
        else:
            log.info("job %s resumes %s job %s", spec.job_id, self.service.label, remote.id)
        remote_id = remote.id
        assert remote_id is not None
        try:
            files = await self._wait(remote_id, spec)
        except asyncio.CancelledError:
            if remote.canceled():
                await self._cancel(remote_id, spec)
            raise
        for file in files[: spec.outputs]:
            yield await self._download(file, spec.kind)

    async def _wait(self, remote_id: str, spec: GenerationSpec) -> list[RemoteFile]:
        """Poll until the remote job ends; its files, or its error (then it is forgotten)."""
        tries = failures = 0
        wait: float | None = None
        while True:
            await asyncio.sleep(self._delay(tries, wait))
            tries += 1
            try:
                status = await self.service.check(self.http, remote_id, spec)
            except ProviderError as exc:
                if not exc.transient:
                    raise
                failures += 1
                if failures >= MAX_POLL_FAILURES:
                    raise  # this attempt ends; the next one resumes the same remote job
                log.warning("polling %s job %s failed (%s); trying again", self.service.label, remote_id, exc.code)
                wait = exc.retry_after
                continue
            failures, wait = 0, status.wait
            if status.error is not None:
                await spec.remote.record(None)  # over: a retry must start a new remote job
                raise status.error
            if status.files is not None:
                if not status.files:
                    raise PermanentProviderError(
                        "provider_bad_response", f"{self.service.label} finished with no output"
                    )
                return status.files

    def _delay(self, tries: int, hint: float | None) -> float:
        """Exponential backoff with ±20 % jitter; the service's own hint wins when it gave one."""
        if hint is not None:
            return min(max(hint, 0.0), self.poll_max * 10)
        base = min(self.poll_max, self.poll_initial * 2.0 ** min(tries, 30))
        return base * random.uniform(1 - JITTER, 1 + JITTER)

    async def _cancel(self, remote_id: str, spec: GenerationSpec) -> None:
        # Shielded and bounded: the job is being canceled, but the service should hear of it.
        try:
            await asyncio.wait_for(asyncio.shield(self.service.cancel(self.http, remote_id, spec)), CANCEL_TIMEOUT)
            log.info("canceled %s job %s", self.service.label, remote_id)
        except (ProviderError, TimeoutError) as exc:
            log.warning("could not cancel %s job %s: %s", self.service.label, remote_id, exc)

    async def _download(self, file: RemoteFile, kind: str) -> GeneratedOutput:
        for attempt in range(1, MAX_DOWNLOAD_TRIES + 1):
            try:
                data = await self._fetch(file)
                break
            except TransientProviderError:
                if attempt == MAX_DOWNLOAD_TRIES:
                    raise
                await asyncio.sleep(self._delay(attempt - 1, None))
        return await asyncio.to_thread(inspect, data, kind, self.service.label)

    async def _fetch(self, file: RemoteFile) -> bytes:
        client = self.http.api if file.auth else self.http.files
        label, limit = self.service.label, self.max_output_bytes
        try:
            async with client.stream("GET", file.url) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise http_error(response, label)
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise too_large(label, limit)
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise too_large(label, limit)
                    chunks.append(chunk)
        except httpx.TimeoutException:
            raise TransientProviderError("provider_timeout", f"downloading from {label} timed out") from None
        except httpx.TransportError as exc:
            raise TransientProviderError("provider_unreachable", f"cannot download from {label} ({exc})") from None
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self.http.api.aclose()
        await self.http.files.aclose()


def too_large(label: str, limit: int) -> ProviderError:
    return PermanentProviderError("provider_bad_response", f"{label} output is larger than MAX_OUTPUT_BYTES ({limit})")


def inspect(data: bytes, kind: str, label: str) -> GeneratedOutput:
    """Check downloaded bytes are the asked kind of file, by reading them; never trust a header."""
    if kind == VIDEO:
        if data[4:8] != b"ftyp":
            raise PermanentProviderError("provider_bad_response", f"{label} returned something other than an MP4")
        try:
            with av.open(io.BytesIO(data), mode="r") as container:
                stream = container.streams.video[0]
                duration = container.duration / av.time_base if container.duration else None
                return GeneratedOutput(data, "video/mp4", None, stream.width, stream.height, duration)
        except (av.FFmpegError, IndexError):
            raise PermanentProviderError("provider_bad_response", f"{label} returned an unreadable video") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            content_type = Image.MIME.get(image.format or "", "")
            width, height = image.size
    except (UnidentifiedImageError, OSError):
        raise PermanentProviderError(
            "provider_bad_response", f"{label} returned something other than an image"
        ) from None
    if content_type not in IMAGE_TYPES:
        raise PermanentProviderError("provider_bad_response", f"{label} returned an image of type {content_type!r}")
    return GeneratedOutput(data, content_type, None, width, height)


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (RFC 9110: delay-seconds or an HTTP date), if the answer had one."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def http_error(response: httpx.Response, label: str) -> ProviderError:
    """The job error code for a service's error answer (the mapping PRODUCTION_ARCHITECTURE.md tabulates)."""
    status, detail = response.status_code, error_detail(response)
    if status in (401, 403):
        return PermanentProviderError("provider_auth", f"{label} refused our credentials ({status})")
    if status == 429:
        return TransientProviderError(
            "provider_rate_limited", f"{label} rate limit: {detail}", retry_after=retry_after(response)
        )
    if status >= 500 or status in (408, 409):
        return TransientProviderError(
            "provider_unavailable", f"{label} returned {status}: {detail}", retry_after=retry_after(response)
        )
    if looks_like_content_policy(detail):
        return PermanentProviderError("content_policy", f"{label} refused the request: {detail}")
    return PermanentProviderError("provider_rejected", f"{label} rejected the request ({status}): {detail}")


def error_detail(response: httpx.Response) -> str:
    """The human part of an error body, in the shapes these services use."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or str(response.status_code)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # OpenAI: {"error": {"message", "code"}}
            return f"{error.get('message') or ''} ({error.get('code') or error.get('type') or 'error'})"
        detail = body.get("detail")
        if isinstance(detail, list):  # fal model errors: {"detail": [{"msg", "type"}]}
            return "; ".join(f"{d.get('msg')} ({d.get('type')})" for d in detail if isinstance(d, dict))
        for key in ("detail", "error", "title", "message"):  # Replicate problem details, fal, Higgsfield
            if isinstance(body.get(key), str):
                return str(body[key])
    return response.reason_phrase or str(response.status_code)


_POLICY_WORDS = ("content_policy", "moderation", "nsfw", "safety", "sensitive", "(e005)")


def looks_like_content_policy(message: str) -> bool:
    """Services without a structured code say it in words (Replicate's E005, OpenAI's safety system)."""
    lowered = message.lower()
    return any(word in lowered for word in _POLICY_WORDS)


def remote_failure(label: str, message: str | None) -> ProviderError:
    """A remote job that ended failed: content policy is final; anything else may work next time."""
    message = message or "no reason given"
    if looks_like_content_policy(message):
        return PermanentProviderError("content_policy", f"{label} refused the request: {message}")
    return TransientProviderError("provider_failed", f"the {label} job failed: {message}")


def prompt_of(spec: GenerationSpec) -> str:
    return spec.prompt or DEFAULT_PROMPT


def media_urls(body: dict[str, Any]) -> list[str]:
    """Images as `images[].url`, a video as `video.url` (fal's results, Higgsfield's status)."""
    urls = [image.get("url") for image in body.get("images") or [] if isinstance(image, dict)]
    video = body.get("video")
    if isinstance(video, dict):
        urls.append(video.get("url"))
    return [url for url in urls if isinstance(url, str)]
