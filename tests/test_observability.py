"""Metrics, request ids, structured logs, and the remote debugger."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend.embedded_pg import free_port
from backend.logs import ConsoleFormatter, JsonFormatter, request_id_var
from backend.providers import GeneratedImage, GenerationSpec
from backend.providers.animals import render
from tests.conftest import AppFactory, wait_for_status
from tests.processes import kill_all, start_service


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.usefixtures("engine")
async def test_metrics_count_jobs_and_requests(make_client: AppFactory) -> None:
    client = await make_client()
    before = samples((await client.get("/metrics")).text)

    job = (await client.post("/generations", json={"numImages": 2})).json()
    await wait_for_status(client, job["jobId"], {"completed"})
    await client.post(f"/generations/{job['jobId']}/cancel")  # 409: counted as a request, not a cancel
    response = await client.get("/metrics")
    after = samples(response.text)

    assert response.headers["content-type"].startswith("text/plain")
    delta = {
        name: value(after, name, **labels) - value(before, name, **labels)
        for name, labels in [
            ("generation_jobs_created_total", {"provider": "animals"}),
            ("generation_jobs_completed_total", {"provider": "animals"}),
            ("generation_jobs_canceled_total", {"provider": "animals"}),
            ("generation_jobs_duration_seconds_count", {"provider": "animals", "outcome": "completed"}),
            ("generation_jobs_claim_latency_seconds_count", {}),
        ]
    }
    assert delta == {
        "generation_jobs_created_total": 1,
        "generation_jobs_completed_total": 1,
        "generation_jobs_canceled_total": 0,
        "generation_jobs_duration_seconds_count": 1,
        "generation_jobs_claim_latency_seconds_count": 1,
    }
    # Requests are labelled by route template, never by the raw path with its id.
    route = {"method": "POST", "route": "/generations/{job_id}/cancel", "status": "409"}
    assert value(after, "http_request_duration_seconds_count", **route) >= 1
    assert not any(job["jobId"] in dict(labels).get("route", "") for _, labels in after)


@pytest.mark.usefixtures("engine")
async def test_queue_depth_is_read_from_the_database(make_client: AppFactory) -> None:
    client = await make_client(worker_enabled=False)
    for _ in range(3):
        await client.post("/generations", json={"numImages": 1})

    metrics = samples((await client.get("/metrics")).text)

    assert value(metrics, "generation_jobs_queue_depth", status="pending") == 3
    assert value(metrics, "generation_jobs_queue_depth", status="processing") == 0


@pytest.mark.usefixtures("engine")
async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"X-Request-ID": "trace-123"})
    made = await client.get("/healthz")
    hostile = await client.get("/healthz", headers={"X-Request-ID": "x\x7f" + "y" * 200})

    assert given.headers["x-request-id"] == "trace-123"
    assert len(made.headers["x-request-id"]) == 32
    assert hostile.headers["x-request-id"] != "x\x7f" + "y" * 200


def record(message: str, **extra: Any) -> logging.LogRecord:
    entry = logging.LogRecord("backend.worker", logging.INFO, __file__, 1, message, (), None)
    entry.__dict__.update(extra)
    return entry


def test_log_formats_carry_context() -> None:
    token = request_id_var.set("req-1")
    try:
        from backend.logs import ContextFilter

        entry = record("job done", job_id="j-1")
        ContextFilter().filter(entry)
    finally:
        request_id_var.reset(token)

    as_json = json.loads(JsonFormatter().format(entry))
    console = ConsoleFormatter().format(entry)

    assert as_json["msg"] == "job done" and as_json["level"] == "info"
    assert as_json["job_id"] == "j-1" and as_json["request_id"] == "req-1"
    assert "job done" in console and "job_id=j-1" in console and "request_id=req-1" in console


@pytest.mark.slow
def test_service_writes_json_logs_with_request_and_job_ids(tmp_path: Path) -> None:
    service = start_service(tmp_path / "svc", {"LOG_FORMAT": "json"})
    try:
        service.wait_ready()
        with httpx.Client(base_url=service.url, timeout=10) as client:
            response = client.post("/generations", json={"numImages": 1}, headers={"X-Request-ID": "abc-42"})
            job_id = response.json()["jobId"]
            deadline = time.monotonic() + 10
            while client.get(f"/generations/{job_id}").json()["status"] != "completed":
                assert time.monotonic() < deadline
                time.sleep(0.02)
    finally:
        kill_all(service)

    lines = [json.loads(line) for line in service.output().splitlines() if line.startswith("{")]
    assert lines, service.output()
    access = [entry for entry in lines if entry.get("request_id") == "abc-42"]
    assert any(entry["logger"] == "backend.access" and entry["status"] == 202 for entry in access)
    assert any(entry.get("job_id") == job_id and "completed" in entry["msg"] for entry in lines)


def dap_initialize(port: int, timeout: float = 30) -> dict[str, Any]:
    """Send a Debug Adapter Protocol `initialize` request and return its response."""
    request = json.dumps(
        {
            "seq": 1,
            "type": "request",
            "command": "initialize",
            "arguments": {"adapterID": "debugpy", "clientID": "test"},
        }
    ).encode()
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"Content-Length: %d\r\n\r\n" % len(request) + request)
        buffer = b""
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            assert chunk, "the debug adapter closed the connection"
            buffer += chunk
            while b"\r\n\r\n" in buffer:
                header, rest = buffer.split(b"\r\n\r\n", 1)
                length = int(header.split(b":")[1])
                if len(rest) < length:
                    break
                message: dict[str, Any] = json.loads(rest[:length])
                buffer = rest[length:]
                if message.get("type") == "response" and message.get("command") == "initialize":
                    return message
    raise AssertionError("no initialize response")


@pytest.mark.slow
def test_debugger_answers_a_dap_handshake_when_enabled(tmp_path: Path) -> None:
    port = free_port()
    service = start_service(tmp_path / "svc", {"DEBUGPY_ENABLED": "true", "DEBUGPY_PORT": str(port)})
    try:
        service.wait_ready()
        response = dap_initialize(port)
    finally:
        kill_all(service)

    assert response["success"] is True
    assert response["body"]["supportsConfigurationDoneRequest"] is True
    assert f"debugpy is listening on 127.0.0.1:{port}" in service.output()


@pytest.mark.slow
def test_debugger_is_off_by_default(tmp_path: Path) -> None:
    port = free_port()
    service = start_service(tmp_path / "svc", {"DEBUGPY_PORT": str(port)})
    try:
        service.wait_ready()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        kill_all(service)
    assert "debugpy" not in service.output()


@pytest.mark.usefixtures("engine")
async def test_metrics_show_slots_in_use_claim_batches_and_loop_lag(make_client: AppFactory) -> None:
    release = asyncio.Event()
    gated = GatedProvider(release)
    client = await make_client({"gated": gated}, default_provider="gated", worker_concurrency=2)
    before = samples((await client.get("/metrics")).text)
    jobs = [(await client.post("/generations", json={"numImages": 1})).json() for _ in range(3)]

    async def two_slots_busy() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        while True:
            metrics = samples((await client.get("/metrics")).text)
            if value(metrics, "generation_worker_slots_in_use") == 2:
                return metrics
            await asyncio.sleep(0.02)

    busy = await asyncio.wait_for(two_slots_busy(), 10)
    release.set()
    for job in jobs:
        await wait_for_status(client, job["jobId"], {"completed"})
    after = samples((await client.get("/metrics")).text)

    assert value(busy, "generation_worker_jobs_in_flight") == 2  # the third job waits for a slot
    assert value(after, "generation_worker_slots_in_use") == 0
    claimed = value(after, "generation_worker_claim_batch_size_sum") - value(
        before, "generation_worker_claim_batch_size_sum"
    )
    assert claimed == 3

    async def probed() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        while True:  # the probe wakes four times a second
            metrics = samples((await client.get("/metrics")).text)
            if value(metrics, "generation_event_loop_probe_lag_seconds_count") >= 1:
                return metrics
            await asyncio.sleep(0.05)

    lag = await asyncio.wait_for(probed(), 10)
    assert 0 <= value(lag, "generation_event_loop_lag_seconds") < 5


@dataclass
class GatedProvider:
    """Holds every job until the test opens the gate."""

    gate: asyncio.Event
    name: str = "gated"
    seconds_per_image: float = 0.0

    async def generate(self, spec: GenerationSpec) -> AsyncIterator[GeneratedImage]:
        await self.gate.wait()
        yield GeneratedImage(render("owl", spec.prompt, f"{spec.job_id}/0", 0), "image/png", "owl")
