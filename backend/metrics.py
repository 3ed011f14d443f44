"""Prometheus metrics. One process serves one replica, so the default registry is enough."""

from __future__ import annotations

import asyncio

from prometheus_client import Counter, Gauge, Histogram

JOBS_CREATED = Counter("generation_jobs_created", "Jobs accepted", ["provider"])
JOBS_COMPLETED = Counter("generation_jobs_completed", "Jobs completed", ["provider"])
JOBS_FAILED = Counter("generation_jobs_failed", "Jobs failed for good", ["provider", "code"])
JOBS_CANCELED = Counter("generation_jobs_canceled", "Jobs canceled by a client", ["provider"])
JOBS_RETRIED = Counter("generation_jobs_retried", "Attempts that failed and were scheduled again", ["provider", "code"])
JOBS_RECLAIMED = Counter("generation_jobs_reclaimed", "Jobs taken back from a worker whose lease expired")
QUEUE_DEPTH = Gauge("generation_jobs_queue_depth", "Live jobs by status, read from the database", ["status"])
JOBS_IN_FLIGHT = Gauge("generation_worker_jobs_in_flight", "Jobs this process is running now")
SLOTS_IN_USE = Gauge(
    "generation_worker_slots_in_use", "Provider calls in flight here, of WORKER_CONCURRENCY (a full house stops claims)"
)
JOBS_WAITING_FOR_STORAGE = Gauge(
    "generation_worker_jobs_waiting_for_storage",
    "Jobs here whose output or input waits for the object store to come back (STORAGE_WAIT_SECONDS)",
)
CLAIM_BATCH = Histogram(
    "generation_worker_claim_batch_size",
    "Jobs one claim statement returned",
    buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128),
)
CLAIM_LATENCY = Histogram(
    "generation_jobs_claim_latency_seconds",
    "From a job becoming due to a worker claiming it",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
JOB_DURATION = Histogram(
    "generation_jobs_duration_seconds",
    "One attempt of a job, from claim to its outcome",
    ["provider", "outcome"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
HTTP_REQUESTS = Histogram(
    "http_request_duration_seconds",
    "HTTP requests by route template",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

LOOP_LAG = Gauge("generation_event_loop_lag_seconds", "How late the last event-loop probe woke up")
LOOP_LAG_SECONDS = Histogram(
    "generation_event_loop_probe_lag_seconds",
    "How late each event-loop probe woke up: how long any callback (HTTP or worker) waited its turn",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LOOP_LAG_INTERVAL = 0.25


async def watch_loop_lag(interval: float = LOOP_LAG_INTERVAL) -> None:
    """Sleep `interval` again and again, recording how much later than asked each wake-up came.

    One timer per interval is all it costs. A lag that grows means callbacks queue behind each
    other: the worker's next claim waits as long as this probe does.
    """
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + interval
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - asked)
        LOOP_LAG.set(lag)
        LOOP_LAG_SECONDS.observe(lag)
