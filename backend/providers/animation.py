"""The animals provider's videos: an H.264 MP4 drawn frame by frame with Pillow, encoded with PyAV.

PyAV's wheels bundle FFmpeg (libx264 included), so this needs no system package and no network.
"""

from __future__ import annotations

import hashlib
import math
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

import av
from PIL import Image, ImageDraw, ImageFont

FPS = 12
# Even sides (yuv420p halves them); small enough that 20 s encode in about a second.
FRAME_SIZES = {"1:1": (320, 320), "16:9": (448, 256), "9:16": (256, 448)}


def frame_size(aspect_ratio: str) -> tuple[int, int]:
    return FRAME_SIZES.get(aspect_ratio, FRAME_SIZES["1:1"])


def render_video(animal: str, prompt: str | None, seed: str, seconds: int, aspect_ratio: str) -> bytes:
    """An MP4 of `seconds` seconds: the animal's face bouncing around a drifting sky, with a clock hand."""
    width, height = frame_size(aspect_ratio)
    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    top = tuple(rng.randrange(40, 220) for _ in range(3))
    bottom = tuple(rng.randrange(40, 220) for _ in range(3))
    background = _gradient(width, height, top, bottom)
    stars = [(rng.randrange(width), rng.randrange(height), rng.randrange(2, 6)) for _ in range(24)]
    font = ImageFont.load_default(size=20)
    small = ImageFont.load_default(size=12)
    vx, vy = rng.choice((-1, 1)) * width / 3.0, rng.choice((-1, 1)) * height / 2.5  # pixels per second
    radius = min(width, height) // 6

    def draw_frame(t: float) -> Image.Image:
        image = background.copy()
        draw = ImageDraw.Draw(image)
        for x, y, r in stars:
            sx = (x + t * 20) % width  # the sky drifts
            draw.ellipse((sx - r, y - r, sx + r, y + r), outline=(255, 255, 255), width=1)
        cx = _bounce(width / 2 + vx * t, radius, width - radius)
        cy = _bounce(height / 2 + vy * t, radius, height - radius)
        _face(draw, cx, cy, radius)
        angle = 2 * math.pi * t / max(1, seconds)  # one turn over the whole video
        draw.line((24, 24, 24 + 16 * math.sin(angle), 24 - 16 * math.cos(angle)), fill=(255, 255, 255), width=3)
        draw.text((width // 2, height - 28), animal, fill=(255, 255, 255), font=font, anchor="mm")
        if prompt:
            draw.text((width // 2, height - 10), prompt[:40], fill=(255, 255, 255), font=small, anchor="mm")
        return image

    # faststart puts the index first, so a browser can play the file while it downloads; the
    # muxer then rewrites the file by name, hence a temporary file rather than a buffer.
    with tempfile.TemporaryDirectory(prefix="animals-") as folder:
        path = Path(folder) / "video.mp4"
        _encode(path, width, height, seconds, draw_frame)
        return path.read_bytes()


def _encode(path: Path, width: int, height: int, seconds: int, draw_frame: Callable[[float], Image.Image]) -> None:
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": "veryfast", "crf": "28"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(seconds * FPS):
            frame = av.VideoFrame.from_image(draw_frame(index / FPS))  # type: ignore[no-untyped-call]  # PyAV's stub
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _gradient(width: int, height: int, top: tuple[int, ...], bottom: tuple[int, ...]) -> Image.Image:
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / (height - 1)
        draw.line([(0, y), (width, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    return image


def _bounce(position: float, low: float, high: float) -> float:
    """Reflect a position that runs past the walls back between them."""
    span = high - low
    offset = (position - low) % (2 * span)
    return low + (offset if offset <= span else 2 * span - offset)


def _face(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    skin, ink = (250, 240, 225), (40, 30, 20)
    ear = r * 0.35
    draw.ellipse((cx - r * 0.9 - ear, cy - r * 0.9 - ear, cx - r * 0.9 + ear, cy - r * 0.9 + ear), skin, ink, 2)
    draw.ellipse((cx + r * 0.9 - ear, cy - r * 0.9 - ear, cx + r * 0.9 + ear, cy - r * 0.9 + ear), skin, ink, 2)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=skin, outline=ink, width=3)
    eye = r * 0.12
    for ex in (cx - r * 0.35, cx + r * 0.35):
        draw.ellipse((ex - eye, cy - r * 0.2 - eye, ex + eye, cy - r * 0.2 + eye), fill=(20, 20, 20))
    draw.ellipse((cx - eye, cy + r * 0.15 - eye, cx + eye, cy + r * 0.15 + eye), fill=(60, 30, 30))
