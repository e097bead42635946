"""JSON files that several processes share (server records, run status, reports, progress).

Written atomically so a reader in another process sees the old file or the new one, never half of
one; read tolerantly so a missing or half-created file reads as "nothing yet".
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def driver_path(path: str) -> Path:
    """A report path as the driver's filesystem sees it: ``dbfs:/x`` is ``/dbfs/x`` on Databricks."""
    return Path(path.removeprefix("dbfs:").replace("/dbfs/dbfs/", "/dbfs/"))
