"""Baselines, run as subprocesses with the benchmark's own interpreter (.venv-bench)."""
