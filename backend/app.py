"""The FastAPI application. The lifespan owns every resource: engine, providers, worker."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend import ops
from backend.accounts.auth import Authenticator, AuthMiddleware
from backend.accounts.limits import RateLimiter
from backend.accounts.repository import AccountRepository
from backend.chat import endpoints as chat_endpoints
from backend.chat.catalog import Catalog, load_catalog
from backend.chat.repository import ChatRepository
from backend.chat.results import ResultAppender
from backend.chat.service import ChatService, build_enhancer
from backend.config import Settings, load_settings
from backend.db import (
    WORKER_HOT_POOL_SIZE,
    WORKER_POOL_SIZE,
    close_pool,
    create_engine,
    create_pool,
    database_down,
    head_revision,
)
from backend.errors import PROBLEM_JSON, FieldError, Problem, unavailable, validation_problem
from backend.events import endpoints as events_endpoints
from backend.events.hub import EventHub
from backend.events.repository import EventRepository
from backend.events.webhooks import Deliverer
from backend.jobs import endpoints as jobs_endpoints
from backend.jobs.repository import JobRepository
from backend.jobs.service import JobService
from backend.logs import request_id_var
from backend.metrics import HTTP_REQUESTS, watch_loop_lag
from backend.notify import EVENTS_CHANNEL, Notifier
from backend.openai_compat import endpoints as openai_endpoints
from backend.openai_compat.errors import OpenAIErrorMiddleware
from backend.providers import Provider, build_providers, close_providers
from backend.providers import endpoints as providers_endpoints
from backend.signing import UrlSigner, shared_secret
from backend.storage import StorageUnavailable, build_storage
from backend.storage import endpoints as storage_endpoints
from backend.storage.signed import SignedUrlStorage
from backend.uploads import endpoints as uploads_endpoints
from backend.uploads.repository import UploadRepository
from backend.uploads.service import UploadService, sweep_forever
from backend.web import endpoints as web_endpoints
from backend.worker import Worker

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_FORM_TYPES = (b"multipart/form-data", b"application/x-www-form-urlencoded")


def create_app(settings: Settings | None = None, providers: dict[str, Provider] | None = None) -> FastAPI:
    """The app; `providers` replaces the ones settings would build (tests use fakes this way)."""
    settings = settings or load_settings()
    enabled = providers if providers is not None else build_providers(settings)
    catalog = Catalog.enabled(load_catalog(settings.model_catalog_file), enabled)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Writers on these connections leave NOTIFY to the notifier, after their commit.
        notifier = Notifier(settings.asyncpg_dsn)
        engine = create_engine(settings, notifies=True)
        pool = await create_pool(settings, settings.db_pool_size, notifies=True)
        repo = JobRepository(engine, pool, notifier=notifier)
        secret = settings.signing_secret
        signer = UrlSigner(secret.get_secret_value().encode() if secret else await shared_secret(pool))
        storage = build_storage(settings, signer)
        if settings.auth_required:
            storage = SignedUrlStorage(storage, signer, settings.signed_url_ttl)
        # The worker has pools of its own, so a flood of requests cannot starve it of connections.
        worker_engine = create_engine(settings, WORKER_POOL_SIZE, notifies=True) if settings.runs_worker else None
        worker_pool = await create_pool(settings, WORKER_HOT_POOL_SIZE, notifies=True) if settings.runs_worker else None
        worker = (
            Worker(
                JobRepository(
                    worker_engine, worker_pool, default_quota=settings.max_concurrent_jobs_per_key, notifier=notifier
                ),
                enabled,
                storage,
                settings,
            )
            if worker_engine
            else None
        )
        app.state.settings = settings
        app.state.engine = engine
        app.state.storage = storage
        app.state.signer = signer
        uploads = UploadService(UploadRepository(engine), storage, settings)
        app.state.uploads = uploads
        app.state.service = JobService(repo, enabled, settings, storage=storage, uploads=uploads)
        enhancer = build_enhancer(settings)
        app.state.chat = ChatService(ChatRepository(engine), catalog, enhancer, app.state.service, settings)
        chat_results = ResultAppender(app.state.chat, settings.chat_result_poll_interval)
        app.state.authenticator = Authenticator(AccountRepository(engine))
        app.state.limiter = RateLimiter(pool, settings)
        app.state.worker = worker
        app.state.head_revision = head_revision()
        # One LISTEN connection per process wakes every event stream it serves.
        hub = app.state.events = EventHub(EventRepository(engine), settings.asyncpg_dsn, notifier)
        lag_probe = asyncio.create_task(watch_loop_lag(), name="loop-lag")
        sweeper: asyncio.Task[None] | None = None
        # Webhooks go out from every process that runs jobs (replicas share the outbox).
        deliverer = Deliverer(EventRepository(engine), hub, storage, settings) if worker is not None else None
        if settings.serves_api:
            # Any event may be a chat job finishing: look for results now rather than at the next poll.
            hub.on_channel(EVENTS_CHANNEL, lambda _payload: chat_results.wake())
        # A ROLE=worker process serves no streams and no chats: the API tier does that. Its hub
        # still listens, to wake the delivery loop.
        if settings.serves_api or deliverer is not None:
            hub.start()
        notifier.start()
        if settings.serves_api:
            chat_results.start()
        if deliverer is not None:
            deliverer.start()
        if worker is not None:
            worker.start()
            sweeper = asyncio.create_task(sweep_forever(uploads), name="uploads-sweep")
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
                await asyncio.gather(sweeper, return_exceptions=True)
            if settings.serves_api:
                await chat_results.stop()
            await enhancer.aclose()
            if worker is not None:
                await worker.stop()
            if deliverer is not None:
                await deliverer.stop()
            await hub.stop()
            await notifier.stop()
            lag_probe.cancel()
            await close_providers(enabled)
            await storage.close()
            await engine.dispose()
            await close_pool(pool)
            if worker_engine is not None:
                await worker_engine.dispose()
            if worker_pool is not None:
                await close_pool(worker_pool)

    app = FastAPI(
        title=settings.app_name,
        version=settings.version,
        description="Submit image-generation jobs and poll them until their images are ready.",
        lifespan=lifespan,
        # Metrics are Prometheus's (/metrics). FastAPI's native OpenTelemetry, on by default, asked
        # os.environ and the global providers on every request: 4% of a POST's CPU for nothing.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # A worker has no API to describe: /docs and /openapi.json are 404 there like the rest.
        openapi_url="/openapi.json" if settings.serves_api else None,
    )
    app.state.settings = settings
    if settings.serves_api:
        app.include_router(jobs_endpoints.router)
        app.include_router(events_endpoints.router)
        app.include_router(storage_endpoints.router)
        app.include_router(chat_endpoints.router)
        app.include_router(uploads_endpoints.router)
        app.include_router(openai_endpoints.router)
        app.include_router(providers_endpoints.router)
        web_endpoints.mount(app)
    app.include_router(ops.router)  # every role: /healthz, /readyz, /metrics
    app.add_middleware(JsonBodyMiddleware, raw_body_paths=[uploads_endpoints.CONTENT_PATH])
    # Before the body is read: an unauthenticated request costs no more than its headers.
    app.add_middleware(AuthMiddleware, settings=settings)
    # Outside every middleware that may refuse a request, so /v1 refusals speak OpenAI's shape too.
    app.add_middleware(OpenAIErrorMiddleware)
    if settings.cors_origin_list:
        # Inside the request-id middleware, so preflights are logged and timed like any request,
        # and outside the body checks, so their 413/415 answers carry CORS headers too.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=list(HTTP_METHODS),
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID", "X-Request-ID"],
            expose_headers=["Location", "Retry-After", "Link", "Idempotent-Replayed", "X-Request-ID", "Allow"],
            max_age=600,
        )
    app.add_middleware(RequestContextMiddleware)  # outermost: it sees every request and answer
    _install_error_handlers(app)
    _document_limits(app, settings, sorted(enabled))
    return app


def _document_limits(app: FastAPI, settings: Settings, provider_names: list[str]) -> None:
    """Publish the limits that come from settings in the OpenAPI schema, so clients can see them."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            properties = schema["components"]["schemas"]["GenerationCreate"]["properties"]
            properties["numImages"]["maximum"] = settings.max_images_per_job
            properties["provider"]["anyOf"][0]["enum"] = provider_names
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def problem_response(problem: Problem) -> JSONResponse:
    return JSONResponse(problem.body(), problem.status, headers=problem.headers, media_type=PROBLEM_JSON)


def _install_error_handlers(app: FastAPI) -> None:
    async def on_problem(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(validation_problem([_field_error(e) for e in exc.errors()]))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400:
            # FastAPI's answer to a body it could not decode at all (e.g. invalid UTF-8).
            return problem_response(validation_problem([FieldError("body", "not valid UTF-8 JSON", "json_invalid")]))
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        detail = exc.detail if isinstance(exc.detail, str) else title
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first route that matched the path; list them all. A mounted
            # app (the static files) matches every method, so only the Allow it gave is true there.
            given = headers.get("Allow", "")
            allowed = _allowed_methods(app, request.scope) or [m.strip() for m in given.split(",") if m.strip()]
            headers["Allow"] = ", ".join(allowed)
            detail = f"{request.method} is not allowed here; use {' or '.join(allowed)}"
        return problem_response(Problem(exc.status_code, code, title, detail, headers=headers))

    async def on_database(_: Request, exc: Exception) -> JSONResponse:
        if database_down(exc):
            log.warning("database unavailable: %s", exc)
            return problem_response(unavailable("the database is unreachable; try again shortly"))
        log.exception("database error", exc_info=exc)
        return problem_response(Problem(500, "internal_error", "Internal error", "an unexpected error occurred"))

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback after this answer; the client gets none of it.
        if database_down(exc):
            return problem_response(unavailable("the database is unreachable; try again shortly"))
        return problem_response(Problem(500, "internal_error", "Internal error", "an unexpected error occurred"))

    async def on_storage(_: Request, exc: Exception) -> JSONResponse:
        log.warning("object store unavailable: %s", exc)
        return problem_response(
            Problem(
                503,
                StorageUnavailable.code,
                "Storage unavailable",
                "the object store is unreachable; try again shortly",
                headers={"Retry-After": "5"},
            )
        )

    app.add_exception_handler(Exception, on_unexpected)
    app.add_exception_handler(StorageUnavailable, on_storage)
    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    for exc_class in (SQLAlchemyError, OSError, ConnectionError):
        app.add_exception_handler(exc_class, on_database)


def _allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """The methods some route answers at this path.

    Routes from `include_router` are grouped behind wrappers whose inner routes are private, so
    ask every top-level route the public question instead: would this method match in full?
    """
    return [
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**scope, "method": method})[0] == Match.FULL
            for route in app.router.routes
            if not isinstance(route, Mount)
        )
    ]


def _field_error(error: Any) -> FieldError:
    loc = [str(part) for part in error.get("loc", ())]
    where, path = (loc[0], loc[1:]) if loc else ("body", [])
    if error.get("type") == "json_invalid":
        return FieldError(
            "body", f"not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})", "json_invalid"
        )
    if where == "body" and not path:
        message = "a JSON object body is required" if error.get("type") == "missing" else error.get("msg", "")
        return FieldError("body", message, str(error.get("type", "invalid")))
    field = ".".join(path) or where
    if where == "header":
        field = field.title()
    return FieldError(field, str(error.get("msg", "invalid")), str(error.get("type", "invalid")))


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("backend.access")


class RequestContextMiddleware:
    """Give every request an id (X-Request-ID, echoed back), log one line for it, and time it.

    Latency is recorded by route template (`/generations/{job_id}`), never by raw path,
    so metrics stay bounded whatever ids clients send.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "<unmatched>")
            HTTP_REQUESTS.labels(scope["method"], route, str(status)).observe(elapsed)
            access_log.info(
                "%s %s %d %.1fms",
                scope["method"],
                scope["path"],
                status,
                elapsed * 1000,
                extra={"status": status, "duration_ms": round(elapsed * 1000, 2)},
            )
            request_id_var.reset(token)


class JsonBodyMiddleware:
    """Refuse oversized (413) and non-JSON (415) bodies before anything parses them."""

    def __init__(self, app: ASGIApp, raw_body_paths: Sequence[re.Pattern[str]] = ()) -> None:
        self.app = app
        # Routes that take other bodies (upload bytes) and bound them themselves: one regex.
        self.raw_body = re.compile("|".join(f"(?:{p.pattern})" for p in raw_body_paths)) if raw_body_paths else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("POST", "PUT", "PATCH")
            or (self.raw_body is not None and self.raw_body.match(scope["path"]))
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await _reject(scope, receive, send, _too_large())
            return
        # Bodies here are small: read it whole (bounded), then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await _reject(scope, receive, send, _too_large())
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        json_body = content_type == b"application/json" or content_type.endswith(b"+json")
        # OpenAI's SDKs send some /v1 requests (videos) as forms; those routes parse forms themselves.
        form_body = content_type in _FORM_TYPES and scope["path"].startswith("/v1/")
        if body and not (json_body or form_body):
            problem = Problem(
                415,
                "unsupported_media_type",
                "Unsupported media type",
                f"send the body as application/json, not {content_type.decode('latin-1') or 'no content type'}",
            )
            await _reject(scope, receive, send, problem)
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _too_large() -> Problem:
    return Problem(413, "body_too_large", "Body too large", f"the request body exceeds {MAX_BODY_BYTES} bytes")


async def _reject(scope: Scope, receive: Receive, send: Send, problem: Problem) -> None:
    await problem_response(problem)(scope, receive, send)
