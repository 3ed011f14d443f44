"""Waiting for something to become true: a poll with a deadline, never a fixed sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

INTERVAL = 0.02


async def until(condition: Callable[[], object | Awaitable[object]], message: str, timeout: float = 10.0) -> None:
    """Poll `condition` (plain or async) until it is truthy; fail with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"{message} (not within {timeout:g}s)"
        await asyncio.sleep(INTERVAL)


def wait_until(condition: Callable[[], object], message: str, timeout: float = 30.0) -> None:
    """`until` for tests that drive real processes from plain (blocking) code."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{message} (not within {timeout:g}s)"
        time.sleep(0.05)
