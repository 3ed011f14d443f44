"""A fake of OpenAI's Videos API (create, retrieve, content, delete), as the openai SDK's videos resource speaks it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fake_services.base import FakeService, RemoteJob, serve

STATUS = {"queued": "queued", "running": "in_progress", "ok": "completed", "failed": "failed", "policy": "failed"}
SECONDS, SIZES = ("4", "8", "12"), ("720x1280", "1280x720", "1024x1792", "1792x1024")


class FakeSora(FakeService):
    key = "sk-test"

    def __init__(self) -> None:
        super().__init__(auth=f"Bearer {self.key}")

    @staticmethod
    def error(status: int, message: str, code: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status)

    def denied(self) -> JSONResponse:
        return self.error(401, "Incorrect API key provided", "invalid_api_key")

    def missing(self) -> Response:
        return self.error(404, "Video not found", "not_found")

    def video(self, job: RemoteJob, state: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": job.id,
            "object": "video",
            "status": STATUS.get(state, state),
            "progress": {"queued": 0, "running": 50}.get(state, 100),
            "model": job.body["model"],
            "seconds": job.body["seconds"],
            "size": job.body["size"],
            "created_at": int(time.time()),
            "completed_at": None,
            "expires_at": None,
            "prompt": job.body["prompt"],
            "remixed_from_video_id": None,
            "error": None,
        }
        if state == "failed":
            body["error"] = {"code": "internal_error", "message": "Video generation failed"}
        elif state == "policy":
            body["error"] = {
                "code": "moderation_blocked",
                "message": "Your request was blocked by our moderation system.",
            }
        return body

    async def create(self, request: Request) -> Response:
        if (refused := self.refuse(request, "create")) is not None:
            return refused
        body = await request.json()
        if not body.get("prompt"):
            return self.error(400, "Missing required parameter: 'prompt'.", "missing_required_parameter")
        if body.get("seconds", "4") not in SECONDS or body.get("size", "720x1280") not in SIZES:
            return self.error(400, "Invalid value for 'seconds' or 'size'.", "invalid_value")
        body = {"model": "sora-2", "seconds": "4", "size": "720x1280", **body}
        job = self.new_job("video", body, 1)
        return JSONResponse(self.video(job, "queued"))

    async def retrieve(self, request: Request) -> Response:
        job = self.job_for(request, "poll")
        if isinstance(job, Response):
            return job
        return JSONResponse(self.video(job, self.advance(job)), headers={"openai-poll-after-ms": "50"})

    async def content(self, request: Request) -> Response:
        job = self.job_for(request, "file")  # unlike the others' result URLs, this one needs the key
        if isinstance(job, Response):
            return job
        if job.polls <= self.steps or self.hold or job.canceled:
            return self.error(404, "Video is not ready", "not_found")
        name = self.files(job)[0].rsplit("/", 1)[1]
        self.downloads.append(name)
        return Response(self.media[name][0], media_type="video/mp4")

    async def delete(self, request: Request) -> Response:
        job = self.job_for(request)
        if isinstance(job, Response):
            return job
        job.canceled = True
        self.cancels.append(job.id)
        return JSONResponse({"id": job.id, "object": "video.deleted", "deleted": True})


@contextmanager
def serve_sora() -> Iterator[FakeSora]:
    fake = FakeSora()
    routes = [
        Route("/v1/videos", fake.create, methods=["POST"]),
        Route("/v1/videos/{id}", fake.retrieve, methods=["GET"]),
        Route("/v1/videos/{id}", fake.delete, methods=["DELETE"]),
        Route("/v1/videos/{id}/content", fake.content, methods=["GET"]),
    ]
    with serve(fake, lambda: routes):
        yield fake
