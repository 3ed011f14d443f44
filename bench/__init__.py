"""Benchmarks: the service beside PgQueuer, Procrastinate and raw asyncpg, in the same run."""
