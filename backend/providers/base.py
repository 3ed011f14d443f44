"""The provider strategy: a job's spec in, images out, one at a time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import ClassVar, Protocol


@dataclass(frozen=True)
class GenerationSpec:
    job_id: uuid.UUID
    num_images: int
    prompt: str | None
    attempt: int


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    content_type: str
    # What the image shows, when the provider chose it (the animals provider does).
    animal: str | None = None


class ProviderError(Exception):
    """A provider failure with a stable code; transient ones are retried."""

    transient: ClassVar[bool] = False

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TransientProviderError(ProviderError):
    transient = True


class PermanentProviderError(ProviderError):
    transient = False


class Provider(Protocol):
    """An image source. `seconds_per_image` lets the API suggest when to poll."""

    name: str
    seconds_per_image: float

    def generate(self, spec: GenerationSpec) -> AsyncIterator[GeneratedImage]: ...
