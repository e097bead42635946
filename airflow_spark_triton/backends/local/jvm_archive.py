"""Class-data sharing (AppCDS) for the driver JVM of local runs: its classes mapped from an archive
instead of parsed and verified again by every driver.

Why: after the light JVM flags (:data:`~airflow_spark_triton.backends.local.commands.LOCAL_JVM_OPTIONS`),
the driver JVM's start-up was still the largest single cost of a small local run: loading some
15,000 Spark classes on a cold JVM. Measured on a 60-row nightly DAG run (2 cores): driver JVM
18.7 CPU-s without an archive, 9.9 with one, and the DAG run 70 s instead of 51 s
(``benchmarks/TUNING.md``).

How: the first driver on a machine (per Java and Spark installation) records the archive itself as
it exits (``-XX:ArchiveClassesAtExit``, JDK 13+) into its own run directory. Once that run has
succeeded, the backend publishes the file into the cache with an atomic rename; every later driver
maps it (``-XX:SharedArchiveFile`` with ``-Xshare:auto``: an archive the JVM cannot use is
ignored, never fatal). Concurrent first runs each record their own and the last one published wins;
a JVM that mapped an earlier file keeps its mapping. The archive holds class metadata only (about
170 MB), nothing of the data or the environment.

The cache is ``$SPARK_TRITON_JVM_CACHE`` or ``~/.cache/airflow-spark-triton/jvm``;
``SPARK_TRITON_JVM_CACHE=off`` turns archives off, and so does a spec's own
``spark.driver.extraJavaOptions``.
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
RUN_ARCHIVE = "driver-classes.jsa"  # what a recording driver writes into its run directory

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


def archive_path(spark_home: str) -> Path | None:
    """The cached archive for this Java and this Spark (a new JDK or Spark gets a new one)."""
    directory, java = cache_dir(), _java()
    if directory is None or java is None or not java.exists():
        return None
    jars = Path(spark_home) / "jars"
    identity = [str(java), str(java.stat().st_mtime_ns), str(jars.resolve())]
    with contextlib.suppress(OSError):
        identity.append(str(jars.stat().st_mtime_ns))
    key = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    return directory / f"driver-{key}.jsa"


def driver_options(spark_home: str, run_dir: Path) -> str:
    """JVM flags for a run's driver: map the cached archive, or record one if there is none yet."""
    archive = archive_path(spark_home)
    if archive is None:
        return ""
    if archive.is_file():
        return f"-XX:SharedArchiveFile={archive} -Xshare:auto"
    return f"-XX:ArchiveClassesAtExit={run_dir / RUN_ARCHIVE}"


def settle(spark_home: str, run_dir: Path, succeeded: bool) -> Path | None:
    """Once a run has finished: publish the archive its driver recorded if the run succeeded,
    and never leave the file in the run directory. Idempotent; returns what was published."""
    recorded = run_dir / RUN_ARCHIVE
    if not recorded.is_file():
        return None
    target = archive_path(spark_home) if succeeded else None
    try:
        if target is None:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f"{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.replace(recorded, staged)
        except OSError:  # another filesystem
            shutil.copyfile(recorded, staged)
        os.replace(staged, target)
        log.info("Published the driver JVM's class-data archive %s", target)
        return target
    except OSError as exc:
        log.warning("Could not publish the class-data archive %s: %s", recorded, exc)
        return None
    finally:
        recorded.unlink(missing_ok=True)
