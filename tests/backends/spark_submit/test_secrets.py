"""No secrets on disk or in ps (issue #11), spark-submit backend: the detached runner gets no secret,
and the connection only through a private file."""

from __future__ import annotations

import json
import os
import stat

from airflow_spark_triton.backends.spark_submit.backend import SparkSubmitBackend
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from spark_jobs.contract import InferenceJobConfig


def test_the_spark_submit_runner_gets_no_secret_and_no_connection(canary, tmp_path, monkeypatch, started):
    connection = {"conn_type": "spark", "host": "127.0.0.1", "port": 7, "password": canary,
                  "extra": {"deploy-mode": "client", "gpus": "false"}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_CANARY", json.dumps(connection))
    backend = SparkSubmitBackend("spark_canary", home=str(tmp_path / "home"))
    attachment_id = backend.create_cluster(GpuClusterSpec(num_workers=1), {})
    job = InferenceJobConfig(
        input_table="/t/in", output_table="/t/out", model="m:M", logical_date="2026-11-24"
    )
    run_dir = backend.run_dir(backend.submit_job(attachment_id, job, "token"))

    command = json.loads((run_dir / "command.json").read_text())
    assert command["env"]["AIRFLOW_HOME"] == os.environ["AIRFLOW_HOME"]
    assert canary not in json.dumps(command) and canary not in json.dumps(started)
    # The password is only in the hand-over file, which only this user can read.
    holders = [p.name for p in run_dir.rglob("*") if p.is_file() and canary in p.read_text()]
    assert holders == ["connection.json"]
    for name in ("command.json", "run.json", "status.json", "submit.json", "connection.json"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o600, name
