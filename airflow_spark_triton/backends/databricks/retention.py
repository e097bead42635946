"""Retention under a Databricks connection's ``artifact_root``: what finished runs and old releases left.

The backend writes there (:mod:`.artifacts`, :mod:`.backend`)::

    artifacts/<digest>/          one code version: the wheel, the job file, the init script
    artifacts/user/<digest>/     a user's own init script, by content
    reports/<name>.json          one run's report, with <name>.progress.json and <name>.md beside it
    compute/<key>.json           one jobs-compute cluster definition (a DAG run's group)

A file goes once its ``last_modified`` is before the cutoff and nothing live refers to it. Live is the
JSON of every cluster the workspace lists that may start again (a terminated all-purpose cluster
runs its init script again when started; a run's job cluster never does), and of every active run:
a code version's directory,
a report's name or a compute key that appears there keeps the files. The newest code version is
always kept: a cluster being created may be about to refer to it. Directories left empty go too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_spark_triton.hooks.databricks_gpu import DatabricksGpuHook

log = logging.getLogger(__name__)


def _files(hook: DatabricksGpuHook, directory: str) -> list[dict[str, Any]]:
    """The files under ``directory``, at any depth."""
    found = []
    for entry in hook.list_directory(directory):
        if entry.get("is_directory"):
            found += _files(hook, entry["path"])
        else:
            found.append(entry)
    return found


def _in_use(path: str, area: str, live: str) -> bool:
    directory, name = path.rsplit("/", 1)
    stem = name.split(".", 1)[0]
    if area == "artifacts":  # a code version is used whole: the job file sits beside the cluster's wheel
        return f"{directory}/" in live
    if area == "compute":  # a run's new cluster carries the key as a tag, not the file's path
        return path in live or f'"{stem}"' in live
    return f"{directory}/{stem}." in live  # a report, its progress and its summary share the name


def remove_expired(
    hook: DatabricksGpuHook, root: str, cutoff_ms: int, live_references: Callable[[], str]
) -> list[str]:
    """Remove the files under ``root``'s areas that are older than ``cutoff_ms`` and not in use;
    returns their paths. ``live_references``: the JSON of every cluster and active run, asked after
    the listing, so a cluster or run that appears meanwhile is seen."""
    areas = {area: _files(hook, f"{root}/{area}") for area in ("reports", "compute", "artifacts")}
    versions = [e for e in areas["artifacts"] if e["path"].split("/")[-3:-2] == ["artifacts"]]
    newest = max(versions, key=lambda e: e.get("last_modified", 0), default=None)
    keep = newest["path"].rsplit("/", 1)[0] + "/" if newest else None
    live = live_references()
    removed: list[str] = []
    emptied: set[str] = set()
    for area, entries in areas.items():
        for entry in entries:
            path = entry["path"]
            old = int(entry.get("last_modified") or 0) < cutoff_ms
            if not old or _in_use(path, area, live) or (keep and path.startswith(keep)):
                continue
            hook.delete_file(path)
            removed.append(path)
            if area == "artifacts":
                emptied.add(path.rsplit("/", 1)[0])
    for directory in sorted(emptied, reverse=True):
        if not hook.list_directory(directory):
            hook.delete_directory(directory)
    if removed:
        log.info("Removed %d expired file(s) under %s", len(removed), root)
    return removed
