"""Command lines and environments of a local cluster's processes: master, workers, init scripts, spark-submit.

Pure functions of the cluster's record (``cluster.json``) and its directory; the backend starts the
processes and records them. Every environment starts from
:func:`~airflow_spark_triton.runs.env.run_environment`, never from the whole ``os.environ``: the
Airflow worker's connections, variables and secret settings must not reach a JVM, an executor or a
Triton server (or a run's ``command.json``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from airflow_spark_triton.backends.local import jvm_archive
from airflow_spark_triton.backends.model_dependencies import model_dependencies
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.errors import BackendConfigError, ClusterError
from airflow_spark_triton.runs.env import run_environment
from airflow_spark_triton.secret_env import unseal
from spark_jobs.class_archive import EXECUTOR_ARCHIVE_ENV
from spark_jobs.node_state import STATE_DIR_ENV

LOCALHOST = "127.0.0.1"
#: JSON list of PEP 508 strings: what ``local_init.sh`` checks is installed in each node's interpreter.
MODEL_REQUIREMENTS_ENV = "SPARK_TRITON_MODEL_REQUIREMENTS"

#: JVM flags of every JVM a local cluster starts (master, workers, the spark-submit launcher, driver,
#: executors), unless the spec sets its own: ``spark_env_vars`` ``SPARK_DAEMON_JAVA_OPTS`` /
#: ``SPARK_LAUNCHER_OPTS``, or ``spark_conf`` ``spark.driver.extraJavaOptions`` /
#: ``spark.executor.extraJavaOptions``. Why: on a local cluster the JVMs only coordinate, read and
#: write; the model runs in Python. Their cost is start-up, and most of that is C2 JIT compilation
#: and parallel GC threads competing with the Python workers for the same cores. C1 only and the
#: serial collector halved the JVMs' CPU time of a nightly run (97 -> 48 CPU-s on 2 cores) and cut
#: its wall time from 87 s to 69 s, with no measurable loss in rows/s (``benchmarks/TUNING.md``).
#: The master, workers, driver and executors also map class-data archives
#: (:mod:`~airflow_spark_triton.backends.local.jvm_archive`).
LOCAL_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
DAEMON_JVM_ENV = "SPARK_DAEMON_JAVA_OPTS"
_DAEMON_JVM_ENVS = (DAEMON_JVM_ENV, "SPARK_LAUNCHER_OPTS")

_MEMORY = re.compile(r"^\s*(?P<amount>\d+)\s*(?P<unit>[kmgt])b?\s*$", re.IGNORECASE)


def memory_mb(value: str) -> int:
    """Spark memory string ('1g', '512m') in MiB; a unit is required because Spark reads none as bytes."""
    match = _MEMORY.match(str(value))
    if not match:
        raise ClusterError(f"cluster setting 'worker_memory' must look like '1g' or '512m', got {value!r}")
    factor = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}[match["unit"].lower()]
    mb = int(int(match["amount"]) * factor)
    if mb < 1:
        raise ClusterError(f"cluster setting 'worker_memory' is too small: {value!r}")
    return mb


def spark_home() -> Path:
    """The pip package is a complete Spark distribution: bin/spark-class, bin/spark-submit, jars."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def spark_version() -> str:
    import pyspark

    return pyspark.__version__


def python_libdir(python: str) -> str:
    """libpython's directory of ``python``: PyTriton's stub must load this one, not the system's."""
    if Path(python).resolve() == Path(sys.executable).resolve():
        return str(sysconfig.get_config_var("LIBDIR") or "")
    return _interpreter_prints(python, "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')")


def python_version(python: str) -> str:
    """``major.minor`` of the interpreter ``python``."""
    if Path(python).resolve() == Path(sys.executable).resolve():
        return f"{sys.version_info.major}.{sys.version_info.minor}"
    return _interpreter_prints(python, "import sys; print('%d.%d' % sys.version_info[:2])")


def _interpreter_prints(python: str, code: str) -> str:
    """What ``python -c code`` prints: a fact of the nodes' interpreter, not this process's."""
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise ClusterError(f"interpreter {python} does not run: {result.stderr.strip()[-500:]}")
    return result.stdout.strip()


def packaged_init_script() -> Path:
    return Path(__file__).resolve().parents[2] / "init_scripts" / "local_init.sh"


def _prepend_path(first: str, existing: str | None) -> str:
    parts = [p for p in [first, *(existing or "").split(os.pathsep)] if p]
    return os.pathsep.join(dict.fromkeys(parts))


def spark_bin(cluster: dict[str, Any], name: str) -> str:
    return str(Path(cluster["spark_home"]) / "bin" / name)


def scratch_dir(cluster_dir: Path) -> Path:
    """The cluster's scratch space (removed at delete): workers' local dirs, daemons' recordings."""
    return cluster_dir / "local"


def servers_dir(cluster_dir: Path) -> Path:
    """Where the job records the cluster's Triton servers (``SPARK_TRITON_STATE_DIR``)."""
    return cluster_dir / "triton"


def base_env(cluster: dict[str, Any], cluster_dir: Path) -> dict[str, str]:
    """Environment shared by every Spark process of the cluster (daemons, drivers, executors).

    The spec's ``spark_env_vars`` are added, opened (:func:`~airflow_spark_triton.secret_env.unseal`):
    they are how a job gets a credential on purpose, and an environment is the only place they go;
    executors inherit them from their worker, so no ``spark.executorEnv`` setting (a command line)
    carries them.
    """
    env = run_environment()
    env.update(dict.fromkeys(_DAEMON_JVM_ENVS, LOCAL_JVM_OPTIONS))
    env.update(
        {
            "SPARK_HOME": cluster["spark_home"],
            "SPARK_LOCAL_IP": LOCALHOST,
            "SPARK_LOG_DIR": str(cluster_dir / "logs"),
            "PYSPARK_PYTHON": cluster["python"],
            "PYSPARK_DRIVER_PYTHON": cluster["python"],
            STATE_DIR_ENV: str(servers_dir(cluster_dir)),
            "SPARK_TRITON_CLUSTER_ID": cluster["cluster_id"],
            "LD_LIBRARY_PATH": _prepend_path(cluster.get("python_libdir", ""), env.get("LD_LIBRARY_PATH")),
        }
    )
    env.update(unseal(cluster["spec"].get("spark_env_vars")))
    return env


def master_command(cluster: dict[str, Any], port: int, webui_port: int) -> list[str]:
    return [
        spark_bin(cluster, "spark-class"),
        "org.apache.spark.deploy.master.Master",
        "--host", LOCALHOST,
        "--port", str(port),
        "--webui-port", str(webui_port),
    ]  # fmt: skip


def _daemon_env(cluster: dict[str, Any], cluster_dir: Path, role: str, node: str = "") -> dict[str, str]:
    """:func:`base_env` with the daemon's class-data archive, unless the spec sets its own flags."""
    env = base_env(cluster, cluster_dir)
    if DAEMON_JVM_ENV not in (cluster["spec"].get("spark_env_vars") or {}):
        archive = jvm_archive.jvm_options(cluster["spark_home"], scratch_dir(cluster_dir), role, node)
        env[DAEMON_JVM_ENV] = f"{LOCAL_JVM_OPTIONS} {archive}".strip()
    return env


def records_archive(env: dict[str, str]) -> bool:
    """The daemon started with ``env`` writes its class-data archive as it exits."""
    return "-XX:ArchiveClassesAtExit=" in env.get(DAEMON_JVM_ENV, "")


def master_env(cluster: dict[str, Any], cluster_dir: Path) -> dict[str, str]:
    env = _daemon_env(cluster, cluster_dir, "master")
    # Fail instead of silently moving to port+1: the URL we recorded must be the real one.
    # The REST submission server would otherwise take port 6066 and clash between clusters.
    env["SPARK_MASTER_OPTS"] = "-Dspark.port.maxRetries=0 -Dspark.master.rest.enabled=false"
    return env


def worker_command(
    cluster: dict[str, Any], spec: GpuClusterSpec, webui_port: int, work_dir: Path
) -> list[str]:
    return [
        spark_bin(cluster, "spark-class"),
        "org.apache.spark.deploy.worker.Worker",
        "--host", LOCALHOST,
        "--cores", str(spec.executor_cores),
        "--memory", spec.worker_memory,
        "--webui-port", str(webui_port),
        "--work-dir", str(work_dir),
        cluster["master"]["url"],
    ]  # fmt: skip


def worker_env(
    cluster: dict[str, Any], cluster_dir: Path, work_dir: Path, local_dir: Path, index: int
) -> dict[str, str]:
    # Executors inherit the worker's environment (ProcessBuilder copies it), and their Python
    # workers inherit the executor's: LD_LIBRARY_PATH set here reaches PyTriton's stub even
    # for an application that forgets spark.executorEnv.LD_LIBRARY_PATH.
    env = _daemon_env(cluster, cluster_dir, "worker", str(index))
    env.update({"SPARK_WORKER_DIR": str(work_dir), "SPARK_LOCAL_DIRS": str(local_dir)})
    return env


def model_requirements(reference: str, python: str = sys.executable) -> list[str]:
    """What every node's interpreter must have for the served model ``reference``: its declared
    ``requirements``, and each declared wheel as ``name==version`` (from the wheel's file name).
    An MLflow model logged with another Python (its ``python_env.yaml``, major.minor) than the nodes'
    interpreter ``python`` fails here, naming both: its pickled Python would not load.

    Nothing is installed locally (the nodes share the Airflow worker's interpreter, which this
    package never modifies): ``local_init.sh`` checks each one on every node before its worker
    starts, so a missing one fails the create task naming it (a spec's own ``init_script`` replaces
    ``local_init.sh`` and with it this check). A declaration that is not valid fails here, before
    anything starts.
    """
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    model = model_dependencies(reference, "cluster setting 'model'")
    if model.python:
        logged, nodes = ".".join(model.python.split(".")[:2]), python_version(python)
        if logged != nodes:
            raise BackendConfigError(
                f"model {reference!r} was logged with Python {model.python} (its python_env.yaml) and "
                f"the nodes' interpreter {python} is Python {nodes}: serve it from a Python {logged} "
                "interpreter (connection extra 'python'), or log the model again with this one"
            )
    checked = list(model.requirements)
    for wheel in model.wheels:
        try:
            name, version, _, _ = parse_wheel_filename(Path(wheel).name)
        except InvalidWheelFilename as exc:
            raise BackendConfigError(f"model {reference!r} declares wheel {wheel!r}: {exc}") from exc
        checked.append(f"{name}=={version}")
    return checked


def init_script_env(cluster: dict[str, Any], cluster_dir: Path, index: int, work_dir: Path) -> dict[str, str]:
    """``SPARK_TRITON_MODEL_REQUIREMENTS`` carries the record's ``model_requirements`` (see
    :func:`model_requirements`); absent when the spec names no model, so nothing is checked."""
    env = base_env(cluster, cluster_dir)
    env.update(
        {
            "SPARK_TRITON_WORKER_INDEX": str(index),
            "SPARK_TRITON_WORKER_DIR": str(work_dir),
            "SPARK_TRITON_PYTHON": cluster["python"],
            "SPARK_TRITON_SPARK_VERSION": cluster["spark_version"],
        }
    )
    if cluster.get("model_requirements"):
        env[MODEL_REQUIREMENTS_ENV] = json.dumps(list(cluster["model_requirements"]))
    return env


def spark_submit_command(
    cluster: dict[str, Any],
    cluster_dir: Path,
    run_id: str,
    run_dir: Path,
    script: Path,
    script_args: list[str],
    extra_conf: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """spark-submit of ``script`` in client mode to the cluster's master: (argv, env).

    No GPUs locally: stage-level scheduling asks for CPUs only. One executor per worker must be up
    before the first task (one Triton server per node).
    """
    spec = GpuClusterSpec.from_dict(cluster["spec"])
    env = base_env(cluster, cluster_dir)
    conf = {
        **spec.stage_level_scheduling_conf(with_gpus=False),
        f"spark.executorEnv.{STATE_DIR_ENV}": str(servers_dir(cluster_dir)),
        "spark.executorEnv.LD_LIBRARY_PATH": env["LD_LIBRARY_PATH"],
        "spark.driver.host": LOCALHOST,
        "spark.driver.bindAddress": LOCALHOST,
        "spark.ui.enabled": "false",
        "spark.pyspark.python": cluster["python"],
        "spark.pyspark.driver.python": cluster["python"],
    }
    # The driver's scratch space; spark.local.dir would only earn a warning in standalone mode.
    env["SPARK_LOCAL_DIRS"] = str(run_dir / "local")
    conf.setdefault("spark.executor.memory", f"{memory_mb(spec.worker_memory)}m")
    for role in jvm_archive.RUN_ROLES:
        archive = jvm_archive.jvm_options(cluster["spark_home"], run_dir, role)
        ours = f"{LOCAL_JVM_OPTIONS} {archive}".strip()
        if (
            conf.setdefault(f"spark.{role}.extraJavaOptions", ours) == ours
            and archive == jvm_archive.DUMP_ON_REQUEST
        ):
            conf[f"spark.executorEnv.{EXECUTOR_ARCHIVE_ENV}"] = str(run_dir)  # the job asks one to dump
    conf.setdefault("spark.scheduler.minRegisteredResourcesRatio", "1.0")
    conf.setdefault("spark.scheduler.maxRegisteredResourcesWaitingTime", "120s")
    conf.update(extra_conf or {})
    argv = [spark_bin(cluster, "spark-submit"), "--master", cluster["master"]["url"]]
    argv += ["--deploy-mode", "client", "--name", run_id]
    for key, value in sorted(conf.items()):
        argv += ["--conf", f"{key}={value}"]
    argv += [str(script), *script_args]
    return argv, env
