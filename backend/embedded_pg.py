"""An embedded PostgreSQL server, run from the binaries of the `pgserver` wheel.

The server is a direct child of this process, not a daemon: it listens on
127.0.0.1 over TCP only and is told by the kernel to shut down when its parent
dies, even when the parent is SIGKILLed.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from types import TracebackType

import psutil

log = logging.getLogger(__name__)


# The wheel's binaries, found without importing pgserver (whose import has side effects).
def _bin_path() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the pgserver wheel (which ships PostgreSQL's binaries) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


POSTGRES_BIN_PATH = _bin_path()

# PostgreSQL refuses to run as root; when we are root it runs as this user.
SERVICE_USER = "pgembedded"
_PR_SET_PDEATHSIG = 1


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started."""


class EmbeddedPostgres:
    """Start with `start()` (or a `with` block), stop with `stop()`."""

    def __init__(self, data_dir: Path, port: int, *, url_file: Path | None = None) -> None:
        self.pgdata = data_dir.resolve()
        self.port = port
        self.url_file = url_file
        self.process: subprocess.Popen[bytes] | None = None
        self._user = _service_user() if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> None:
        self._initdb()
        self._wait_for_previous_server(timeout)
        log_path = self.pgdata / "postgres.log"
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [
                    str(POSTGRES_BIN_PATH / "postgres"),
                    "-D",
                    str(self.pgdata),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"port={self.port}",
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "max_connections=200",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=self._child_setup,
                # Our own SIGINT (Ctrl-C) must not reach the server first: we stop it
                # ourselves after the app has drained.
                start_new_session=True,
            )
        self._wait_ready(timeout, log_path)
        if self.url_file is not None:
            self.url_file.write_text(self.url + "\n")
        log.info("embedded PostgreSQL %s ready at %s", _version(), self.url)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown: disconnect clients, checkpoint, exit."""
        if self.url_file is not None:
            self.url_file.unlink(missing_ok=True)
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _child_setup(self) -> None:
        # Runs in the child between fork and exec. The parent-death signal is
        # reset by a change of uid, so drop privileges first, then ask for it.
        if self._user is not None:
            os.setgid(self._user.pw_gid)
            os.setuid(self._user.pw_uid)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)
        if os.getppid() == 1:  # the parent already died before prctl
            os._exit(1)

    def _initdb(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            _make_traversable(self.pgdata)
            os.chown(self.pgdata, self._user.pw_uid, self._user.pw_gid)
        os.chmod(self.pgdata, 0o700)
        if (self.pgdata / "PG_VERSION").exists():
            return
        log.info("initialising embedded PostgreSQL data in %s", self.pgdata)
        result = subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "initdb"),
                "-D",
                str(self.pgdata),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                "postgres",
            ],
            capture_output=True,
            text=True,
            user=self._user.pw_uid if self._user else None,
            group=self._user.pw_gid if self._user else None,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed: {result.stderr.strip()}")

    def _wait_for_previous_server(self, timeout: float) -> None:
        """A server of a killed predecessor may still be shutting down on this data dir."""
        pid_file = self.pgdata / "postmaster.pid"
        deadline = time.monotonic() + timeout
        while pid_file.exists():
            try:
                pid = int(pid_file.read_text().split("\n", 1)[0])
            except (OSError, ValueError):
                return
            if not _is_postgres(pid):
                return  # stale file; postgres itself will remove it
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"another PostgreSQL (pid {pid}) is still running on {self.pgdata}")
            time.sleep(0.05)

    def _wait_ready(self, timeout: float, log_path: Path) -> None:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
                raise EmbeddedPostgresError(
                    f"embedded PostgreSQL exited with code {self.process.returncode} "
                    f"(EMBEDDED_DB_PORT={self.port}): " + " | ".join(tail)
                )
            if _accepts_connections(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise EmbeddedPostgresError(f"embedded PostgreSQL did not start within {timeout:.0f}s")


def _service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


def _make_traversable(path: Path) -> None:
    """Let the service user reach its data dir and the server binaries."""
    for folder in [*path.parents, *POSTGRES_BIN_PATH.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


def _is_postgres(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).name() == "postgres")
    except psutil.Error:
        return False


def _accepts_connections(port: int) -> bool:
    # A TCP accept is not enough: the server listens before recovery is done.
    result = subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"],
        check=False,
        timeout=10,
    )
    return result.returncode == 0


def _version() -> str:
    out = subprocess.run([str(POSTGRES_BIN_PATH / "postgres"), "--version"], capture_output=True, text=True)
    return out.stdout.strip().rsplit(" ", 1)[-1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
