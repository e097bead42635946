"""Class-data sharing (AppCDS) for the driver and executor JVMs of local runs: their classes mapped
from an archive instead of parsed and verified again by every JVM.

Why: after the light JVM flags (:data:`~airflow_spark_triton.backends.local.commands.LOCAL_JVM_OPTIONS`),
the driver JVM's start-up was still the largest single cost of a small local run: loading some
15,000 Spark classes on a cold JVM. Measured on a 60-row nightly DAG run (2 cores): driver JVM
18.7 CPU-s without an archive, 9.9 with one, and the DAG run 70 s instead of 51 s; its two
executors 15-17 CPU-s, 10.8 with theirs (``benchmarks/TUNING.md``).

How: the first run on a machine (per Java and Spark installation) has its driver and executors
record the archives themselves as they exit (``-XX:ArchiveClassesAtExit``, JDK 13+) into the
run's directory (one file per executor: ``{{EXECUTOR_ID}}``). Once those JVMs have exited (the
driver's when the run is over, the executors' when the cluster's workers are stopped), the backend
publishes the driver's and the largest executor's file into the cache with an atomic rename, if
it starts with the archive magic (:func:`complete`). Every later JVM of that role maps it
(``-XX:SharedArchiveFile`` with ``-Xshare:auto``: an archive the JVM cannot use is ignored, never
fatal). Concurrent first runs each record their own and the last one published wins; a JVM that
mapped an earlier file keeps its mapping. The archives hold class metadata only (60-170 MB),
nothing of the data or the environment.

The cache is ``$SPARK_TRITON_JVM_CACHE`` or ``~/.cache/airflow-spark-triton/jvm``;
``SPARK_TRITON_JVM_CACHE=off`` turns archives off, and so does a spec's own
``spark.driver.extraJavaOptions`` / ``spark.executor.extraJavaOptions`` for that role.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
from pathlib import Path

CACHE_ENV = "SPARK_TRITON_JVM_CACHE"
ROLES = ("driver", "executor")
DYNAMIC_ARCHIVE_MAGIC = (0xF00BABA8).to_bytes(4, "little")  # HotSpot's CDS_DYNAMIC_ARCHIVE_MAGIC
# What a recording JVM writes into its run directory; Spark fills in each executor's id.
RECORDED = {"driver": "driver-classes.jsa", "executor": "executor-classes-{{EXECUTOR_ID}}.jsa"}

log = logging.getLogger(__name__)


def cache_dir() -> Path | None:
    value = os.environ.get(CACHE_ENV, "")
    if value.lower() == "off":
        return None
    if value:
        return Path(value)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "airflow-spark-triton" / "jvm"


def _java() -> Path | None:
    """The java Spark's launcher runs: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(found).resolve() if found else None


def archive_path(spark_home: str, role: str = "driver") -> Path | None:
    """The cached archive of ``role`` for this Java and this Spark (a new JDK or Spark gets a new one)."""
    directory, java = cache_dir(), _java()
    if directory is None or java is None or not java.exists():
        return None
    jars = Path(spark_home) / "jars"
    identity = [str(java), str(java.stat().st_mtime_ns), str(jars.resolve())]
    with contextlib.suppress(OSError):
        identity.append(str(jars.stat().st_mtime_ns))
    key = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    return directory / f"{role}-{key}.jsa"


def jvm_options(spark_home: str, run_dir: Path, role: str) -> str:
    """JVM flags for a run's driver or executors: map the cached archive, or record one."""
    archive = archive_path(spark_home, role)
    if archive is None:
        return ""
    if archive.is_file():
        return f"-XX:SharedArchiveFile={archive} -Xshare:auto"
    return f"-XX:ArchiveClassesAtExit={run_dir / RECORDED[role]}"


def recorded_files(run_dir: Path, roles: tuple[str, ...] = ROLES) -> list[Path]:
    """Archives the run's JVMs of ``roles`` recorded (none once :func:`settle` has run)."""
    return sorted(p for role in roles for p in run_dir.glob(RECORDED[role].replace("{{EXECUTOR_ID}}", "*")))


def complete(path: Path) -> bool:
    """Starts with HotSpot's dynamic-archive magic number. Whole archives do (checked on the
    files recorded here); a file without it is never published. That a JVM killed mid-dump leaves
    no magic is HotSpot's write order, not measured here; -Xshare:auto ignores an unusable one."""
    with contextlib.suppress(OSError), path.open("rb") as archive:
        return archive.read(4) == DYNAMIC_ARCHIVE_MAGIC
    return False


def settle(spark_home: str, run_dir: Path, roles: tuple[str, ...] = ROLES) -> list[Path]:
    """Once the JVMs of ``roles`` have exited: publish the whole archives they recorded (the
    driver's, and the largest executor's), and never leave the files in the run directory. A run
    that failed in its job still exited its JVMs normally, so its archives are as good. The driver has exited when the run is over,
    executors only once their workers are stopped. Idempotent; returns what was published."""
    published = []
    try:
        for role in roles:
            found = [p for p in recorded_files(run_dir, (role,)) if complete(p)]
            target = archive_path(spark_home, role)
            if found and target is not None:
                published.append(_publish(max(found, key=lambda p: p.stat().st_size), target))
    except OSError as exc:
        log.warning("Could not publish the class-data archives of %s: %s", run_dir, exc)
    finally:
        for path in recorded_files(run_dir, roles):
            path.unlink(missing_ok=True)
    return published


def _publish(recorded: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f"{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.replace(recorded, staged)
    except OSError:  # another filesystem
        shutil.copyfile(recorded, staged)
    os.replace(staged, target)
    log.info("Published the class-data archive %s", target)
    return target
