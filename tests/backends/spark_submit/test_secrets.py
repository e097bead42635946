"""No secrets on disk or in ps (issues #11, #24), spark-submit backend: the detached runner gets no
secret of the worker, the connection only through a private file, and the spec's ``spark_env_vars``
only in its environment (never spark-submit's command line, SparkSubmitHook's log or a record).

Fast: what the backend writes and starts. Slow: a real standalone cluster runs a job that reports
what its driver and executors got, while the test greps ``ps`` and then every file."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from airflow_spark_triton.backends import spark_submit
from airflow_spark_triton.backends.base import BackendConfigError, RunLifecycle
from airflow_spark_triton.backends.spark_submit.backend import SparkSubmitBackend
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from spark_jobs.contract import InferenceJobConfig
from spark_jobs.executor_env import EXECUTOR_ENV
from tests.backends.local.conftest import SPEC_CANARY, SPEC_SECRET
from tests.backends.local.test_backend import wait_for_log_line, wait_terminal, write_script
from tests.backends.spark_submit.test_backend import set_spark_connection, standalone  # noqa: F401
from tests.processes import files_containing, ps_lines_with

JOB = InferenceJobConfig(input_table="/t/in", output_table="/t/out", model="m:M", logical_date="2026-11-24")


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


def test_spark_env_vars_reach_the_run_by_environment_never_a_command_line_or_record(
    secrets_key, tmp_path, monkeypatch, started
):
    set_spark_connection(monkeypatch, "spark://127.0.0.1:7", python=sys.executable)
    backend = SparkSubmitBackend("spark_existing", home=str(tmp_path / "home"))
    spec = GpuClusterSpec(num_workers=1, spark_env_vars={**SPEC_SECRET, "MODEL_DIR": "/models"})
    run_dir = backend.run_dir(backend.submit_job(backend.create_cluster(spec, {}), JOB, "token"))

    command = json.loads((run_dir / "command.json").read_text())
    assert command["secret_env"] == ["SPARK_TRITON_CANARY_TOKEN"]
    assert command["env"]["MODEL_DIR"] == "/models"  # not secret: recorded, for whoever debugs the run
    assert command["env"][EXECUTOR_ENV] == "MODEL_DIR,SPARK_TRITON_CANARY_TOKEN"  # for the job to hand on
    (supervisor_env,) = started
    assert supervisor_env["SPARK_TRITON_CANARY_TOKEN"] == SPEC_CANARY
    conf = json.loads((run_dir / "submit.json").read_text())["hook"]["conf"]
    assert not [key for key in conf if key.startswith("spark.executorEnv.")], "spark-submit's command line"
    assert conf["spark.redaction.regex"].endswith(
        r"|spark\.executorEnv\.(?:MODEL_DIR|SPARK_TRITON_CANARY_TOKEN)"
    )
    assert files_containing(SPEC_CANARY, backend.home) == []


def test_in_cluster_deploy_mode_secret_spark_env_vars_are_refused(tmp_path, monkeypatch, started):
    set_spark_connection(monkeypatch, "spark://127.0.0.1:7", **{"deploy-mode": "cluster"})
    backend = SparkSubmitBackend("spark_existing", home=str(tmp_path / "home"))
    with pytest.raises(
        BackendConfigError, match=r"SPARK_TRITON_CANARY_TOKEN look\(s\) secret.*deploy-mode cluster"
    ):
        backend.create_cluster(GpuClusterSpec(spark_env_vars=SPEC_SECRET), {})
    plain = backend.create_cluster(GpuClusterSpec(spark_env_vars={"MODEL_DIR": "/models"}), {})
    run_dir = backend.run_dir(backend.submit_job(plain, JOB, "token"))
    conf = json.loads((run_dir / "submit.json").read_text())["hook"]["conf"]
    assert conf["spark.executorEnv.MODEL_DIR"] == "/models"  # the only way to a remote driver's executors


# -- slow: a real cluster and run ---------------------------------------------------------------

# In place of the batch job: builds its session as the job does (batch_inference.spark_session),
# reports a digest of the spec's secret as the driver and each executor see it, and keeps running
# until the test has grepped ps.
CANARY_JOB = """
import hashlib, json, os, sys, time
from spark_jobs.batch_inference import spark_session
from spark_jobs.contract import InferenceJobConfig

def seen(_=None):
    return hashlib.sha256(os.environ.get("SPARK_TRITON_CANARY_TOKEN", "").encode()).hexdigest()

job = InferenceJobConfig.from_args(sys.argv[1:])
spark = spark_session(job)
report = {"driver": seen(), "executors": spark.sparkContext.parallelize(range(2), 2).map(seen).collect()}
with open(job.report_path + ".canary", "w") as out:
    json.dump(report, out)
print("INSPECT ME", flush=True)
release, deadline = os.environ["SPARK_TRITON_TEST_RELEASE"], time.monotonic() + 300
while not os.path.exists(release) and time.monotonic() < deadline:
    time.sleep(0.2)
spark.stop()
"""


@pytest.mark.slow
@pytest.mark.usefixtures("no_process_left_behind")
def test_a_specs_secret_reaches_driver_and_executors_and_no_command_line_log_or_file(
    canary,
    secrets_key,
    standalone,  # noqa: F811 (the fixture)
    tmp_path,
    monkeypatch,
):
    local, cluster_id = standalone
    set_spark_connection(monkeypatch, local.get_cluster(cluster_id)["master"]["url"], python=sys.executable,
                         gpus="false")  # fmt: skip
    release = tmp_path / "release"
    monkeypatch.setenv("SPARK_TRITON_TEST_RELEASE", str(release))  # a SPARK_* name: reaches the driver
    monkeypatch.setattr(
        spark_submit.backend, "JOB_SCRIPT", write_script(tmp_path, "canary_job.py", CANARY_JOB)
    )
    backend = SparkSubmitBackend("spark_existing", home=str(tmp_path / "home"))
    spec = GpuClusterSpec(num_workers=2, executor_cores=1, worker_memory="1g", spark_env_vars=SPEC_SECRET)
    attachment_id = backend.create_cluster(spec, {})
    try:
        run_id = backend.submit_job(attachment_id, JOB, "token")
        wait_for_log_line(backend, run_id, "INSPECT ME", timeout_s=240)
        assert ps_lines_with(SPEC_CANARY) == [] and ps_lines_with(canary) == []
        release.touch()
        assert wait_terminal(backend, run_id).state == RunLifecycle.SUCCESS, backend.driver_log_tail(run_id)
    finally:
        release.touch()
        backend.delete_cluster(attachment_id)
    seen = json.loads(Path(f"{backend.report_path(run_id)}.canary").read_text())
    digest = hashlib.sha256(SPEC_CANARY.encode()).hexdigest()
    assert seen == {"driver": digest, "executors": [digest, digest]}
    log = (backend.run_dir(run_id) / "driver.log").read_text()
    assert "Spark-Submit cmd:" in log and "spark.redaction.regex" in log  # SparkSubmitHook's own log
    assert files_containing(SPEC_CANARY, tmp_path) == [] and files_containing(canary, tmp_path) == []
