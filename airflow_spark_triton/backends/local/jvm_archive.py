"""Class-data sharing (AppCDS) for the JVMs of a local cluster: their classes mapped from an
archive instead of parsed and verified again by every JVM.

Why: after the light JVM flags (:data:`~airflow_spark_triton.backends.local.commands.LOCAL_JVM_OPTIONS`),
JVM start-up was still the largest single cost of a small local run: loading some 15,000 Spark
classes on a cold JVM. Measured on a 60-row nightly DAG run (2 cores): driver JVM 18.7 CPU-s
without an archive, 9.9 with one, and the DAG run 70 s instead of 51 s; its two executors 15-17
CPU-s, 10.8 with theirs; the master and each worker (every cluster starts them) about 5 CPU-s
each without (``benchmarks/TUNING.md``).

How: the first run on a machine (per Java and Spark installation) has its JVMs record the
archives themselves: the driver into the run's directory as it exits (``-XX:ArchiveClassesAtExit``,
JDK 13+); one executor into the same directory while the application still runs, on the job's
request (``jcmd VM.cds dynamic_dump``, :mod:`spark_jobs.class_archive`: at exit, the Spark worker
killed most such dumps); the master and workers into the cluster's scratch directory as they exit
(one file per worker; their stop waits for it). When the run is over (driver, executor) or the
cluster deleted (master, workers), the backend publishes one file per role, the largest, into the
cache with an atomic rename, if it starts with the archive magic (:func:`complete`). Every later JVM of that role maps it
(``-XX:SharedArchiveFile`` with ``-Xshare:auto``: an archive the JVM cannot use is ignored, never
fatal). Concurrent first runs each record their own and the last one published wins; a JVM that
mapped an earlier file keeps its mapping. The archives hold class metadata only (50-170 MB measured),
nothing of the data or the environment.

The cache is ``$SPARK_TRITON_JVM_CACHE`` or ``~/.cache/airflow-spark-triton/jvm``;
``SPARK_TRITON_JVM_CACHE=off`` turns archives off, and so does a spec's own JVM options for the
roles they cover (``spark.driver.extraJavaOptions``, ``spark.executor.extraJavaOptions``,
``SPARK_DAEMON_JAVA_OPTS``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
from pathlib import Path

from spark_jobs.class_archive import ARCHIVE_NAME

CACHE_ENV = "SPARK_TRITON_JVM_CACHE"
RUN_ROLES = ("driver", "executor")  # a run's JVMs: recorded into the run's directory
DAEMON_ROLES = ("master", "worker")  # a cluster's: recorded into its scratch directory
DYNAMIC_ARCHIVE_MAGIC = (0xF00BABA8).to_bytes(4, "little")  # HotSpot's CDS_DYNAMIC_ARCHIVE_MAGIC
# What recording JVMs write: ``*`` is a worker's index, or the executor JVM's pid.
RECORDED = {
    "driver": "driver-classes.jsa",
    "executor": ARCHIVE_NAME.format(pid="*"),
    "master": "master-classes.jsa",
    "worker": "worker-classes-*.jsa",
}
#: A recording executor dumps on request while its application runs (:mod:`spark_jobs.class_archive`).
# A recording JVM warns once per class it cannot archive (hundreds of "Skipping ...: Signed JAR"),
# which buried the driver's own log lines (a log tail of 200 lines held nothing else): errors only.
QUIET_RECORDING = "-Xlog:cds=error"
DUMP_ON_REQUEST = f"-XX:+RecordDynamicDumpInfo {QUIET_RECORDING}"

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


def jvm_options(spark_home: str, directory: Path, role: str, node: str = "") -> str:
    """JVM flags for a JVM of ``role``: map the cached archive, or record one into ``directory``
    (``node`` names a worker's file). An executor records on request, not at exit: the Spark
    worker kills executors 10 s after their application ends, often before such a dump is whole."""
    archive = archive_path(spark_home, role)
    if archive is None:
        return ""
    if archive.is_file():
        return f"-XX:SharedArchiveFile={archive} -Xshare:auto"
    if role == "executor":
        return DUMP_ON_REQUEST
    return f"-XX:ArchiveClassesAtExit={directory / RECORDED[role].replace('*', node)} {QUIET_RECORDING}"


def recorded_files(directory: Path, roles: tuple[str, ...] = RUN_ROLES) -> list[Path]:
    """Archives the JVMs of ``roles`` recorded into ``directory`` (none once :func:`settle` has run)."""
    return sorted(p for role in roles for p in directory.glob(RECORDED[role]))


def complete(path: Path) -> bool:
    """Starts with HotSpot's dynamic-archive magic number. Whole archives do (checked on the
    files recorded here); a file without it is never published. That a JVM killed mid-dump leaves
    no magic is HotSpot's write order, not measured here; -Xshare:auto ignores an unusable one."""
    with contextlib.suppress(OSError), path.open("rb") as archive:
        return archive.read(4) == DYNAMIC_ARCHIVE_MAGIC
    return False


def settle(spark_home: str, directory: Path, roles: tuple[str, ...] = RUN_ROLES) -> list[Path]:
    """Once the JVMs of ``roles`` have exited: publish the largest whole archive they recorded into
    ``directory`` for each role, and never leave the files there. A run that failed in its job
    still exited its JVMs normally, so its archives are as good. When the run is over, the driver
    has exited and an executor's dump on request has returned; workers and the master have exited
    once the cluster is stopped. Idempotent; returns what was published."""
    published = []
    try:
        for role in roles:
            found = [p for p in recorded_files(directory, (role,)) if complete(p)]
            target = archive_path(spark_home, role)
            if found and target is not None:
                published.append(_publish(max(found, key=lambda p: p.stat().st_size), target))
    except OSError as exc:
        log.warning("Could not publish the class-data archives of %s: %s", directory, exc)
    finally:
        for path in recorded_files(directory, roles):
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
