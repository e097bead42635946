"""Per-batch progress from the executors to the driver, while tasks run. No Airflow imports.

A Spark accumulator reaches the driver only when its task ends, so a date scored in two or three
partitions showed 0% for most of the run and then 100%. Here each Python worker's predict function
sends one short line per finished batch (``<token> <stage> <partition> <attempt> <rows>``) over
TCP to a listener in the driver, which keeps the rows of each partition's attempts apart: a
partition counts the rows of its furthest attempt, so a retried task is not counted twice.

Progress is a courtesy: the sender never blocks or fails a batch (a socket it cannot write to is
dropped, and the worker stops sending), and the accumulator stays the record of finished tasks.
The listener binds to the address executors already reach the driver on (``spark.driver.host``)
and ignores any connection that does not first send the run's random token.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

CONNECT_TIMEOUT_S = 2.0
MAX_LINE = 200
MAX_CONNECTIONS = 1024  # Python workers of a cluster; more is not progress but noise


@dataclass
class ProgressSender:
    """The executors' end: picklable (address and token only), connects lazily in each Python worker."""

    host: str
    port: int
    token: str
    _sock: socket.socket | None = field(default=None, init=False, repr=False, compare=False)
    _broken: bool = field(default=False, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "token": self.token}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def add(self, rows: int) -> None:
        """Report ``rows`` finished rows of the current task; never raises, never blocks a batch."""
        if self._broken:
            return
        try:
            from pyspark import TaskContext

            context = TaskContext.get()
            if context is None:
                return
            where = f"{context.stageId()} {context.partitionId()} {context.attemptNumber()}"
            self._send(f"{where} {int(rows)}\n".encode())
        except Exception:
            self._close(broken=True)

    def _send(self, line: bytes) -> None:
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT_S)
            sock.setblocking(False)
            sock.sendall(f"{self.token}\n".encode())
            self._sock = sock
        sent = self._sock.send(line)  # non-blocking: a full buffer (a driver not reading) raises
        if sent != len(line):
            self._close(broken=True)

    def _close(self, broken: bool) -> None:
        self._broken = broken
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


class ProgressListener:
    """The driver's end: counts the rows each partition's attempts report."""

    def __init__(self, host: str) -> None:
        self.token = secrets.token_hex(16)
        self._server = socket.create_server((host, 0))
        self._server.settimeout(0.5)
        self.host, self.port = host, self._server.getsockname()[1]
        # (stage, partition) -> {attempt: rows}
        self._rows: dict[tuple[int, int], dict[int, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connections = 0
        self.updated_at: float | None = None
        self._thread = threading.Thread(target=self._accept, name="spark-triton-progress-in", daemon=True)
        self._thread.start()

    @classmethod
    def for_spark(cls, spark) -> ProgressListener | None:
        """A listener on the driver's address, or None where there is none to bind (progress then
        moves per finished task, through the accumulator)."""
        try:
            host = spark.conf.get("spark.driver.host", None) or socket.gethostname()
            return cls(host)
        except Exception:
            return None

    def sender(self) -> ProgressSender:
        return ProgressSender(self.host, self.port, self.token)

    def rows_done(self) -> int:
        with self._lock:
            return sum(max(attempts.values()) for attempts in self._rows.values())

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._server.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            if self._connections >= MAX_CONNECTIONS:
                conn.close()
                continue
            self._connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError, ValueError):
            conn.settimeout(1.0)
            lines = self._lines(conn)
            if next(lines, None) != self.token:
                return
            for line in lines:
                stage, partition, attempt, rows = (int(part) for part in line.split())
                with self._lock:
                    attempts = self._rows.setdefault((stage, partition), {})
                    attempts[attempt] = attempts.get(attempt, 0) + max(rows, 0)
                    self.updated_at = time.time()

    def _lines(self, conn: socket.socket):
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                return
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            if len(buffer) > MAX_LINE:
                return
            for line in complete:
                yield line.decode("ascii").strip()
