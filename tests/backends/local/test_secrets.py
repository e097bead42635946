"""No secrets on disk or in ps (issue #11), local backend: the environment of cluster and run processes.

Fast: the environment the backend builds and the modes of its records. Slow: canary secrets in the
Airflow worker's environment while a real local cluster runs a job; they reach no file under the
state home and no process of the cluster (environment or command line).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path

import psutil
import pytest

from airflow_spark_triton import secret_env
from airflow_spark_triton.backends.base import BackendConfigError, RunLifecycle
from airflow_spark_triton.backends.local import commands
from airflow_spark_triton.backends.local.backend import LocalSparkBackend
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.runs import processes as procs
from airflow_spark_triton.runs.processes import ProcessRecord
from spark_jobs.contract import InferenceJobConfig
from spark_jobs.json_files import write_json_atomic
from tests.backends.local.conftest import SPEC_CANARY, SPEC_SECRET
from tests.backends.local.test_backend import (
    READY_TIMEOUT_S,
    assert_nothing_left,
    fake_cluster,
    wait_for_log_line,
    wait_terminal,
    write_script,
)
from tests.processes import files_containing, processes_under, ps_lines_with
from tests.runs.test_env import SECRETS


def test_the_local_cluster_environment_has_no_worker_secret(canary, tmp_path):
    backend = LocalSparkBackend(spark_triton_conn_id=None, home=str(tmp_path / "home"))
    cluster_id = fake_cluster(backend)
    cluster = backend.get_cluster(cluster_id)
    cluster["spec"]["spark_env_vars"] = {"MODEL_API_KEY": "wanted"}
    env = commands.base_env(cluster, backend.cluster_dir(cluster_id))
    assert canary not in json.dumps(env)
    assert env["SPARK_TRITON_CLUSTER_ID"] == cluster_id and env["PYSPARK_PYTHON"] == sys.executable
    assert env["MODEL_API_KEY"] == "wanted", "the spec's own env vars are explicit: they pass"


def test_a_local_run_writes_no_secret_and_only_private_records(canary, tmp_path, started):
    backend = LocalSparkBackend(spark_triton_conn_id=None, home=str(tmp_path / "home"))
    cluster_id = fake_cluster(backend)
    job = InferenceJobConfig(
        input_table="/t/in", output_table="/t/out", model="m:M", logical_date="2026-11-24"
    )
    run_id = backend.submit_job(cluster_id, job, "dag__run__try")
    run_dir = backend.run_dir(run_id)

    supervisor_env = started[0]
    assert canary not in json.dumps(supervisor_env)
    assert supervisor_env["PATH"] == os.environ["PATH"]
    command = json.loads((run_dir / "command.json").read_text())
    assert command["env"]["SPARK_TRITON_CLUSTER_ID"] == cluster_id
    for path in [*run_dir.rglob("*"), *backend.cluster_dir(cluster_id).glob("*.json")]:
        if path.is_file():
            assert canary not in path.read_text(), path
    for name in ("command.json", "run.json", "status.json"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((backend.cluster_dir(cluster_id) / "cluster.json").stat().st_mode) == 0o600


def test_a_specs_secret_is_sealed_in_its_record_and_reaches_the_run_only_by_environment(
    tmp_path, secrets_key, started
):
    """spark_env_vars reach a run through the supervisor's environment: never its command line
    (no spark.executorEnv setting: executors inherit them from their worker), never command.json
    or cluster.json in the clear."""
    backend = LocalSparkBackend(spark_triton_conn_id=None, home=str(tmp_path / "home"))
    cluster_id = fake_cluster(backend)
    path = backend.cluster_dir(cluster_id) / "cluster.json"
    record = json.loads(path.read_text())
    record["spec"]["spark_env_vars"] = secret_env.seal({**SPEC_SECRET, "MODEL_DIR": "/models"}, "local")
    write_json_atomic(path, record)
    job = InferenceJobConfig(
        input_table="/t/in", output_table="/t/out", model="m:M", logical_date="2026-11-24"
    )
    run_dir = backend.run_dir(backend.submit_job(cluster_id, job, "token"))

    (supervisor_env,) = started
    assert supervisor_env["SPARK_TRITON_CANARY_TOKEN"] == SPEC_CANARY  # handed to spark-submit from here
    command = json.loads((run_dir / "command.json").read_text())
    assert command["secret_env"] == ["SPARK_TRITON_CANARY_TOKEN"]
    assert "SPARK_TRITON_CANARY_TOKEN" not in command["env"] and command["env"]["MODEL_DIR"] == "/models"
    assert not [arg for arg in command["argv"] if "SPARK_TRITON_CANARY_TOKEN" in arg or "MODEL_DIR" in arg]
    for file in [*run_dir.rglob("*"), path]:
        if file.is_file():
            assert SPEC_CANARY not in file.read_text(), file
    assert stat.S_IMODE(backend.home.stat().st_mode) == 0o700


def test_a_secret_reference_or_a_secret_without_a_key_is_refused_before_anything_starts(
    tmp_path, started, monkeypatch
):
    backend = LocalSparkBackend(spark_triton_conn_id=None, home=str(tmp_path / "home"))
    reference = GpuClusterSpec(spark_env_vars={"HF_TOKEN": "{{secrets/ml/hf}}"})
    with pytest.raises(BackendConfigError, match="HF_TOKEN is a Databricks secret reference"):
        backend.create_cluster(reference, {})
    monkeypatch.delenv("AIRFLOW__SPARK_TRITON__SECRETS_KEY", raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "")
    with pytest.raises(BackendConfigError, match=r"\[spark_triton\] secrets_key"):
        backend.create_cluster(GpuClusterSpec(spark_env_vars=SPEC_SECRET), {})
    assert started == [] and not list(backend.home.glob("clusters/*"))


def test_process_logs_are_private(tmp_path):
    log_path = tmp_path / "logs" / "p.log"
    record = procs.start_detached(
        [sys.executable, "-c", "print('hi')"], env=dict(os.environ), log_path=log_path
    )
    procs.wait_until(lambda: not procs.is_alive(record), 30)
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600 and log_path.read_text().strip() == "hi"


# -- slow: a real cluster and run ---------------------------------------------------------------

# Reports the variable names the driver and each executor's Python worker see (and a digest of the
# spec's secret: the value itself must reach no file), then keeps the application (and so its
# executors) alive until the test has inspected every process.
ENV_JOB = """
import hashlib, json, os, sys, time
from pyspark.sql import SparkSession

def seen(_=None):
    secret = os.environ.get("SPARK_TRITON_CANARY_TOKEN", "").encode()
    return {"names": sorted(os.environ), "secret_sha256": hashlib.sha256(secret).hexdigest()}

report, release = sys.argv[1], sys.argv[2]
spark = SparkSession.builder.getOrCreate()
executors = spark.sparkContext.parallelize(range(2), 2).map(seen).collect()
with open(report, "w") as out:
    json.dump({"driver": seen(), "executors": executors}, out)
print("INSPECT ME", flush=True)
deadline = time.monotonic() + 300
while not os.path.exists(release) and time.monotonic() < deadline:
    time.sleep(0.2)
spark.stop()
"""


def cluster_processes(backend: LocalSparkBackend, cluster_id: str, run_id: str) -> list[psutil.Process]:
    """Every live process of the cluster and the run: daemons, executors, Python workers, the
    supervisor, spark-submit and the Python driver (recorded ones, their descendants, and anything
    pointing into the state home)."""
    cluster = backend.get_cluster(cluster_id) or {}
    status = json.loads((backend.run_dir(run_id) / "status.json").read_text())
    recorded = [cluster["master"], *cluster["workers"], status["supervisor"], status["driver"]]
    found: dict[int, psutil.Process] = {p.pid: p for p in processes_under(backend.home)}
    for entry in recorded:
        record = ProcessRecord.from_dict(entry)
        if procs.is_alive(record):
            found[record.pid] = psutil.Process(record.pid)
            found.update({p.pid: p for p in procs.iter_descendants(record)})
    return list(found.values())


@pytest.mark.slow
@pytest.mark.usefixtures("no_process_left_behind")
def test_a_worker_secret_reaches_no_file_and_no_process(canary, secrets_key, tmp_path):
    """The Airflow worker's secrets reach no process of the cluster; the spec's own secret
    (spark_env_vars) reaches the driver and the executors, in their environments only: no command
    line (``ps``), no record, log or report."""
    backend = LocalSparkBackend(spark_triton_conn_id=None, home=str(tmp_path / "home"))
    spec = GpuClusterSpec(num_workers=1, executor_cores=1, worker_memory="1g", spark_env_vars=SPEC_SECRET)
    cluster_id = backend.create_cluster(spec, {"purpose": "secrets"})
    release = tmp_path / "release"
    try:
        backend.wait_for_cluster(cluster_id, READY_TIMEOUT_S)
        script = write_script(tmp_path, "env_job.py", ENV_JOB)
        run_id = backend._submit_script(
            cluster_id, script, lambda _id, run_dir: [str(run_dir / "report.json"), str(release)], "env"
        )
        wait_for_log_line(backend, run_id, "INSPECT ME", timeout_s=240)

        inspected: list[tuple[str, dict[str, str]]] = []
        for proc in cluster_processes(backend, cluster_id, run_id):
            try:
                inspected.append((" ".join(proc.cmdline()), proc.environ()))
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue  # exited meanwhile (e.g. spark-class's launcher)
        cmdlines = [cmdline for cmdline, _ in inspected]
        for kind in ("deploy.master.Master", "deploy.worker.Worker", "CoarseGrainedExecutorBackend",
                     "airflow_spark_triton.runs.supervisor", "SparkSubmit", "env_job.py"):  # fmt: skip
            assert any(kind in cmdline for cmdline in cmdlines), f"no {kind} process among {cmdlines}"
        assert ps_lines_with(SPEC_CANARY) == [] and ps_lines_with(canary) == []
        for cmdline, environ in inspected:
            assert canary not in cmdline and SPEC_CANARY not in cmdline, cmdline
            assert not [v for v in environ.values() if canary in v], f"canary in environ of {cmdline[:200]}"
            assert not set(SECRETS) & set(environ), cmdline[:200]

        release.touch()
        status = wait_terminal(backend, run_id)
        assert status.state == RunLifecycle.SUCCESS, backend.driver_log_tail(run_id)
        seen = json.loads((backend.run_dir(run_id) / "report.json").read_text())  # the script's own
        digest = hashlib.sha256(SPEC_CANARY.encode()).hexdigest()
        for process in [seen["driver"], *seen["executors"]]:
            assert not set(SECRETS) & set(process["names"])
            assert "SPARK_TRITON_STATE_DIR" in process["names"]
            assert process["secret_sha256"] == digest, "the spec's secret reached every process"
    finally:
        release.touch()
        backend.delete_cluster(cluster_id)
    assert_nothing_left(backend, cluster_id)

    data_dir = Path(os.environ.get("SPARK_TRITON_DATA_DIR", tmp_path))
    files = [p for root in {tmp_path, data_dir} for p in root.rglob("*") if p.is_file()]
    assert len(files) > 10
    assert not [p for p in files if canary.encode() in p.read_bytes()]
    assert files_containing(SPEC_CANARY, *{tmp_path, data_dir}) == []
    run_dir = backend.run_dir(run_id)
    for path in [run_dir / "run.json", run_dir / "command.json", run_dir / "status.json",
                 backend.cluster_dir(cluster_id) / "cluster.json"]:  # fmt: skip
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
