"""`python -m backend [COMMAND]`: no command (or `serve`) serves; `keys` administers API keys; the others
are the command line.

Only the chosen command's modules are imported, so a client command starts without loading the server.
"""

from __future__ import annotations

import sys


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "serve"
    if command == "serve":
        from backend.server import main as serve

        return serve()
    if command == "keys":  # administration: talks to the database, not to the API
        from backend.accounts.cli import main as keys

        return keys(sys.argv[2:])
    from backend.cli import main as cli

    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
