"""Finding the processes a test started, by where they point: command line, working dir, environment.

Used by the per-test leak check (tests/backends/local/conftest.py) and the fault ledger (tests/faults/ledger.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import psutil


def _names(text: str, roots: Sequence[str]) -> bool:
    """``text`` names a root itself or a path below it (``/a/b`` does not name ``/a/bc``)."""
    return any(text == root or text.endswith(root) or root + "/" in text for root in roots)


def _points_into(proc: psutil.Process, roots: Sequence[str]) -> bool:
    with contextlib.suppress(psutil.Error):
        if any(_names(arg, roots) or root + "/" in arg for arg in proc.cmdline() for root in roots):
            return True
        with contextlib.suppress(psutil.Error, OSError):
            if _names(proc.cwd(), roots):
                return True
        return any(_names(value, roots) for value in proc.environ().values())
    return False


def processes_under(*roots: Path, markers: Iterable[str] | None = None) -> list[psutil.Process]:
    """Live processes (not this one) whose command line, working dir or environment names a root."""
    wanted = [str(r).rstrip("/") for r in roots]
    marker_list = list(markers or [])
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
            if marker_list and not any(m in cmdline for m in marker_list):
                continue
            if _points_into(proc, wanted):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def describe(procs: Iterable[psutil.Process]) -> str:
    lines = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            lines.append(f"{proc.pid}: {' '.join(proc.cmdline())[:200]}")
    return "\n".join(lines)


def ps_lines_with(text: str) -> list[str]:
    """Lines of ``ps -eo pid,args`` (every process's command line, as any user of the machine sees
    it) that contain ``text``."""
    import subprocess

    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True, timeout=60)
    return [line for line in out.stdout.splitlines() if text in line]


def files_containing(text: str, *roots: Path) -> list[str]:
    """Files under ``roots`` whose bytes contain ``text``: where a secret must not be."""
    found = []
    for root in roots:
        for path in Path(root).rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_symlink() and text.encode() in path.read_bytes():
                    found.append(str(path))
    return found
