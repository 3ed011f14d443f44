"""What every fake service shares: remote jobs that advance one step per poll, scripted failures, media files.

A fake runs uvicorn in a thread of the test process, so a test can kill the real service
process (our app) while the fake keeps its state: how many remote jobs were created, polled,
canceled. Written from each service's documentation (see backend/providers/README.md).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backend.embedded_pg import free_port
from backend.providers.animals import render
from backend.providers.animation import render_video


@dataclass
class Failure:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RemoteJob:
    id: str
    kind: str
    body: dict[str, Any]
    outputs: int
    polls: int = 0
    canceled: bool = False


@dataclass
class FakeService:
    """State and knobs; each service module adds the routes that speak its protocol."""

    auth: str
    # Polls a job answers "still running" before it completes; `hold` keeps it running until cleared.
    steps: int = 2
    hold: bool = False
    # "ok", "failed" or "policy": how a remote job ends.
    outcome: str = "ok"
    jobs: dict[str, RemoteJob] = field(default_factory=dict)
    creates: list[dict[str, Any]] = field(default_factory=list)
    polls: list[tuple[float, str]] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    create_times: list[float] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    failures: dict[str, deque[Failure]] = field(default_factory=lambda: defaultdict(deque))
    failed_at: list[tuple[float, str]] = field(default_factory=list)
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, route: str, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """The next call to `route` ("create", "poll", "result", "cancel", "file") answers this."""
        self.failures[route].append(Failure(status, body, headers or {}))

    def injected(self, route: str) -> Response | None:
        queue = self.failures[route]
        if not queue:
            return None
        failure = queue.popleft()
        self.failed_at.append((time.monotonic(), route))
        return JSONResponse(failure.body, failure.status, headers=failure.headers)

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == self.auth

    def denied(self) -> Response:
        return JSONResponse({"detail": "Unauthorized"}, 401)

    def missing(self) -> Response:
        return JSONResponse({"detail": "Not found"}, 404)

    def refuse(self, request: Request, route: str | None = None) -> Response | None:
        """The answer for a call without our credentials, or the failure scripted for `route`."""
        if not self.authorized(request):
            return self.denied()
        return self.injected(route) if route else None

    def job_for(self, request: Request, route: str | None = None) -> RemoteJob | Response:
        """The remote job a call names, or the answer that refuses the call."""
        if (refused := self.refuse(request, route)) is not None:
            return refused
        job = self.jobs.get(request.path_params["id"])
        return self.missing() if job is None else job

    def new_job(self, kind: str, body: dict[str, Any], outputs: int) -> RemoteJob:
        with self.lock:
            job = RemoteJob(str(uuid.uuid4()), kind, body, outputs)
            self.jobs[job.id] = job
            self.creates.append(body)
            self.create_times.append(time.monotonic())
            return job

    def advance(self, job: RemoteJob) -> str:
        """One poll: "queued", "running", or how it ended ("ok", "failed", "policy", "canceled")."""
        with self.lock:
            job.polls += 1
            self.polls.append((time.monotonic(), job.id))
            if job.canceled:
                return "canceled"
            if self.hold or job.polls <= self.steps:
                return "queued" if job.polls == 1 else "running"
            return self.outcome

    def files(self, job: RemoteJob) -> list[str]:
        """URLs of the job's results, rendered once and served by `/files/…` without auth."""
        names = []
        for index in range(job.outputs):
            if job.kind == "video":
                name = f"{job.id}-{index}.mp4"
                if name not in self.media:
                    self.media[name] = (render_video("owl", "remote", job.id, 1, "16:9"), "video/mp4")
            else:
                name = f"{job.id}-{index}.png"
                if name not in self.media:
                    self.media[name] = (render("owl", "remote", f"{job.id}/{index}", index), "image/png")
            names.append(f"{self.url}/files/{name}")
        return names

    async def serve_file(self, request: Request) -> Response:
        if (failure := self.injected("file")) is not None:
            return failure
        name = request.path_params["name"]
        self.downloads.append(name)
        if name not in self.media:
            return JSONResponse({"detail": "not found"}, 404)
        data, content_type = self.media[name]
        return Response(data, media_type=content_type)

    def routes(self) -> list[Route]:
        return [Route("/files/{name}", self.serve_file)]


@contextmanager
def serve(fake: FakeService, routes: Callable[[], list[Route]]) -> Iterator[None]:
    """Run the fake's app on 127.0.0.1 in a thread until the block ends."""
    port = free_port()
    fake.url = f"http://127.0.0.1:{port}"
    app = Starlette(routes=[*routes(), *fake.routes()])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "fake service did not start"
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)
