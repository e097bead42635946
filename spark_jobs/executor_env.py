"""Environment variables the driver hands on to its executors, named by the backend that started it.

The spark-submit backend gives a cluster spec's ``spark_env_vars`` to the driver in its environment
(as ``--conf spark.executorEnv.*`` they would show in ``ps`` and in SparkSubmitHook's log) and names
them in ``SPARK_TRITON_EXECUTOR_ENV``; before its session exists, the job copies each into
``spark.executorEnv.<name>``. (The backend also extends ``spark.redaction.regex`` to those settings,
so Spark's UI and event log show them redacted.) Plain Python: no Spark import here.
"""

from __future__ import annotations

from collections.abc import Mapping

EXECUTOR_ENV = "SPARK_TRITON_EXECUTOR_ENV"  # comma-separated names


def executor_env_conf(environ: Mapping[str, str]) -> dict[str, str]:
    """``spark.executorEnv.<name>`` for each variable ``environ`` names in ``SPARK_TRITON_EXECUTOR_ENV``
    and has; empty when it names none (every backend but spark-submit)."""
    names = [name.strip() for name in (environ.get(EXECUTOR_ENV) or "").split(",")]
    return {f"spark.executorEnv.{name}": environ[name] for name in names if name and name in environ}
