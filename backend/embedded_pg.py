"""An embedded PostgreSQL server, run from the binaries of the `pgserver` wheel.

The server is a direct child of this process, not a daemon: it listens on
127.0.0.1 over TCP only and is told by the kernel to shut down when its parent
dies, even when the parent is SIGKILLed.

It never hands out a server it did not start: a port that is taken is replaced by a
free one, and before the URL is used the answering server must report our data
directory. A watchdog thread restarts the server if it dies; if it cannot, the
process is asked to stop (and exits non-zero).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

import psutil

log = logging.getLogger(__name__)


# The wheel's binaries, found without importing pgserver (whose import has side effects).
def _install_path() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the pgserver wheel (which ships PostgreSQL's binaries) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


PGINSTALL = _install_path()
POSTGRES_BIN_PATH = PGINSTALL / "bin"

# PostgreSQL refuses to run as root; when we are root it runs as this user.
SERVICE_USER = "pgembedded"
# Where, as root, the files go that the service user cannot reach in place (see _placement).
SYSTEM_DIR = Path("/var/lib/pgembedded")
_PR_SET_PDEATHSIG = 1
RESTART_ATTEMPTS = 5


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started."""


class EmbeddedPostgres:
    """Start with `start()` (or a `with` block), stop with `stop()`."""

    def __init__(self, data_dir: Path, port: int, *, url_file: Path | None = None, watch: bool = False) -> None:
        self._user = _service_user() if os.geteuid() == 0 else None
        self.bin_path, self.pgdata = _placement(data_dir.resolve(), self._user)
        self.port = port
        self.url_file = url_file
        self.watch = watch
        self.process: subprocess.Popen[bytes] | None = None
        # False while the server is down (between a crash and its restart): /readyz reports it.
        self.running = False
        # Set when the server died and could not be restarted: the app must exit non-zero.
        self.failed = False
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None

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
        if not _port_free(self.port):
            taken, self.port = self.port, free_port()
            message = (
                f"EMBEDDED_DB_PORT {taken} is in use by another program; "
                f"the embedded PostgreSQL listens on 127.0.0.1:{self.port} instead"
            )
            log.warning(message)
            print(f"note: {message}", file=sys.stderr, flush=True)
        self._launch(timeout)
        if self.url_file is not None:
            self.url_file.write_text(self.url + "\n")
        log.info("embedded PostgreSQL %s ready at %s (data in %s)", _version(self.bin_path), self.url, self.pgdata)
        if self.watch:
            self._watchdog = threading.Thread(target=self._watch, name="embedded-postgres-watchdog", daemon=True)
            self._watchdog.start()

    def _launch(self, timeout: float) -> None:
        log_path = self.pgdata / "postgres.log"
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [
                    str(self.bin_path / "postgres"),
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
        self.running = True

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown: disconnect clients, checkpoint, exit."""
        self._stopping.set()
        self.running = False
        if self.url_file is not None:
            self.url_file.unlink(missing_ok=True)
        process, self.process = self.process, None
        if process is not None:
            _terminate(process, timeout)
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout)

    def _watch(self) -> None:
        """Restart the server if it dies; if that fails, stop the app (it then exits non-zero)."""
        while not self._stopping.is_set():
            process = self.process
            if process is None:
                return
            code = process.wait()
            if self._stopping.is_set():
                return
            self.running = False
            log.error("embedded PostgreSQL exited unexpectedly (code %s); restarting it", code)
            for attempt in range(1, RESTART_ATTEMPTS + 1):
                if self._stopping.wait(min(0.2 * 2**attempt, 5.0)):
                    return
                try:
                    self._wait_for_previous_server(30.0)
                    self._launch(30.0)
                except EmbeddedPostgresError as exc:
                    log.error("restart %d of the embedded PostgreSQL failed: %s", attempt, exc)
                    continue
                log.warning("embedded PostgreSQL restarted at %s", self.url)
                break
            else:
                self.failed = True
                log.critical("the embedded PostgreSQL could not be restarted; stopping")
                os.kill(os.getpid(), signal.SIGTERM)
                return

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
            os.chown(self.pgdata, self._user.pw_uid, self._user.pw_gid)
        os.chmod(self.pgdata, 0o700)
        if (self.pgdata / "PG_VERSION").exists():
            return
        log.info("initialising embedded PostgreSQL data in %s", self.pgdata)
        result = subprocess.run(
            [
                str(self.bin_path / "initdb"),
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
        """A server of a killed predecessor may still be shutting down on this data dir.

        One whose parent is alive belongs to another running app: that is an error at once.
        """
        pid_file = self.pgdata / "postmaster.pid"
        deadline = time.monotonic() + timeout
        while pid_file.exists():
            try:
                pid = int(pid_file.read_text().split("\n", 1)[0])
            except (OSError, ValueError):
                return
            if not _is_postgres(pid):
                return  # stale file; postgres itself will remove it
            owner = _live_parent(pid)
            if owner is not None and owner != os.getpid():
                raise EmbeddedPostgresError(
                    f"the embedded PostgreSQL of {self.pgdata} is already run by another process (pid {owner}); "
                    "stop it, or give this service another DATA_DIR"
                )
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
            # Whoever answers must be our own child: a server started by someone else on this
            # port (between our check and our bind) would otherwise be taken for ours.
            if _accepts_connections(self.bin_path, self.port) and self._answering_is_ours():
                return
            time.sleep(0.02)
        _terminate(self.process, timeout)
        raise EmbeddedPostgresError(f"embedded PostgreSQL did not start within {timeout:.0f}s")

    def _answering_is_ours(self) -> bool:
        result = subprocess.run(
            [
                str(self.bin_path / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-w",  # never prompt: a server that wants a password is not ours
                "-Atc",
                "SHOW data_directory",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
            env={**os.environ, "PGCONNECT_TIMEOUT": "3"},
        )
        return result.returncode == 0 and Path(result.stdout.strip()).resolve() == self.pgdata


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Fast shutdown (SIGINT): disconnect clients, checkpoint, exit; killed if it takes too long."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _placement(pgdata: Path, user: pwd.struct_passwd | None) -> tuple[Path, Path]:
    """Where the binaries run from and the data lives, changing no permission outside the data dir.

    Unprivileged, both stay where they are. As root the server runs as SERVICE_USER, who must
    reach both: a path it cannot traverse (e.g. under /root, mode 700) is not opened up; the
    binaries are copied once, and the data kept, under /var/lib/pgembedded, and a note in the
    data dir's parent says where.
    """
    if user is None:
        return POSTGRES_BIN_PATH, pgdata
    bin_path = POSTGRES_BIN_PATH
    if not _traversable(POSTGRES_BIN_PATH):
        version = _version(POSTGRES_BIN_PATH)
        copy = _system_dir() / f"pginstall-{version}"
        if not (copy / "bin" / "postgres").exists():
            staging = SYSTEM_DIR / f".pginstall-{version}.{os.getpid()}"
            shutil.copytree(PGINSTALL, staging, symlinks=True)
            staging.rename(copy)
        bin_path = copy / "bin"
    if SYSTEM_DIR.is_dir():
        _remove_orphans()
    if not _traversable(pgdata.parent):
        moved = _system_dir() / f"data-{hashlib.sha256(str(pgdata).encode()).hexdigest()[:16]}"
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        note = pgdata.parent / f"{pgdata.name}.location"
        note.write_text(
            f"{moved}\n# {pgdata.parent} is not reachable by the user {SERVICE_USER} that runs the embedded\n"
            "# PostgreSQL (a parent directory is not searchable by others), so its files are kept above.\n"
        )
        moved.with_name(f"{moved.name}.origin").write_text(f"{note}\n")
        log.warning("%s is not reachable by %s; the embedded database's files are in %s", pgdata, SERVICE_USER, moved)
        pgdata = moved
    return bin_path, pgdata


def _remove_orphans() -> None:
    """Delete relocated data whose origin folder is gone (a removed DATA_DIR, a deleted temp dir).

    Each relocated data dir has an `.origin` file naming the note left in the original folder;
    without that note the data belongs to nobody, unless a server still runs on it.
    """
    for origin in SYSTEM_DIR.glob("data-*.origin"):
        data = origin.with_suffix("")
        if Path(origin.read_text().strip()).exists():
            continue
        pid_file = data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError):
            if _is_postgres(int(pid_file.read_text().split("\n", 1)[0])):
                continue
        log.info("removing embedded database files whose folder is gone: %s", data)
        shutil.rmtree(data, ignore_errors=True)
        origin.unlink(missing_ok=True)


def _system_dir() -> Path:
    SYSTEM_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    return SYSTEM_DIR


def _traversable(path: Path) -> bool:
    """Whether "others" may search every directory from / down to `path` (and `path` itself)."""
    for folder in [path, *path.parents]:
        try:
            if not folder.stat().st_mode & stat.S_IXOTH:
                return False
        except FileNotFoundError:
            continue  # created later by us, under a parent that was checked
    return True


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


def _is_postgres(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).name() == "postgres")
    except psutil.Error:
        return False


def _live_parent(pid: int) -> int | None:
    """The pid of the process that started server `pid`, if it is still alive (not init)."""
    try:
        parent = psutil.Process(pid).ppid()
    except psutil.Error:
        return None
    return parent if parent > 1 and psutil.pid_exists(parent) else None


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As PostgreSQL binds: connections of a server that just stopped linger in TIME_WAIT,
        # and without SO_REUSEADDR they would make a restart on the same port look "taken".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _accepts_connections(bin_path: Path, port: int) -> bool:
    # A TCP accept is not enough: the server listens before recovery is done.
    result = subprocess.run(
        [str(bin_path / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"],
        check=False,
        timeout=10,
    )
    return result.returncode == 0


def _version(bin_path: Path) -> str:
    out = subprocess.run([str(bin_path / "postgres"), "--version"], capture_output=True, text=True)
    return out.stdout.strip().rsplit(" ", 1)[-1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
