"""The benchmark's own virtualenv (.venv-bench): baselines and the load generator run there.

PgQueuer, Procrastinate and aiohttp never enter the app's requirements; this venv is built on
first use from the pinned bench/requirements.txt and rebuilt when that file changes.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-bench"
REQUIREMENTS = Path(__file__).with_name("requirements.txt")


def bench_python() -> Path:
    """The bench venv's interpreter, installing the pinned requirements first if needed."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"creating {VENV.name} from {REQUIREMENTS.relative_to(ROOT)} …", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
        check=True,
        timeout=900,
    )
    stamp.write_text(wanted)
    return python
