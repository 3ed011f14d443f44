"""Run benchmark helpers as subprocesses of the bench venv; every child is killed on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.venv import ROOT, bench_python


class BenchError(RuntimeError):
    """A benchmark step failed; the message carries the child's output."""


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if the benchmark dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "PG"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


async def run_json(module: str, *args: str, timeout: float) -> dict[str, Any]:
    """Run `python -m module args` in the bench venv; its last stdout line is a JSON object."""
    process = await _spawn(module, args, asyncio.subprocess.PIPE, asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        await _kill(process)
    if process.returncode != 0:
        raise BenchError(f"{module} exited with {process.returncode}: {err.decode(errors='replace')[-3000:]}")
    lines = out.decode().strip().splitlines()
    if not lines:
        raise BenchError(f"{module} printed nothing: {err.decode(errors='replace')[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


@contextlib.asynccontextmanager
async def background(module: str, *args: str, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A bench-venv child running alongside a measurement; killed if still alive at the end."""
    with log.open("ab") as out:
        process = await _spawn(module, args, out, out)
    try:
        yield process
    finally:
        await _kill(process)


async def _spawn(module: str, args: tuple[str, ...], stdout: Any, stderr: Any) -> asyncio.subprocess.Process:
    """`python -m module args` in the bench venv, dying with us."""
    return await asyncio.create_subprocess_exec(
        str(bench_python()),
        "-m",
        module,
        *args,
        cwd=ROOT,
        env=_env(),
        stdout=stdout,
        stderr=stderr,
        preexec_fn=die_with_parent,
    )


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
