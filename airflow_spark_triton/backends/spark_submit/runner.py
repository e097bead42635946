"""Runs one application through apache-airflow-providers-apache-spark's ``SparkSubmitHook``, detached.

``SparkSubmitHook.submit()`` blocks until the application ends (and, in standalone cluster mode,
polls the driver's status), and only its ``on_kill()`` knows how to stop a driver on each engine
(the local spark-submit, a standalone cluster-mode driver, a YARN application, a Kubernetes pod).
The spark-submit backend therefore runs it here, as the command the run supervisor launches, so
the Airflow task can defer or die while the run goes on, and a cancel reaches the engine.

Usage: ``python -m airflow_spark_triton.backends.spark_submit.runner --run-dir DIR``. ``DIR`` holds
``submit.json`` (the hook's keyword arguments and the application) and, readable only by this user,
``connection.json`` (the Airflow connection, handed over as ``AIRFLOW_CONN_<ID>`` and deleted once
read, so a detached process resolves it without the task's API server). The variable is removed
again as soon as ``SparkSubmitHook`` has resolved the connection, so spark-submit, the driver and
everything they start never see it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

SUBMIT_FILE = "submit.json"
CONNECTION_FILE = "connection.json"

log = logging.getLogger("airflow_spark_triton.backends.spark_submit.runner")


def _raw_logger() -> logging.Logger:
    """spark-submit's output goes to driver.log exactly as printed: the run supervisor reads the
    job's ``SPARK_TRITON_ERROR:`` line and Python tracebacks from line starts."""
    raw = logging.getLogger("airflow_spark_triton.backends.spark_submit.runner.spark_submit")
    if not raw.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        raw.addHandler(handler)
        raw.setLevel(logging.INFO)
        raw.propagate = False
    return raw


def connection_env_name(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def _adopt_connection(run_dir: Path, conn_id: str) -> None:
    path = run_dir / CONNECTION_FILE
    if path.exists():
        os.environ[connection_env_name(conn_id)] = path.read_text()
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="spark-submit one application through SparkSubmitHook")
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_dir = Path(args.run_dir)
    submit: dict[str, Any] = json.loads((run_dir / SUBMIT_FILE).read_text())
    _adopt_connection(run_dir, submit["hook"]["conn_id"])

    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    class RawOutputSparkSubmitHook(SparkSubmitHook):
        def __init__(self, **kwargs: Any) -> None:
            self._log = _raw_logger()  # LoggingMixin uses an instance's _log when set
            super().__init__(**kwargs)

    hook = RawOutputSparkSubmitHook(**submit["hook"])  # resolves the connection here, once
    # spark-submit and the driver inherit this process's environment: the connection stays out of it.
    os.environ.pop(connection_env_name(submit["hook"]["conn_id"]), None)

    def on_term(signum: int, _frame: Any) -> None:
        # The supervisor already gave the Python driver its SIGTERM and grace period; now the
        # engine-specific kill (YARN application, Kubernetes pod, standalone driver) must happen.
        log.info("signal %s: asking SparkSubmitHook to kill the application", signum)
        hook.on_kill()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    hook.submit(submit["application"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
