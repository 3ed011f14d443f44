"""A fake of the Higgsfield platform API (submit, status, cancel while queued), as docs.higgsfield.ai describes it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fake_services.base import FakeService, RemoteJob, serve

STATUS = {"queued": "queued", "running": "in_progress", "ok": "completed", "failed": "failed", "policy": "nsfw"}


class FakeHiggsfield(FakeService):
    key, secret = "hf-key", "hf-secret"

    def __init__(self) -> None:
        super().__init__(auth=f"Key {self.key}:{self.secret}")

    def missing(self) -> Response:
        return JSONResponse({"detail": "Request not found"}, 404)

    def denied(self) -> JSONResponse:
        return JSONResponse({"detail": "Invalid credentials"}, 401)

    def answer(self, job: RemoteJob, state: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": STATUS.get(state, state),
            "request_id": job.id,
            "status_url": f"{self.url}/requests/{job.id}/status",
            "cancel_url": f"{self.url}/requests/{job.id}/cancel",
        }
        if state == "ok":
            files = self.files(job)
            if job.kind == "video":
                body["video"] = {"url": files[0]}
            else:
                body["images"] = [{"url": url} for url in files]
        elif state == "failed":
            body["error"] = "generation failed"
        return body

    async def submit(self, request: Request) -> Response:
        if (refused := self.refuse(request, "create")) is not None:
            return refused
        body = await request.json()
        kind = "video" if "duration" in body else "image"
        job = self.new_job(kind, {"model": request.path_params["model"], **body}, body.get("batch_size", 1))
        return JSONResponse(self.answer(job, "queued"))

    async def status(self, request: Request) -> Response:
        job = self.job_for(request, "poll")
        if isinstance(job, Response):
            return job
        return JSONResponse(self.answer(job, self.advance(job)))

    async def cancel(self, request: Request) -> Response:
        job = self.job_for(request)
        if isinstance(job, Response):
            return job
        # Only a request that has not started can be canceled. The fake holds its jobs queued.
        if job.polls > 1 and not self.hold:
            return JSONResponse({"detail": "Request is already being processed"}, 400)
        job.canceled = True
        self.cancels.append(job.id)
        return JSONResponse({"status": "canceled"}, 202)


@contextmanager
def serve_higgsfield() -> Iterator[FakeHiggsfield]:
    fake = FakeHiggsfield()
    routes = [
        Route("/requests/{id}/status", fake.status, methods=["GET"]),
        Route("/requests/{id}/cancel", fake.cancel, methods=["POST"]),
        Route("/{model:path}", fake.submit, methods=["POST"]),
    ]
    with serve(fake, lambda: routes):
        yield fake
