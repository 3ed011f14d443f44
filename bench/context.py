"""What every figure gets: the database, the profile, a work folder, and shared results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench.profile import Profile


@dataclass
class Context:
    database_url: str
    profile: Profile
    workdir: Path
    conn: asyncpg.Connection
    # Pickup latencies measured while figure 1's load ran, one summary per repetition.
    pickup_under_load: list[dict[str, float]] = field(default_factory=list)

    def folder(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path
