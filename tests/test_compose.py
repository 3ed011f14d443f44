"""Static checks of the Docker, compose, pgAdmin and VS Code files (no Docker engine needed)."""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DEBUG_COMPOSE = ROOT / "docker-compose.debug.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SERVERS_JSON = ROOT / "pgadmin" / "servers.json"
PGPASS = ROOT / "pgadmin" / "pgpass"
# ${VAR}, ${VAR:-default}, ${VAR-default}; `$${VAR}` is compose's escape for a literal `$`.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")

Service = dict[str, Any]


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} is not a mapping"
    return data


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines())
    return {p[0].strip(): p[1].strip() for p in pairs if len(p) == 2 and not p[0].startswith("#")}


def interpolate(value: str) -> str:
    """Resolve ${VAR:-default} the way compose does without an .env file."""
    return VARIABLE.sub(lambda m: m.group(2) or "", value)


def environment(service: Service) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def ports(service: Service) -> list[tuple[str, str, str]]:
    """(host_ip, published, target) for every `ports` entry (short syntax)."""
    result = []
    for entry in service.get("ports", []):
        parts = interpolate(str(entry)).split(":")
        parts = ["0.0.0.0", ""][: 3 - len(parts)] + parts
        result.append((parts[0], parts[1], parts[2].split("/")[0]))
    return result


def mounts(service: Service) -> dict[str, str]:
    """Container path -> source, for short-syntax volumes."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines if line and not line.startswith("#")
    ]


def container_source_dir() -> str:
    """Where the Dockerfile puts backend/ inside the image."""
    workdir = "/"
    for instruction, args in dockerfile():
        if instruction == "WORKDIR":
            workdir = args
        if instruction == "COPY" and shlex.split(args)[0].rstrip("/") == "backend":
            return posixpath.normpath(posixpath.join(workdir, shlex.split(args)[-1]))
    raise AssertionError("the Dockerfile does not COPY backend/")


def load_jsonc(path: Path) -> Any:
    """JSON with // and /* */ comments and trailing commas, as VS Code reads it."""
    token = re.compile(r'("(?:\\.|[^"\\])*")|//[^\n]*|/\*.*?\*/', re.S)
    text = token.sub(lambda m: m.group(1) or "", path.read_text())
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", text))


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    result: dict[str, Service] = load_yaml(COMPOSE)["services"]
    return result


@pytest.fixture(scope="module")
def debug_backend() -> Service:
    result: Service = load_yaml(DEBUG_COMPOSE)["services"]["backend"]
    return result


def test_services_and_files_exist(services: dict[str, Service]) -> None:
    assert {"postgres", "backend", "pgadmin"} <= services.keys()
    assert services["postgres"]["image"].startswith("postgres:16")
    assert interpolate(services["pgadmin"]["image"]).startswith("dpage/pgadmin4")
    build = services["backend"]["build"]
    assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()
    for path in (SERVERS_JSON, ENV_EXAMPLE, PGPASS, ROOT / ".dockerignore"):
        assert path.is_file(), path


def test_ports(services: dict[str, Service], debug_backend: Service) -> None:
    published = {name: ports(service) for name, service in services.items()}
    assert ("127.0.0.1", "8000", "8000") in published["backend"]
    assert ("127.0.0.1", "5050", "80") in published["pgadmin"]
    assert ("127.0.0.1", "5678", "5678") in ports(debug_backend)
    for name, entries in published.items():
        if any(target == "5432" for _, _, target in entries):
            assert "dev" in services[name].get("profiles", []), f"{name} publishes 5432"
    assert any(t == "5432" for entries in published.values() for _, _, t in entries)
    # Dev credentials and a login-less pgAdmin: nothing may listen beyond loopback.
    for ip, port, _ in [p for e in published.values() for p in e] + ports(debug_backend):
        assert ip == "127.0.0.1", f"port {port} is published on {ip}"


def test_named_volumes(services: dict[str, Service]) -> None:
    declared = load_yaml(COMPOSE).get("volumes") or {}
    expected = {
        "postgres": "/var/lib/postgresql/data",
        "backend": "/data",
        "pgadmin": "/var/lib/pgadmin",
        "minio": "/data",
    }
    for name, path in expected.items():
        source = mounts(services[name])[path]
        assert source in declared, f"{name}:{path} is not on a named volume"


def test_healthchecks_and_start_order(services: dict[str, Service]) -> None:
    assert "pg_isready" in str(services["postgres"]["healthcheck"]["test"])
    assert "/readyz" in str(services["backend"]["healthcheck"]["test"])
    assert services["backend"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_env_example_covers_compose_variables() -> None:
    documented = env_example()
    for path in (COMPOSE, DEBUG_COMPOSE):
        for name, default in VARIABLE.findall(path.read_text()):
            assert name in documented, f"{path.name} reads ${{{name}}}, missing in .env.example"
            if default:
                assert documented[name] == default, f"{name}: default differs from .env.example"


def test_backend_environment_names_are_settings(services: dict[str, Service], debug_backend: Service) -> None:
    from backend.config import Settings

    names = environment(services["backend"]).keys() | environment(debug_backend).keys()
    # AWS_* are the standard credential variables, read by the S3 client rather than by Settings.
    unknown = {name for name in names if name.lower() not in Settings.model_fields and not name.startswith("AWS_")}
    assert not unknown, f"backend env vars the app does not read: {sorted(unknown)}"


def test_backend_settings_for_containers(services: dict[str, Service]) -> None:
    env = {k: interpolate(v) for k, v in environment(services["backend"]).items()}
    assert env["HOST"] == "0.0.0.0"
    assert env["DATA_DIR"] == "/data"
    assert env["DATABASE_URL"] == "postgresql://app:app@postgres:5432/generations"


def test_dockerfile() -> None:
    steps = dockerfile()
    args = {instruction: value for instruction, value in steps}  # the last one wins
    env = " ".join(value for instruction, value in steps if instruction == "ENV")
    assert args["FROM"] == "python:3.11-slim"
    assert args["USER"].split(":")[0] not in ("root", "0"), "the image must not run as root"
    assert json.loads(args["CMD"]) == ["python", "-m", "backend"]
    assert "8000" in args["EXPOSE"].split()
    assert "/readyz" in args["HEALTHCHECK"]
    assert "HOST=0.0.0.0" in env.split()
    assert "DATA_DIR=/data" in env.split()

    def index(predicate: Callable[[str, str], bool]) -> int:
        return next(i for i, step in enumerate(steps) if predicate(*step))

    copy_reqs = index(lambda i, a: i == "COPY" and "requirements.txt" in a)
    install = index(lambda i, a: i == "RUN" and "-r requirements.txt" in a)
    copy_src = index(lambda i, a: i == "COPY" and "backend" in a)
    assert copy_reqs < install < copy_src
    assert container_source_dir() == "/app/backend"


def test_dockerignore() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", ".git", ".env", "bench/results"} <= set(ignored)


def test_servers_json_matches_compose(services: dict[str, Service]) -> None:
    server = json.loads(SERVERS_JSON.read_text())["Servers"]["1"]
    db_env = {k: interpolate(v) for k, v in environment(services["postgres"]).items()}
    assert {"Name", "Group"} <= server.keys()
    assert server["Host"] == "postgres"
    assert server["Port"] == 5432
    assert server["Username"] == db_env["POSTGRES_USER"]
    assert server["MaintenanceDB"] == db_env["POSTGRES_DB"]
    assert server["ConnectionParameters"]["sslmode"] == "prefer"

    pgadmin = services["pgadmin"]
    assert pgadmin["volumes"].count("./pgadmin/servers.json:/pgadmin4/servers.json:ro") == 1
    pgpass_mount = environment(pgadmin)["PGPASS_FILE"]
    assert mounts(pgadmin)[pgpass_mount] == "./pgadmin/pgpass"
    # The image copies PGPASS_FILE here in desktop mode; servers.json must name it.
    assert environment(pgadmin)["PGADMIN_CONFIG_SERVER_MODE"] == "False"
    assert server["ConnectionParameters"]["passfile"] == "/var/lib/pgadmin/.pgpass"
    entries = [line for line in PGPASS.read_text().splitlines() if not line.startswith("#")]
    expected = f"postgres:5432:*:{db_env['POSTGRES_USER']}:{db_env['POSTGRES_PASSWORD']}"
    assert entries == [expected]


def test_debug_override(debug_backend: Service) -> None:
    env = environment(debug_backend)
    assert env["DEBUGPY_ENABLED"] == "true"
    assert env["DEBUGPY_HOST"] == "0.0.0.0"
    assert mounts(debug_backend)[container_source_dir()] == "./backend"


def test_vscode_launch_configs() -> None:
    configs = {c["name"]: c for c in load_jsonc(ROOT / ".vscode" / "launch.json")["configurations"]}
    local, docker = configs["Attach (local)"], configs["Attach (docker compose)"]
    for config in (local, docker):
        assert config["request"] == "attach"
        assert config["connect"] == {"host": "127.0.0.1", "port": 5678}
    assert local["pathMappings"] == [{"localRoot": "${workspaceFolder}", "remoteRoot": "${workspaceFolder}"}]
    (mapping,) = docker["pathMappings"]
    assert mapping["localRoot"] == "${workspaceFolder}"
    assert f"{mapping['remoteRoot'].rstrip('/')}/backend" == container_source_dir()


def test_minio_object_store_with_its_bucket_and_endpoint_split(services: dict[str, Service]) -> None:
    minio, init, backend = services["minio"], services["minio-init"], services["backend"]
    for service in (minio, init):
        image = interpolate(service["image"])
        assert ":RELEASE." in image, f"{image} is not pinned to a release"
    assert ("127.0.0.1", "9000", "9000") in ports(minio)
    assert "ready" in str(minio["healthcheck"]["test"])
    # The bucket is created once MinIO is healthy, and the backend starts only after that.
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert backend["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    script = " ".join(init["command"])
    assert "mc mb --ignore-existing" in script and "$$S3_BUCKET" in script
    init_env = {k: interpolate(v) for k, v in environment(init).items()}
    env = {k: interpolate(v) for k, v in environment(backend).items()}
    assert env["STORAGE_BACKEND"] == "s3"
    assert env["S3_BUCKET"] == init_env["S3_BUCKET"]
    # The app talks to MinIO inside the network; clients get URLs naming the published port.
    internal, public = urlsplit(env["S3_ENDPOINT_INTERNAL"]), urlsplit(env["S3_PUBLIC_ENDPOINT"])
    assert internal.hostname == "minio" and internal.port == 9000
    assert public.hostname in ("localhost", "127.0.0.1") and str(public.port) == "9000"
    assert env["S3_USE_PATH_STYLE"] == "true"
    minio_env = {k: interpolate(v) for k, v in environment(minio).items()}
    assert env["AWS_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"] == init_env["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
