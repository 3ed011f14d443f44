"""How much work each figure does: quick (default, < 10 minutes) or full (`--full`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    repetitions: int
    load_seconds: float  # each timed HTTP or asyncpg load run, after a 1 s warm-up
    pickup_jobs: int  # probes per idle pickup repetition
    drain_jobs: int
    procrastinate_jobs: int
    growth_small: int
    growth_large: int
    growth_requests: int  # sequential requests (or claims) per growth measurement
    memory_jobs: int
    recommended_processes: int = 2


QUICK = Profile(
    name="quick",
    repetitions=3,
    load_seconds=4.0,
    pickup_jobs=500,
    drain_jobs=10_000,
    procrastinate_jobs=3_000,
    growth_small=10_000,
    growth_large=200_000,
    growth_requests=100,
    memory_jobs=3_000,
)

FULL = Profile(
    name="full",
    repetitions=5,
    load_seconds=15.0,
    pickup_jobs=1_000,
    drain_jobs=50_000,
    procrastinate_jobs=50_000,
    growth_small=10_000,
    growth_large=1_000_000,
    growth_requests=300,
    memory_jobs=100_000,
)
