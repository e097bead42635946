"""An executor JVM's class-data archive, dumped on request while the application still runs.

Why: a local cluster's first run on a machine records the class-data archives that later JVMs map
(``airflow_spark_triton.backends.local.jvm_archive``). Executors used to record theirs as they
exited (``-XX:ArchiveClassesAtExit``), but a Spark worker kills an application's executors 10 s
after the application ends, and on a loaded machine the 110 MB dump takes longer: in one CI run,
22 executors recorded and were killed before their dump was whole, for 15 CPU-s more each than a
JVM that maps the archive. So when the backend asks for it (:data:`EXECUTOR_ARCHIVE_ENV` in the
executors' environment), executors start with ``-XX:+RecordDynamicDumpInfo`` and, before the
application ends, one task has its own executor JVM write the archive (``jcmd <pid> VM.cds
dynamic_dump``, JDK 17+), which returns once the file is whole. One executor's archive is enough:
every executor loads the same classes.

Plain PySpark and the standard library; nothing here may fail a job: an archive is an optimization.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The directory the executor's archive goes to; set by the local backend on a recording run only.
EXECUTOR_ARCHIVE_ENV = "SPARK_TRITON_EXECUTOR_ARCHIVE_DIR"
ARCHIVE_NAME = "executor-classes-{pid}.jsa"
DUMP_TIMEOUT_S = 300.0


def requested_directory(spark: Any) -> str | None:
    """The directory the backend asked for, from the application's conf (``spark.executorEnv.*``)."""
    return spark.sparkContext.getConf().get(f"spark.executorEnv.{EXECUTOR_ARCHIVE_ENV}", None)


def dump_executor_archive(spark: Any) -> str | None:
    """If this run records the executors' archive, have one executor dump it; returns what it did
    (a line for the log and the report), or None when nothing was asked."""
    if not requested_directory(spark):
        return None
    try:
        (outcome,) = spark.sparkContext.parallelize([0], 1).map(lambda _: dump_here()).collect()
    except Exception as exc:  # the job's own outcome stands; the next run records again
        outcome = f"executor class-data archive not dumped: {type(exc).__name__}: {exc}"
    log.info("%s", outcome)
    return outcome


def dump_here() -> str:
    """On an executor: ``jcmd`` to this Python worker's executor JVM, into the requested directory."""
    from spark_jobs.node_state import executor_jvm_pid

    directory, pid = os.environ.get(EXECUTOR_ARCHIVE_ENV), executor_jvm_pid()
    if not directory or pid is None:
        return f"executor class-data archive not dumped: directory {directory!r}, executor JVM pid {pid}"
    target = Path(directory) / ARCHIVE_NAME.format(pid=pid)
    java = Path(os.readlink(f"/proc/{pid}/exe"))
    command = [str(java.with_name("jcmd")), str(pid), "VM.cds", "dynamic_dump", str(target)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=DUMP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"executor class-data archive not dumped: {' '.join(command)}: {exc}"
    output = " ".join((done.stdout + done.stderr).split())[-300:]
    return f"executor {pid} dumped its class-data archive to {target} (jcmd exit {done.returncode}: {output})"
