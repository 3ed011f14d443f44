"""How much work each figure does: quick (default, < 10 minutes) or full (`--full`).

Full is about size and long runs, bounded to about 45 minutes on the 2-core development VM.
With 5 repetitions it came to an estimated 80 (each step's own work times its repetitions:
accept 6.5, pickup 4, drain 13 of which Procrastinate's 50,000-job baseline 7, read 3, hot path
10, growth 5.3 (measured), memory 11.5, storage 4, accounts 9, push 8, remote jobs 3). So full
takes quick's 3 repetitions, each a 15 s run (not 4 s), and its sizes; the one size cut is
Procrastinate's drain (20,000 jobs, against 3,000 in quick: an unjudged baseline, 12x
behind ours), 3.5 minutes less. Per step with 3 repetitions (m = measured on 2026-11-23 with
`--full --only <step>`, the rest estimated): accept 4, pickup 2.5, drain 6, read 2, hot path 7,
growth 4.1 (m, 2.3 of them seeding), memory 7.7 (m: 3 x 100,000 jobs through
HTTP), storage 2.5, accounts 5.5, push 3.8 (m), remote jobs 2: about 47 minutes, plus
`.venv-bench` the first time. Every step stops by itself: each wait in it has a deadline.
"""

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
    streams: int  # SSE streams held open on one API process (figure 7)
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
    streams=500,
)

FULL = Profile(
    name="full",
    repetitions=3,
    load_seconds=15.0,
    pickup_jobs=1_000,
    drain_jobs=50_000,
    procrastinate_jobs=20_000,
    growth_small=10_000,
    growth_large=1_000_000,
    growth_requests=300,
    memory_jobs=100_000,
    streams=1_000,
)
