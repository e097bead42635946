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
# Once a second: at four samples a second the sampler thread (psutil's full memory info of every
# process in the trees) took 0.20-0.27 of a core while a Spark path scored, about 12% of the
# 2-core bench machine, taken from the paths it measures. CPU between samples is interpolated.
SAMPLE_INTERVAL_S = 1.0


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
    by_category_pss: dict[str, float] = field(default_factory=dict)
    by_category_cpu: dict[str, float] = field(default_factory=dict)


class TreeSampler:
    """``roots()`` returns (pid, category-or-None) pairs; each root's descendants are included."""

    def __init__(
        self, roots: Callable[[], Iterable[tuple[int, str | None]]], interval_s: float = SAMPLE_INTERVAL_S
    ):
        self._roots = roots
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._cpu: dict[tuple[int, float], float] = {}  # (pid, create_time) -> last cpu seconds
        self._category: dict[tuple[int, float], str] = {}  # (pid, create_time) -> its category
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
        by_category_pss: dict[str, float] = {}
        count = 0
        for proc, cat in self._processes():
            with contextlib.suppress(psutil.Error):
                with proc.oneshot():
                    mem = proc.memory_full_info()
                    cpu = proc.cpu_times()
                    key = (proc.pid, proc.create_time())
                self._cpu[key] = cpu.user + cpu.system
                self._category[key] = cat
                rss += mem.rss / MB
                pss += getattr(mem, "pss", mem.rss) / MB
                by_category[cat] = by_category.get(cat, 0.0) + mem.rss / MB
                by_category_pss[cat] = by_category_pss.get(cat, 0.0) + getattr(mem, "pss", mem.rss) / MB
                count += 1
        cpu_by_category: dict[str, float] = {}
        for key, seconds in self._cpu.items():  # exited processes keep their last CPU time
            cpu_by_category[self._category[key]] = cpu_by_category.get(self._category[key], 0.0) + seconds
        return Sample(
            time.time(),
            rss,
            pss,
            sum(self._cpu.values()),
            by_category,
            count,
            by_category_pss,
            cpu_by_category,
        )

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

    def peak_of(self, categories: set[str], start: float, end: float) -> dict[str, float] | None:
        """Peak RSS and PSS of the processes of ``categories`` only (e.g. a Ray node without its head)."""
        window = self.window(start, end)
        if not window:
            return None
        return {
            "peak_rss_mb": round(
                max(sum(s.by_category_rss.get(c, 0.0) for c in categories) for s in window), 1
            ),
            "peak_pss_mb": round(
                max(sum(s.by_category_pss.get(c, 0.0) for c in categories) for s in window), 1
            ),
        }

    def cpu_seconds(self, start: float, end: float, categories: set[str] | None = None) -> float | None:
        """CPU seconds used by the trees (or by the processes of ``categories``) between two
        instants. Samples are a second apart, so each instant's cumulative CPU is interpolated
        between the samples around it (extrapolated from the nearest two at either end) rather
        than read off the nearest sample, which would drop up to a second at each end."""

        def total(sample: Sample) -> float:
            if categories is None:
                return sample.cpu_s
            return sum(sample.by_category_cpu.get(c, 0.0) for c in categories)

        points = sorted((s.t, total(s)) for s in self.samples)
        if len(points) < 2 or not self.window(start, end):
            return None
        return round(_linear_at(points, end) - _linear_at(points, start), 2)


def _linear_at(points: list[tuple[float, float]], t: float) -> float:
    """The piecewise-linear value at ``t`` of sorted (time, value) points, extended past either end."""
    index = next((i for i, (when, _) in enumerate(points) if when >= t), len(points))
    index = min(max(index, 1), len(points) - 1)
    (t0, v0), (t1, v1) = points[index - 1], points[index]
    if t1 == t0:
        return v1
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
