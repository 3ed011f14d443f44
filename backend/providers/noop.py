"""A provider that does no work at all, to measure the queue itself."""

from __future__ import annotations

from collections.abc import AsyncIterator

from backend.providers.base import IMAGE, VIDEO, GeneratedOutput, GenerationSpec


class NoopProvider:
    """Completes every job at once with no images; enable it with PROVIDERS=animals,noop."""

    name = "noop"
    kinds = frozenset({IMAGE, VIDEO})
    seconds_per_image = 0.0

    async def generate(self, spec: GenerationSpec) -> AsyncIterator[GeneratedOutput]:
        return
        yield  # an async generator that yields nothing
