"""Samples the memory (RSS and PSS) and CPU time of process trees, summed per node, in a thread.

Only processes this benchmark started are looked at: the trees under the pids it is given (the
cluster's worker JVMs, the Triton servers the job recorded, the plain-torch process).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psutil

MB = 1024 * 1024


def category(proc: psutil.Process) -> str:
    """jvm (worker/executor), python (Spark Python workers, plain torch), triton (server tree)."""
    with contextlib.suppress(psutil.Error):
        name = proc.name()
        if name == "java":
            return "jvm"
        if "tritonserver" in name or "triton_python" in name:
            return "triton"
        cmdline = " ".join(proc.cmdline())
        if "spark_jobs.triton_server" in cmdline:
            return "triton"
    return "python"


@dataclass
class Sample:
    t: float
    rss_mb: float
    pss_mb: float
    cpu_s: float
    by_category_rss: dict[str, float] = field(default_factory=dict)
    processes: int = 0


class TreeSampler:
    """``roots()`` returns (pid, category-or-None) pairs; each root's descendants are included."""

    def __init__(self, roots: Callable[[], Iterable[tuple[int, str | None]]], interval_s: float = 0.25):
        self._roots = roots
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._cpu: dict[tuple[int, float], float] = {}  # (pid, create_time) -> last cpu seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _processes(self) -> list[tuple[psutil.Process, str]]:
        seen: dict[int, tuple[psutil.Process, str]] = {}
        for pid, forced in self._roots():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    if proc.pid not in seen:
                        seen[proc.pid] = (proc, forced or category(proc))
        return list(seen.values())

    def sample(self) -> Sample:
        rss = pss = 0.0
        by_category: dict[str, float] = {}
        count = 0
        for proc, cat in self._processes():
            with contextlib.suppress(psutil.Error):
                with proc.oneshot():
                    mem = proc.memory_full_info()
                    cpu = proc.cpu_times()
                    key = (proc.pid, proc.create_time())
                self._cpu[key] = cpu.user + cpu.system
                rss += mem.rss / MB
                pss += getattr(mem, "pss", mem.rss) / MB
                by_category[cat] = by_category.get(cat, 0.0) + mem.rss / MB
                count += 1
        return Sample(time.time(), rss, pss, sum(self._cpu.values()), by_category, count)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.interval_s)

    def window(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.t <= end]

    def peak(self, start: float, end: float) -> dict[str, float] | None:
        window = self.window(start, end)
        if not window:
            return None
        top = max(window, key=lambda s: s.rss_mb)
        return {
            "peak_rss_mb": round(top.rss_mb, 1),
            "peak_pss_mb": round(max(s.pss_mb for s in window), 1),
            "peak_rss_by_category_mb": {k: round(v, 1) for k, v in sorted(top.by_category_rss.items())},
            "processes_at_peak": top.processes,
        }

    def cpu_seconds(self, start: float, end: float) -> float | None:
        """CPU seconds used by the trees between two instants (nearest samples inside the window)."""
        window = self.window(start, end)
        if len(window) < 2:
            return None
        return round(window[-1].cpu_s - window[0].cpu_s, 2)
