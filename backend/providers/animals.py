"""The default provider: a random animal, drawn locally with Pillow."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
from collections.abc import AsyncIterator

from PIL import Image, ImageDraw, ImageFont, ImageOps

from backend.providers.animation import frame_size, render_video
from backend.providers.base import IMAGE, VIDEO, GeneratedOutput, GenerationSpec

ANIMALS = (
    "bear", "cat", "dog", "fox", "owl", "panda", "rabbit", "tiger", "lion", "elephant",
    "giraffe", "zebra", "penguin", "koala", "kangaroo", "monkey", "wolf", "deer", "horse", "turtle",
)  # fmt: skip

SIZE = 256
# How much of an input picture shows through the generated pattern.
INPUT_WEIGHT = 0.7


class AnimalsProvider:
    """Picks one animal per job and renders each image (or the video) differently, `delay` seconds apiece."""

    name = "animals"
    kinds = frozenset({IMAGE, VIDEO})

    def __init__(self, delay: float) -> None:
        self.seconds_per_image = delay
        self.seconds_per_video = delay

    async def generate(self, spec: GenerationSpec) -> AsyncIterator[GeneratedOutput]:
        animal = random.choice(ANIMALS)
        if spec.kind == VIDEO:
            if self.seconds_per_video:
                await asyncio.sleep(self.seconds_per_video)
            seconds, ratio = spec.duration_seconds, spec.aspect_ratio
            data = await asyncio.to_thread(render_video, animal, spec.prompt, str(spec.job_id), seconds, ratio)
            yield GeneratedOutput(data, "video/mp4", animal, *frame_size(ratio), float(seconds))
            return
        for index in range(spec.num_images):
            if self.seconds_per_image:
                await asyncio.sleep(self.seconds_per_image)
            picture = spec.input_images[index % len(spec.input_images)] if spec.input_images else None
            data = await asyncio.to_thread(render, animal, spec.prompt, f"{spec.job_id}/{index}", index, picture)
            yield GeneratedOutput(data, "image/png", animal, SIZE, SIZE)


def render(animal: str, prompt: str | None, seed: str, index: int, picture: bytes | None = None) -> bytes:
    """A PNG of the animal's name on a pattern seeded by the job and image index.

    With an input picture, the picture fills the frame behind the animal, blended into the pattern.
    """
    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    top = tuple(rng.randrange(40, 220) for _ in range(3))
    bottom = tuple(rng.randrange(40, 220) for _ in range(3))
    image = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(image)
    for y in range(SIZE):
        t = y / (SIZE - 1)
        draw.line([(0, y), (SIZE, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    if picture is not None:
        with Image.open(io.BytesIO(picture)) as source:
            fitted = ImageOps.fit(ImageOps.exif_transpose(source).convert("RGB"), (SIZE, SIZE))
        image = Image.blend(image, fitted, INPUT_WEIGHT)
        draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y, r = rng.randrange(SIZE), rng.randrange(SIZE), rng.randrange(6, 28)
        draw.ellipse((x - r, y - r, x + r, y + r), outline=(255, 255, 255), width=2)
    # A face: head, two ears, two eyes, a nose.
    draw.ellipse((78, 70, 178, 170), fill=(250, 240, 225), outline=(40, 30, 20), width=3)
    draw.ellipse((70, 56, 104, 90), fill=(250, 240, 225), outline=(40, 30, 20), width=3)
    draw.ellipse((152, 56, 186, 90), fill=(250, 240, 225), outline=(40, 30, 20), width=3)
    draw.ellipse((104, 104, 116, 116), fill=(20, 20, 20))
    draw.ellipse((140, 104, 152, 116), fill=(20, 20, 20))
    draw.ellipse((120, 128, 136, 140), fill=(60, 30, 30))
    font = ImageFont.load_default(size=24)
    draw.text((SIZE // 2, 200), f"{animal} #{index + 1}", fill=(255, 255, 255), font=font, anchor="mm")
    if prompt:
        small = ImageFont.load_default(size=12)
        draw.text((SIZE // 2, 232), prompt[:40], fill=(255, 255, 255), font=small, anchor="mm")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
