"""The provider strategy: a job's spec in, outputs (images or a video) out, one at a time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

IMAGE, VIDEO = "image", "video"


async def _forget(_: str | None) -> None:
    return None


@dataclass
class RemoteJob:
    """The remote service's job for this one, as the worker knows it.

    `id` is the remote id a previous attempt committed (resume it instead of creating
    another); `record` commits a new one (or None: the remote job is over) before the first
    poll, fenced by the lease; `canceled` says whether the client canceled the job, as
    opposed to a shutdown or a lost lease, where the remote job must live on.
    """

    id: str | None = None
    record_id: Callable[[str | None], Awaitable[None]] = _forget
    canceled: Callable[[], bool] = lambda: False

    async def record(self, remote_id: str | None) -> None:
        await self.record_id(remote_id)
        self.id = remote_id


@dataclass(frozen=True)
class GenerationSpec:
    job_id: uuid.UUID
    num_images: int
    prompt: str | None
    attempt: int
    kind: str = IMAGE
    duration_seconds: int = 4
    aspect_ratio: str = "1:1"
    seed: int | None = None
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    remote: RemoteJob = field(default_factory=RemoteJob)

    @property
    def outputs(self) -> int:
        """How many outputs the job makes: one video, or num_images images."""
        return 1 if self.kind == VIDEO else self.num_images

    # The bytes of the job's input pictures (PNG, JPEG or WebP, already validated), in order.
    input_images: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class GeneratedOutput:
    data: bytes
    content_type: str
    # What the image shows, when the provider chose it (the animals provider does).
    animal: str | None = None
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None


# The name the image-only interface had; plugins written against it keep working.
GeneratedImage = GeneratedOutput


class ProviderError(Exception):
    """A provider failure with a stable code; transient ones are retried."""

    transient: ClassVar[bool] = False

    def __init__(self, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # The service said when to come back (Retry-After): the retry waits at least this long.
        self.retry_after = retry_after


class TransientProviderError(ProviderError):
    transient = True


class PermanentProviderError(ProviderError):
    transient = False


class Provider(Protocol):
    """A source of images and/or videos (`kinds`); the seconds let the API suggest when to poll."""

    name: str
    seconds_per_image: float

    def generate(self, spec: GenerationSpec) -> AsyncIterator[GeneratedOutput]: ...


def kinds_of(provider: Provider) -> frozenset[str]:
    """What a provider can make; providers that do not say make images (plugins written before video)."""
    kinds: frozenset[str] = getattr(provider, "kinds", frozenset({IMAGE}))
    return kinds


def seconds_per_output(provider: Provider, kind: str) -> float:
    if kind == VIDEO:
        seconds: float = getattr(provider, "seconds_per_video", provider.seconds_per_image)
        return seconds
    return provider.seconds_per_image
