"""A provider plugin for process tests: records every (job, attempt) it runs to a file.

Load it into a real service with PROVIDER_PLUGINS=tests.recording:provider and
RECORD_FILE=/path; it registers as "recording".
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from backend.config import Settings
from backend.providers import GeneratedImage, GenerationSpec

TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a5f0d9a80000000049454e44ae426082"
)


class RecordingProvider:
    name = "recording"

    def __init__(self, path: str, delay: float) -> None:
        self.seconds_per_image = delay
        self.path = path

    async def generate(self, spec: GenerationSpec) -> AsyncIterator[GeneratedImage]:
        # O_APPEND writes of one short line are atomic across processes.
        line = f"{os.getpid()} {spec.job_id} {spec.attempt}\n".encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        for _ in range(spec.num_images):
            if self.seconds_per_image:
                await asyncio.sleep(self.seconds_per_image)
            yield GeneratedImage(TINY_PNG, "image/png")


def provider(settings: Settings) -> RecordingProvider:
    return RecordingProvider(os.environ["RECORD_FILE"], settings.image_provider_delay)
