"""The command line: `python -m backend submit|status|list|cancel|watch`, a client of the HTTP API.

It imports nothing of the server (only httpx, typer and rich), so it starts fast and runs anywhere.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """Run one command; returns its exit code (0 completed, 1 failed or canceled, 2 usage error)."""
    from backend.cli.commands import app

    try:
        app(args=argv, prog_name="python -m backend")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return 0
