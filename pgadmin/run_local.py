"""Run pgAdmin 4 without Docker, with this project's database registered (`make pgadmin`).

Creates `.venv-pgadmin` (separate from the app's `.venv`) with the pgAdmin pinned in
pgadmin/requirements.txt, writes a desktop-mode `config_local.py` under data/pgadmin/,
registers the database with pgAdmin's own loader (`setup.py load-servers`) and serves
pgAdmin on http://127.0.0.1:5050 in the foreground (Ctrl-C stops it).

The database is, in order: DATABASE_URL from the environment or .env, else the embedded
PostgreSQL of a running `make run` (its URL is in $DATA_DIR/embedded-postgres.url), else
the embedded server's usual address, 127.0.0.1:$EMBEDDED_DB_PORT (5433).
Desktop mode means no login and no master password: local development only.
Only the standard library is used, so any Python 3.11 runs this script.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
VENV_DIR = ROOT / ".venv-pgadmin"
REQUIREMENTS = ROOT / "pgadmin" / "requirements.txt"
SERVERS_TEMPLATE = ROOT / "pgadmin" / "servers.json"
PGADMIN_DATA = ROOT / "data" / "pgadmin"
INSTALL_TIMEOUT = 1200.0
SETUP_TIMEOUT = 300.0
URL_FILE_NAME = "embedded-postgres.url"


@dataclass(frozen=True)
class Target:
    """Where pgAdmin should connect."""

    host: str
    port: int
    user: str
    dbname: str
    password: str | None = None
    source: str = ""

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"


def parse_database_url(url: str, source: str = "") -> Target:
    """Read a postgresql:// URL (also postgres:// and postgresql+asyncpg://)."""
    parts = urlsplit(url.strip())
    if parts.scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ValueError(f"not a postgresql:// URL: {url!r}")
    user = unquote(parts.username or "postgres")
    return Target(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=user,
        dbname=unquote(parts.path.lstrip("/")) or user,
        password=unquote(parts.password) if parts.password is not None else None,
        source=source,
    )


def read_dotenv(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines of a .env file (enough for the keys this script needs)."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and key and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("'\"")
    return values


def find_target(env: dict[str, str], root: Path = ROOT) -> Target:
    """The database to register: DATABASE_URL, else the app's embedded server."""
    settings = {**read_dotenv(root / ".env"), **env}
    if settings.get("DATABASE_URL"):
        return parse_database_url(settings["DATABASE_URL"], "DATABASE_URL")
    data_dir = Path(settings.get("DATA_DIR") or "data")
    url_file = data_dir if data_dir.is_absolute() else root / data_dir
    url_file = url_file / URL_FILE_NAME
    if url_file.is_file():
        return parse_database_url(url_file.read_text(), str(url_file))
    port = int(settings.get("EMBEDDED_DB_PORT") or 5433)
    return Target("127.0.0.1", port, "postgres", "postgres", None, "embedded default")


def venv_python(venv_dir: Path = VENV_DIR) -> Path:
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(venv_dir: Path = VENV_DIR, requirements: Path = REQUIREMENTS) -> Path:
    """Create or reuse the pgAdmin virtualenv; reinstall when requirements change."""
    stamp = venv_dir / ".requirements.sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    python = venv_python(venv_dir)
    if python.exists() and stamp.is_file() and stamp.read_text() == digest:
        return python
    print(f"Installing pgAdmin into {venv_dir} (a minute or two, once)...", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "-r", str(requirements)], check=True, timeout=INSTALL_TIMEOUT)
    stamp.write_text(digest)
    return python


def package_dir(python: Path) -> Path:
    """The installed pgadmin4 directory (holds config.py, setup.py, pgAdmin4.py)."""
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True, timeout=60)
    path = Path(out.stdout.strip()) / "pgadmin4"
    if not (path / "setup.py").is_file():
        raise RuntimeError(f"pgadmin4 is not installed in {python}")
    return path


def write_config(data_dir: Path, host: str = "127.0.0.1", port: int = 5050) -> Path:
    """Write config_local.py for desktop mode; returns the directory to put on PYTHONPATH."""
    data_dir.mkdir(parents=True, exist_ok=True)
    settings: dict[str, object] = {
        "SERVER_MODE": False,
        "DEFAULT_SERVER": host,
        "DEFAULT_SERVER_PORT": port,
        "MASTER_PASSWORD_REQUIRED": False,
        # No OS keyring: on a desktop it would ask to unlock the keyring.
        "USE_OS_SECRET_STORAGE": False,
        "UPGRADE_CHECK_ENABLED": False,
        "DATA_DIR": str(data_dir),
        "SQLITE_PATH": str(data_dir / "pgadmin4.db"),
        "LOG_FILE": str(data_dir / "pgadmin4.log"),
        "SESSION_DB_PATH": str(data_dir / "sessions"),
        "STORAGE_DIR": str(data_dir / "storage"),
    }
    lines = ["# Written by pgadmin/run_local.py at every start: edit that script instead."]
    lines += [f"{key} = {value!r}" for key, value in settings.items()]
    (data_dir / "config_local.py").write_text("\n".join(lines) + "\n")
    return data_dir


def pgadmin_env(config_dir: Path) -> dict[str, str]:
    """Environment for pgAdmin's processes: config_local.py is found through PYTHONPATH.

    pgAdmin imports `config_local` from sys.path; putting our directory there (and
    nothing else) leaves site-packages untouched.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(config_dir)
    env["PGADMIN_SERVER_MODE"] = "OFF"
    return env


def servers_for(target: Target, data_dir: Path, template: Path = SERVERS_TEMPLATE) -> dict[str, Any]:
    """pgadmin/servers.json's first server, pointed at `target`; writes its pgpass file."""
    servers = json.loads(template.read_text())["Servers"]
    server = dict(next(iter(servers.values())))
    # pgAdmin asks for a password unless the server has a passfile, even for a
    # trust-auth server; an empty one (comments only) is enough to stop that prompt.
    passfile = data_dir / "pgpass"
    passfile.touch(mode=0o600)
    passfile.chmod(0o600)
    line = "# no password in the URL: trust or peer authentication"
    if target.password is not None:
        fields = [target.host, str(target.port), "*", target.user, target.password]
        line = ":".join(f.replace("\\", "\\\\").replace(":", "\\:") for f in fields)
    passfile.write_text(f"# Written by pgadmin/run_local.py at every start.\n{line}\n")
    params = {**server.get("ConnectionParameters", {}), "passfile": str(passfile)}
    server.update(
        Name=f"Generation Jobs ({target.label})",
        Host=target.host,
        Port=target.port,
        Username=target.user,
        MaintenanceDB=target.dbname,
        Comment=f"Registered by pgadmin/run_local.py from {target.source or 'settings'}.",
        ConnectionParameters=params,
    )
    return {"Servers": {"1": server}}


def run_setup(python: Path, pkg: Path, env: dict[str, str], *args: str) -> str:
    """Run pgAdmin's setup.py CLI; raise with its output when it fails."""
    proc = subprocess.run(
        [str(python), str(pkg / "setup.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=SETUP_TIMEOUT,
    )
    output = proc.stdout + proc.stderr
    # load-servers exits 0 (printing a message) when the sqlite file is missing.
    if proc.returncode != 0 or "does not exist" in output:
        raise RuntimeError(f"pgAdmin setup.py {' '.join(args)} failed:\n{output}")
    return output


def registered_servers(sqlite_path: Path) -> list[dict[str, object]]:
    """Servers in pgAdmin's configuration database."""
    if not sqlite_path.is_file():
        return []
    with sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT s.name, s.host, s.port, s.username, s.maintenance_db,"
            " s.connection_params, g.name AS group_name"
            " FROM server s JOIN servergroup g ON g.id = s.servergroup_id"
        ).fetchall()
    return [dict(row) for row in rows]


def load_servers(python: Path, pkg: Path, data_dir: Path, servers_file: Path) -> str:
    """Create pgAdmin's sqlite database if needed and load `servers_file` into it."""
    env = pgadmin_env(data_dir)
    run_setup(python, pkg, env, "setup-db")
    return run_setup(python, pkg, env, "load-servers", str(servers_file))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="pgAdmin has no login: keep it local")
    parser.add_argument("--port", type=int, default=5050)
    parser.add_argument("--no-start", action="store_true", help="set up, do not serve")
    args = parser.parse_args(argv)

    python = ensure_venv()
    pkg = package_dir(python)
    config_dir = write_config(PGADMIN_DATA, args.host, args.port)
    target = find_target(dict(os.environ))
    servers = servers_for(target, PGADMIN_DATA)
    name = servers["Servers"]["1"]["Name"]
    known = {s["name"] for s in registered_servers(PGADMIN_DATA / "pgadmin4.db")}
    if name in known:
        print(f"pgAdmin already knows {name!r}.")
    else:
        servers_file = PGADMIN_DATA / "servers.json"
        servers_file.write_text(json.dumps(servers, indent=2) + "\n")
        print(load_servers(python, pkg, config_dir, servers_file).strip())
    print(f"Database: {target.label} (from {target.source})")
    if target.source == "embedded default":
        print("No DATABASE_URL and no running embedded server: start `make run` to connect.")
    if args.no_start:
        return 0
    print(f"pgAdmin: http://{args.host}:{args.port}  (Ctrl-C to stop)", flush=True)
    os.chdir(PGADMIN_DATA)
    # exec: pgAdmin replaces this process, so Ctrl-C and signals reach it directly.
    os.execve(python, [str(python), str(pkg / "pgAdmin4.py")], pgadmin_env(config_dir))  # noqa: S606


if __name__ == "__main__":
    sys.exit(main())
