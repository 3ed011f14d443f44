"""Providers for tests: real implementations of the interface with scripted behaviour."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from backend.providers import GeneratedImage, GenerationSpec, ProviderError
from backend.providers.animals import render


@dataclass
class ScriptedProvider:
    """Attempt n raises script[n-1]; None, or an attempt past the script, succeeds."""

    script: list[ProviderError | None] = field(default_factory=list)
    delay: float = 0.0
    name: str = "scripted"
    seconds_per_image: float = 0.0
    runs: list[tuple[uuid.UUID, int]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    on_image: Callable[[int], None] | None = None

    async def generate(self, spec: GenerationSpec) -> AsyncIterator[GeneratedImage]:
        self.runs.append((spec.job_id, spec.attempt))
        self.started.set()
        outcome = self.script[spec.attempt - 1] if spec.attempt <= len(self.script) else None
        if outcome is not None:
            raise outcome
        for index in range(spec.num_images):
            if self.delay:
                await asyncio.sleep(self.delay)
            yield GeneratedImage(render("owl", spec.prompt, f"{spec.job_id}/{index}", index), "image/png", "owl")
            if self.on_image:
                self.on_image(index)
