"""OpenAI's request and response bodies (snake_case, as OpenAI's SDKs send and expect them)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from backend.jobs.schemas import PROMPT_MAX_LENGTH

Prompt = Annotated[str, StringConstraints(min_length=1, max_length=PROMPT_MAX_LENGTH)]
# `provider` or `provider/model`; a provider name is at most 64 characters, as on POST /generations.
Model = Annotated[str, StringConstraints(max_length=200, pattern=r"^[A-Za-z0-9_.-]{1,64}(/\S+)?$")]


class ImageGenerationRequest(BaseModel):
    """`POST /v1/images/generations`. Options OpenAI's SDK may send that change nothing here
    (quality, style, user…) are accepted and ignored; any other field is a 400 naming it."""

    model_config = ConfigDict(extra="forbid")

    prompt: Prompt
    n: int = Field(1, ge=1, description="How many images (1 to MAX_IMAGES_PER_JOB).")
    model: Model | None = Field(None, description="A provider (`animals`), or `provider/model`.")
    size: Annotated[str, StringConstraints(pattern=r"^(auto|\d{2,5}x\d{2,5})$")] | None = None
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png"] | None = None
    stream: Literal[False] | None = None
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    moderation: str | None = None
    output_compression: int | None = None
    safety_identifier: str | None = None
    user: str | None = None


class ImageData(BaseModel):
    url: str | None = None
    b64_json: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]


class VideoCreateRequest(BaseModel):
    """`POST /v1/videos`, as JSON or as the form OpenAI's SDK sends (so numbers may arrive as text)."""

    model_config = ConfigDict(extra="forbid")

    prompt: Prompt
    model: Model | None = Field(None, description="A provider (`animals`), or `provider/model`.")
    seconds: int = Field(4, ge=1, le=20, description="Clip length in seconds (1 to 20; OpenAI allows 4, 8, 12).")
    size: Annotated[str, StringConstraints(pattern=r"^\d{2,5}x\d{2,5}$")] = Field(
        "720x1280", description="WIDTHxHEIGHT; its shape picks the aspect ratio (9:16, 16:9 or 1:1)."
    )


class VideoError(BaseModel):
    code: str
    message: str


class Video(BaseModel):
    """OpenAI's video object; `id` is the job's id, so `GET /generations/{id}` shows the same job."""

    id: str
    object: Literal["video"] = "video"
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int
    model: str
    prompt: str | None
    seconds: str
    size: str
    created_at: int
    completed_at: int | None
    expires_at: int | None = None
    remixed_from_video_id: str | None = None
    error: VideoError | None


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Video]
    first_id: str | None
    last_id: str | None
    has_more: bool
