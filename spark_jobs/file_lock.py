"""The one cross-process lock of the package: an exclusive ``flock`` on a file.

It lives in ``spark_jobs`` (no Airflow, no Spark import) because both sides need it: executors
serialising a node's Triton server start, the Airflow side guarding its JSON records and artifacts.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing), shared by every process that uses it.

    flock locks belong to the open file, so this is not reentrant, even within one process.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
