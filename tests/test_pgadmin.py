"""pgadmin/servers.json and run_local.py's derived file load in a real pgAdmin 4.

The slow tests install the pinned pgAdmin into .venv-pgadmin once (about a minute, then
cached) and run pgAdmin's own loader, `setup.py load-servers`, on a temporary sqlite.
"""

from __future__ import annotations

import importlib.util
import json
import stat
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_run_local() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pgadmin_run_local", ROOT / "pgadmin" / "run_local.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


run_local = _load_run_local()


@pytest.fixture(scope="session")
def pgadmin() -> tuple[Path, Path]:
    """(python, pgadmin4 package dir) of the dedicated pgAdmin virtualenv."""
    python = run_local.ensure_venv()
    return python, run_local.package_dir(python)


def load(pgadmin: tuple[Path, Path], data_dir: Path, servers_file: Path) -> list[dict[str, object]]:
    python, pkg = pgadmin
    config_dir = run_local.write_config(data_dir)
    output = run_local.load_servers(python, pkg, config_dir, servers_file)
    assert "Added 1 Server Group(s) and 1 Server(s)" in output
    servers: list[dict[str, object]] = run_local.registered_servers(data_dir / "pgadmin4.db")
    return servers


@pytest.mark.slow
@pytest.mark.timeout(1500)  # the first run installs pgAdmin
def test_servers_json_loads_in_pgadmin(pgadmin: tuple[Path, Path], tmp_path: Path) -> None:
    expected = json.loads(run_local.SERVERS_TEMPLATE.read_text())["Servers"]["1"]
    (server,) = load(pgadmin, tmp_path, run_local.SERVERS_TEMPLATE)
    assert server["name"] == expected["Name"]
    assert server["group_name"] == expected["Group"]
    assert (server["host"], server["port"]) == ("postgres", 5432)
    assert (server["username"], server["maintenance_db"]) == (expected["Username"], expected["MaintenanceDB"])
    assert json.loads(str(server["connection_params"])) == expected["ConnectionParameters"]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_local_servers_file_loads_in_pgadmin(pgadmin: tuple[Path, Path], tmp_path: Path) -> None:
    target = run_local.parse_database_url("postgresql://dba:s3:cr\\et@db.internal:6543/jobs", "test")
    servers_file = tmp_path / "servers.json"
    servers_file.write_text(json.dumps(run_local.servers_for(target, tmp_path)))
    (server,) = load(pgadmin, tmp_path, servers_file)
    assert (server["host"], server["port"], server["username"]) == ("db.internal", 6543, "dba")
    assert server["maintenance_db"] == "jobs"
    passfile = Path(json.loads(str(server["connection_params"]))["passfile"])
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
    assert passfile.read_text().splitlines()[-1] == "db.internal:6543:*:dba:s3\\:cr\\\\et"


def test_database_url_parsing() -> None:
    target = run_local.parse_database_url("postgresql+asyncpg://app:p%40ss@postgres/generations")
    assert (target.host, target.port, target.user, target.password) == ("postgres", 5432, "app", "p@ss")
    assert target.dbname == "generations"
    embedded = run_local.parse_database_url("postgresql://postgres@127.0.0.1:5433/postgres\n")
    assert (embedded.port, embedded.password) == (5433, None)
    with pytest.raises(ValueError, match="postgresql"):
        run_local.parse_database_url("mysql://root@localhost/db")


def test_target_precedence(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    assert run_local.find_target({}, tmp_path).label == "postgres@127.0.0.1:5433/postgres"
    assert run_local.find_target({"EMBEDDED_DB_PORT": "6000"}, tmp_path).port == 6000
    (tmp_path / "data" / "embedded-postgres.url").write_text("postgresql://postgres@127.0.0.1:5999/postgres\n")
    assert run_local.find_target({}, tmp_path).port == 5999
    (tmp_path / ".env").write_text("# comment\nDATABASE_URL='postgresql://u@envfile:1/d'\n")
    assert run_local.find_target({}, tmp_path).host == "envfile"
    assert run_local.find_target({"DATABASE_URL": "postgresql://u@env:2/d"}, tmp_path).host == "env"
