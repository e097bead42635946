"""JSON files that several processes share (server records, run status, reports, progress).

Written atomically so a reader in another process sees the old file or the new one, never half of
one; read tolerantly so a missing or half-created file reads as "nothing yet".
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Records of clusters and runs may hold settings (a spec's env vars, a job's arguments): this user only.
PRIVATE_MODE = 0o600
# Reports and progress hold counts, timings and table paths, and are meant to be read by people.
READABLE_MODE = 0o644


def write_json_atomic(path: Path, data: Mapping[str, Any], mode: int = PRIVATE_MODE) -> None:
    """Replace ``path`` in one step. The file is created with ``mode`` (default: owner only; the
    umask may narrow it), so a private record is never readable by others, not even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, default=str)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left by a writer that died: O_EXCL below must create the file anew
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def driver_path(path: str) -> Path:
    """A report path as the driver's filesystem sees it: ``dbfs:/x`` is ``/dbfs/x`` on Databricks."""
    return Path(path.removeprefix("dbfs:").replace("/dbfs/dbfs/", "/dbfs/"))
