"""A fake of Replicate's predictions API (create by model, poll, cancel), as replicate.com/docs describes it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fake_services.base import FakeService, RemoteJob, serve

STATUS = {"queued": "starting", "running": "processing", "ok": "succeeded", "failed": "failed", "policy": "failed"}


class FakeReplicate(FakeService):
    token = "r8_test"

    def __init__(self) -> None:
        super().__init__(auth=f"Bearer {self.token}")

    def problem(self, status: int, title: str, detail: str) -> JSONResponse:
        # Replicate's errors are RFC 7807 problem details.
        return JSONResponse({"title": title, "detail": detail, "status": status}, status)

    def denied(self) -> Response:
        return self.problem(401, "Unauthenticated", "You did not pass a valid authentication token")

    def missing(self) -> Response:
        return self.problem(404, "Not found", "The requested resource could not be found.")

    def authorized(self, request: Request) -> bool:
        # The docs use "Bearer", the Python client "Token"; the service takes both.
        return request.headers.get("authorization") in (f"Bearer {self.token}", f"Token {self.token}")

    def prediction(self, job: RemoteJob, status: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": job.id,
            "model": job.body["model"],
            "version": "hidden",
            "input": job.body["input"],
            "logs": "",
            "output": None,
            "error": None,
            "status": STATUS.get(status, status),
            "data_removed": False,
            "created_at": "2026-11-23T10:00:00.000Z",
            "urls": {
                "get": f"{self.url}/v1/predictions/{job.id}",
                "cancel": f"{self.url}/v1/predictions/{job.id}/cancel",
                "web": f"https://replicate.com/p/{job.id}",
            },
        }
        if status == "ok":
            files = self.files(job)
            body["output"] = files[0] if job.kind == "video" else files  # video models answer one URL
        elif status == "failed":
            body["error"] = "CUDA out of memory"
        elif status == "policy":
            body["error"] = "NSFW content detected. Your input or output was flagged as sensitive (E005)"
        return body

    async def create(self, request: Request) -> Response:
        if (refused := self.refuse(request, "create")) is not None:
            return refused
        body = await request.json()
        if not isinstance(body.get("input"), dict):
            return self.problem(422, "Input validation failed", "input is required")
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        model_input = body["input"]
        kind = "video" if "duration" in model_input else "image"
        job = self.new_job(kind, {"model": model, "input": model_input}, model_input.get("num_outputs", 1))
        return JSONResponse(self.prediction(job, "queued"), 201)

    async def get(self, request: Request) -> Response:
        job = self.job_for(request, "poll")
        if isinstance(job, Response):
            return job
        return JSONResponse(self.prediction(job, self.advance(job)))

    async def cancel(self, request: Request) -> Response:
        job = self.job_for(request)
        if isinstance(job, Response):
            return job
        job.canceled = True
        self.cancels.append(job.id)
        return JSONResponse(self.prediction(job, "canceled"))


@contextmanager
def serve_replicate() -> Iterator[FakeReplicate]:
    fake = FakeReplicate()
    routes = [
        Route("/v1/models/{owner}/{name}/predictions", fake.create, methods=["POST"]),
        Route("/v1/predictions/{id}", fake.get, methods=["GET"]),
        Route("/v1/predictions/{id}/cancel", fake.cancel, methods=["POST"]),
    ]
    with serve(fake, lambda: routes):
        yield fake
