"""A canary secret through a whole DAG run on the local backend (issue #24, item 5).

A DAG author gives a job a credential the Airflow way: ``spark_env_vars`` templated from a Variable
(here an environment-backed one, so that no Airflow table holds it by design). The value must reach
the cluster's processes in their environments, and nothing else: no command line while the run is
going (``ps``), no task or driver log, no state record, report or table, and no row of the Airflow
metadata DB (rendered template fields included). The same guarantees backend by backend:
tests/backends/*/test_secrets.py; a deployed Airflow's canary: tests/deployed/test_nightly_deployed.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import sqlite3
import threading
from pathlib import Path

import psutil
import pytest

from airflow_spark_triton.demo.sample_digits import write_digits_table
from airflow_spark_triton.runs.records import state_home
from tests.backends.local.conftest import secrets_key  # noqa: F401 (the fixture)
from tests.conftest import REPO, session_processes
from tests.processes import files_containing, ps_lines_with

pytestmark = pytest.mark.slow

DAY = dt.date(2026, 11, 25)
VARIABLE = "spark_triton_canary_token"
CREATE = "classify_digits.create_cluster"


class Watch(threading.Thread):
    """Every half second while the DAG runs: command lines showing the canary (must stay empty),
    and processes holding it in their environment (the cluster's: how it must travel)."""

    def __init__(self, canary: str) -> None:
        super().__init__(daemon=True)
        self.canary = canary
        self.in_ps: list[str] = []
        self.holders: set[str] = set()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.in_ps += ps_lines_with(self.canary)
            for proc in psutil.process_iter(["pid", "cmdline"]):
                try:
                    if any(self.canary in value for value in proc.environ().values()):
                        self.holders.add(" ".join(proc.info["cmdline"] or [])[:120])
                except (psutil.Error, OSError):
                    continue


def test_a_spark_env_vars_secret_reaches_only_the_clusters_environments(
    airflow_db,
    secrets_key,  # noqa: F811 (the fixture)
    tmp_path,
    monkeypatch,
    capfd,
):
    from airflow_spark_triton.dag_runner import load_dag, run_dag

    canary = f"dag-canary-{secrets.token_hex(8)}"
    monkeypatch.setenv(f"AIRFLOW_VAR_{VARIABLE.upper()}", canary)
    spec = load_dag(REPO / "dags", "nightly_digits").get_task(CREATE).cluster_spec
    spec = {**spec, "spark_env_vars": {"SPARK_TRITON_CANARY_TOKEN": "{{ var.value." + VARIABLE + " }}"}}
    digits, predictions = tmp_path / "digits", tmp_path / "predictions"
    write_digits_table(str(digits), [DAY], 60)
    conf = {"input_table": str(digits), "output_table": str(predictions), "num_workers": 1}

    watch = Watch(canary)
    watch.start()
    try:
        result = run_dag(
            REPO / "dags",
            "nightly_digits",
            DAY,
            conf,
            retries=0,
            task_overrides={CREATE: {"cluster_spec": spec}},
        )
    finally:
        watch.done.set()
        watch.join(30)
    logged = "".join(capfd.readouterr())  # dag.test()'s task logs
    assert result.state == "success", (result.task_states, logged[-3000:])
    assert session_processes() == []

    assert watch.in_ps == [], "on a command line"
    for process in ("spark_jobs.triton_server", "batch_inference.py"):  # the model's server, the driver
        assert [h for h in watch.holders if process in h], f"no {process} got it: {watch.holders}"
    assert canary not in logged and "classify_digits.infer" in logged
    airflow_home = Path(os.environ["AIRFLOW_HOME"])
    with contextlib.closing(sqlite3.connect(airflow_home / "airflow.db")) as db:  # its WAL included
        rows = "\n".join(db.iterdump())  # every row of every table, BLOBs as hex
    rendered = [r for r in rows.splitlines() if r.startswith('INSERT INTO "rendered_task_instance_fields"')]
    assert [r for r in rendered if result.run_id in r and "SPARK_TRITON_CANARY_TOKEN" in r], (
        "the DB the grep reads"
    )
    assert canary not in rows and canary.encode().hex() not in rows.lower()
    assert files_containing(canary, airflow_home, state_home(), tmp_path) == []  # logs, records, data
