"""The worker that claims and runs jobs (started by the app's lifespan)."""

from backend.worker.runner import Worker

__all__ = ["Worker"]
