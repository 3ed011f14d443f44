"""A fake of fal's queue API (submit, status, result, PUT cancel), as docs.fal.ai describes it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fake_services.base import FakeService, serve


class FakeFal(FakeService):
    key = "fal-key-id:fal-key-secret"

    def __init__(self) -> None:
        super().__init__(auth=f"Key {self.key}")

    def missing(self) -> Response:
        return JSONResponse({"detail": "Request not found"}, 404)

    def denied(self) -> JSONResponse:
        return JSONResponse({"detail": "Invalid API key", "error_type": "authentication_error"}, 401)

    def urls(self, owner: str, app: str, request_id: str) -> dict[str, str]:
        # Status, result and cancel URLs use only owner/app of the model id.
        base = f"{self.url}/{owner}/{app}/requests/{request_id}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    async def submit(self, request: Request) -> Response:
        if (refused := self.refuse(request, "create")) is not None:
            return refused
        path = request.path_params["model"]
        owner, app = path.split("/")[:2]
        body = await request.json()  # the model input, not wrapped
        kind = "video" if "duration" in body else "image"
        job = self.new_job(kind, {"model": path, **body}, body.get("num_images", 1))
        return JSONResponse(
            {"status": "IN_QUEUE", "request_id": job.id, "queue_position": 0, **self.urls(owner, app, job.id)}
        )

    async def status(self, request: Request) -> Response:
        job = self.job_for(request, "poll")
        if isinstance(job, Response):
            return job
        state = self.advance(job)
        if state == "queued":
            return JSONResponse({"status": "IN_QUEUE", "queue_position": 0, "request_id": job.id}, 202)
        if state == "running":
            return JSONResponse({"status": "IN_PROGRESS", "logs": [], "request_id": job.id}, 202)
        return JSONResponse({"status": "COMPLETED", "logs": [], "metrics": {"inference_time": 1.2}})

    async def result(self, request: Request) -> Response:
        job = self.job_for(request, "result")
        if isinstance(job, Response):
            return job
        if job.polls <= self.steps or self.hold:
            return JSONResponse({"detail": "Request is still in progress"}, 400)
        if job.canceled:
            return JSONResponse({"detail": "Request was cancelled"}, 400)
        if self.outcome == "policy":
            detail = [{"loc": ["body", "prompt"], "msg": "The content could not be processed.",
                       "type": "content_policy_violation"}]  # fmt: skip
            return JSONResponse({"detail": detail}, 422, headers={"X-Fal-Retryable": "false"})
        if self.outcome == "failed":
            return JSONResponse({"detail": "Internal server error"}, 500, headers={"X-Fal-Retryable": "true"})
        files = self.files(job)
        if job.kind == "video":
            return JSONResponse({"video": {"url": files[0], "content_type": "video/mp4", "file_name": "out.mp4"}})
        images = [{"url": url, "content_type": "image/png", "width": 256, "height": 256} for url in files]
        return JSONResponse({"images": images, "seed": 1, "has_nsfw_concepts": [False] * len(images)})

    async def cancel(self, request: Request) -> Response:
        job = self.job_for(request)
        if isinstance(job, Response):
            return job
        if job.polls > self.steps and not self.hold:
            return JSONResponse({"status": "ALREADY_COMPLETED"}, 400)
        job.canceled = True
        self.cancels.append(job.id)
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, 202)

    async def wrong_method(self, request: Request) -> Response:
        return JSONResponse({"detail": "Method Not Allowed"}, 405)


@contextmanager
def serve_fal() -> Iterator[FakeFal]:
    fake = FakeFal()
    routes = [
        Route("/{owner}/{app}/requests/{id}/status", fake.status, methods=["GET"]),
        Route("/{owner}/{app}/requests/{id}/cancel", fake.cancel, methods=["PUT"]),
        Route("/{owner}/{app}/requests/{id}/cancel", fake.wrong_method, methods=["POST"]),
        Route("/{owner}/{app}/requests/{id}", fake.result, methods=["GET"]),
        Route("/{model:path}", fake.submit, methods=["POST"]),
    ]
    with serve(fake, lambda: routes):
        yield fake
