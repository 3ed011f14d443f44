"""The HTTP API as the command line uses it: JSON calls, problem+json errors, and a job's SSE stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

TERMINAL_EVENTS = frozenset({"job.completed", "job.failed", "job.canceled"})
FINISHED = frozenset({"completed", "failed", "canceled"})
# Heartbeats come every SSE_HEARTBEAT_SECONDS (15 by default); silence for this long means a dead link.
STREAM_READ_TIMEOUT = 60.0
RECONNECTS = 5

Job = dict[str, Any]


@dataclass
class ApiError(Exception):
    """An answer other than 2xx, or no answer at all (status 0)."""

    status: int
    code: str
    detail: str
    fields: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.detail


class Api:
    def __init__(self, server: str, api_key: str | None, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def create(self, body: dict[str, Any]) -> Job:
        return self._call("POST", "/generations", json=body)  # type: ignore[no-any-return]

    def get(self, job_id: str) -> Job:
        return self._call("GET", f"/generations/{job_id}")  # type: ignore[no-any-return]

    def list(self, limit: int, status: str | None) -> list[Job]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return self._call("GET", "/generations", params=params)  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> Job:
        return self._call("POST", f"/generations/{job_id}/cancel")  # type: ignore[no-any-return]

    def download(self, url: str) -> bytes:
        # Our own output URLs carry their signature; the key goes only to our own server.
        same_origin = httpx.URL(url).join("/") == httpx.URL(self.server).join("/")
        client = self.http if same_origin else httpx.Client(timeout=self.http.timeout)
        try:
            response = self._send(client, "GET", url)
        finally:
            if client is not self.http:
                client.close()
        return response.content

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job's events, replayed then live, until its terminal one.

        A dropped stream is resumed with Last-Event-ID, so no event is seen twice or missed.
        """
        last_id: str | None = None
        failures = 0
        timeout = httpx.Timeout(self.http.timeout.connect, read=STREAM_READ_TIMEOUT)
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with connect_sse(
                    self.http, "GET", f"/generations/{job_id}/events", headers=headers, timeout=timeout
                ) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                        raise _error(source.response)
                    for message in source.iter_sse():
                        if not message.data:
                            continue
                        last_id = message.id or last_id
                        failures = 0
                        event: dict[str, Any] = json.loads(message.data)
                        yield event
                        if event.get("type") in TERMINAL_EVENTS:
                            return
            except (httpx.TransportError, SSEError) as exc:
                failures += 1
                if failures > RECONNECTS:
                    raise ApiError(0, "stream_lost", f"lost the event stream of job {job_id}: {exc}") from None
            else:
                failures += 1  # the server closed the stream early (a restart): resume it
                if failures > RECONNECTS:
                    raise ApiError(0, "stream_lost", f"the event stream of job {job_id} keeps closing early")
            time.sleep(min(0.2 * 2**failures, 5.0))

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(self.http, method, path, **kwargs).json()

    def _send(self, client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(0, "unreachable", f"cannot reach {self.server}: {exc or type(exc).__name__}") from None
        if response.status_code >= 400:
            raise _error(response)
        return response


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = str(body.get("detail") or body.get("title") or f"HTTP {response.status_code}")
    fields = [str(e.get("field")) for e in body.get("errors") or [] if isinstance(e, dict)]
    return ApiError(response.status_code, str(body.get("code") or "http_error"), detail, fields)
