"""Prometheus metrics. One process serves one replica, so the default registry is enough."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS_CREATED = Counter("generation_jobs_created", "Jobs accepted", ["provider"])
JOBS_COMPLETED = Counter("generation_jobs_completed", "Jobs completed", ["provider"])
JOBS_FAILED = Counter("generation_jobs_failed", "Jobs failed for good", ["provider", "code"])
JOBS_CANCELED = Counter("generation_jobs_canceled", "Jobs canceled by a client", ["provider"])
JOBS_RETRIED = Counter("generation_jobs_retried", "Attempts that failed and were scheduled again", ["provider", "code"])
JOBS_RECLAIMED = Counter("generation_jobs_reclaimed", "Jobs taken back from a worker whose lease expired")
QUEUE_DEPTH = Gauge("generation_jobs_queue_depth", "Live jobs by status, read from the database", ["status"])
JOBS_IN_FLIGHT = Gauge("generation_worker_jobs_in_flight", "Jobs this process is running now")
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
