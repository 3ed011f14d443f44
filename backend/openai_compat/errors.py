"""OpenAI's error shape under /v1: every problem+json answer there is rewritten on its way out.

The rest of the app (auth, rate limits, body checks, validation, 404s) answers problem+json
whoever raised it; a middleware rather than per-route handlers is what catches them all,
including the ones raised before a /v1 route runs.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.errors import PROBLEM_JSON

PREFIX = "/v1/"

# OpenAI validates parameters with 400, not 422; its SDKs raise BadRequestError for it.
_STATUS = {422: 400}
# OpenAI's `type` values (its SDKs expose them as APIError.type).
_TYPES = {401: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable_error"}
# OpenAI's codes where its clients branch on them; every bad key (missing, malformed, unknown,
# revoked) is its `invalid_api_key`, and the message still says which.
_CODES = {"rate_limited": "rate_limit_exceeded"}
# OpenAI's SDKs retry 408, 409, 429 and 5xx by default; a retried POST here would create another job,
# so only answers that are worth repeating (limits, a database blip) leave the SDK free to retry.
_RETRYABLE = frozenset({429, 503})


def error_body(status: int, message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = "invalid_api_key" if status == 401 else _CODES.get(code or "", code)
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


def _translate(status: int, problem: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    errors = problem.get("errors") or []
    param = errors[0].get("field") if errors else None
    message = str(problem.get("detail") or problem.get("title") or "error")
    return _STATUS.get(status, status), error_body(status, message, problem.get("code"), param)


class OpenAIErrorMiddleware:
    """Under /v1, turn problem+json into `{"error": {"message", "type", "code", "param"}}`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"] + "/").startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def rewrite(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if content_type.startswith(PROBLEM_JSON.encode()):
                    start = message  # held back until the whole (small) problem body is here
                    return
                if message["status"] >= 400:
                    message["headers"] = [*message.get("headers", []), *_no_retry(message["status"])]
            elif start is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                status, body = _translate(start["status"], json.loads(b"".join(chunks)))
                encoded = json.dumps(body).encode()
                kept = [(k, v) for k, v in start.get("headers", []) if k not in (b"content-type", b"content-length")]
                headers = [
                    *kept,
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(encoded)).encode()),
                    *_no_retry(status),
                ]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": encoded})
                return
            await send(message)

        await self.app(scope, receive, rewrite)


def _no_retry(status: int) -> list[tuple[bytes, bytes]]:
    return [] if status in _RETRYABLE else [(b"x-should-retry", b"false")]
