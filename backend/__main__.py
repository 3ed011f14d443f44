"""`python -m backend`: serve the API and its worker (see backend/server.py)."""

from __future__ import annotations

import sys

from backend.server import main

if __name__ == "__main__":
    sys.exit(main())
