"""JSON records that several processes share: one file lock, atomic writes, guarded state changes.

A cluster, an attachment and a run each keep their state in one JSON file. Tasks, the triggerer,
run supervisors and the local reaper read and write them from different processes, so every change
is a read-modify-write under the record's lock file (:func:`file_lock`), written atomically (temp
file + rename, mode 0600: :func:`spark_jobs.json_files.write_json_atomic`).

A record with a ``state`` field is guarded by a transition table: a change to ``state`` that the
table does not allow from the current state raises :class:`TransitionRefused`, whoever asks. So no
code path (a blind update, a late supervisor, a retried wait) can move a DELETED cluster back to
RUNNING or a finished run back to RUNNING. :meth:`JsonRecord.transition` is the compare-and-set
form that returns None instead of raising.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spark_jobs.file_lock import file_lock
from spark_jobs.json_files import read_json, write_json_atomic

HOME_ENV = "AIRFLOW_SPARK_TRITON_HOME"
DEFAULT_HOME = "~/.airflow_spark_triton"

# State -> the states it may change to. ``None`` is a record that does not exist yet.
Transitions = Mapping[str | None, Collection[str]]


def now_iso() -> str:
    """UTC now, to the second: the timestamps of every record."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def state_home(configured: str | os.PathLike[str] | None = None) -> Path:
    """The state directory: ``configured``, else ``$AIRFLOW_SPARK_TRITON_HOME``, else the default."""
    return Path(configured or os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve()


PRIVATE_DIR_MODE = 0o700


def private_home(home: Path) -> Path:
    """``home``, created if missing and readable by its owner only (mode 0700): what lies under it
    (records, logs, Spark's own logs and work directories, reports) is then nobody else's to read,
    whatever mode its writer gave it. A home that exists is narrowed to 0700 if it is wider."""
    home.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if home.stat().st_mode & 0o077:
        home.chmod(PRIVATE_DIR_MODE)
    return home


class TransitionRefused(RuntimeError):
    """A change of ``state`` that the record's transition table does not allow."""

    def __init__(self, path: Path, current: str | None, wanted: str) -> None:
        super().__init__(f"{path}: state {current} cannot become {wanted}")
        self.current = current
        self.wanted = wanted


@dataclass(frozen=True)
class JsonRecord:
    """One JSON record and its lock file. ``transitions`` guards its ``state`` field (None: unguarded)."""

    path: Path
    lock: Path
    transitions: Transitions | None = field(default=None, compare=False)
    stamp: bool = True  # write ``updated_at`` with every change

    def read(self) -> dict[str, Any] | None:
        return read_json(self.path)

    def allows(self, current: str | None, wanted: str) -> bool:
        """Rewriting the current state is always allowed (idempotent retries); else the table decides."""
        if self.transitions is None or current == wanted:
            return True
        return wanted in self.transitions.get(current, ())

    def _write(self, record: dict[str, Any], changes: Mapping[str, Any]) -> None:
        if "state" in changes and not self.allows(record.get("state"), changes["state"]):
            raise TransitionRefused(self.path, record.get("state"), changes["state"])
        record.update(changes)
        if self.stamp:
            record["updated_at"] = now_iso()
        write_json_atomic(self.path, record)

    def update(self, **changes: Any) -> dict[str, Any]:
        """Read-modify-write under the lock; returns the record as written. A refused state change
        raises :class:`TransitionRefused` and writes nothing."""
        with file_lock(self.lock):
            record = self.read() or {}
            self._write(record, changes)
        return record

    def update_if(
        self, decide: Callable[[dict[str, Any]], Mapping[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Compare-and-set: ``decide`` sees the current record under the lock and returns the changes
        to write, or None to leave it alone. Returns the changes written (None if none). A change of
        ``state`` the table refuses raises :class:`TransitionRefused`: ``decide`` must not ask for one."""
        with file_lock(self.lock):
            record = self.read() or {}
            changes = decide(record)
            if changes:
                self._write(record, changes)
        return dict(changes) if changes else None

    def transition(
        self, wanted: str, *, allowed_from: Collection[str] | None = None, **changes: Any
    ) -> dict[str, Any] | None:
        """Move ``state`` to ``wanted`` if the table allows it from the current state (and, when given,
        the current state is one of ``allowed_from``); returns the record written, or None, changing
        nothing, when the move is not allowed."""
        with file_lock(self.lock):
            record = self.read() or {}
            current = record.get("state")
            if not self.allows(current, wanted) or (allowed_from is not None and current not in allowed_from):
                return None
            self._write(record, {**changes, "state": wanted})
        return record
