"""The spark-submit backend (through SparkSubmitHook) against a real, already running Spark standalone cluster."""

from __future__ import annotations

import datetime as dt
import json
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable

from airflow_spark_triton.backends.base import ClusterError, GpuSparkBackend, RunLifecycle
from airflow_spark_triton.backends.local.backend import LocalSparkBackend
from airflow_spark_triton.backends.registry import get_backend
from airflow_spark_triton.backends.spark_submit.backend import AttachmentState, SparkSubmitBackend
from airflow_spark_triton.backends.spark_submit.runner import CONNECTION_FILE, SUBMIT_FILE
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.runs import processes as procs
from spark_jobs.contract import InferenceJobConfig
from tests.backends.local.test_backend import wait_terminal
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("no_process_left_behind")

CONN_ID = "spark_existing"
SPEC = GpuClusterSpec(num_workers=2, executor_cores=1, worker_memory="1g")
DAY = dt.date(2026, 11, 23)


def set_spark_connection(monkeypatch: pytest.MonkeyPatch, master: str, **extra: object) -> None:
    host, _, port = master.rpartition(":")
    connection = {
        "conn_type": "spark",
        "host": host,
        "port": int(port),
        "extra": {"deploy-mode": "client", **extra},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SparkSubmitBackend:
    set_spark_connection(monkeypatch, "spark://127.0.0.1:7", python=sys.executable, gpus="false")
    return SparkSubmitBackend(CONN_ID, home=str(tmp_path / "home"))


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[tuple[LocalSparkBackend, str]]:
    """A running standalone cluster that is not the backend's own (started and stopped here)."""
    local = LocalSparkBackend(spark_triton_conn_id=None, home=str(tmp_path / "standalone"))
    cluster_id = local.create_cluster(SPEC, {"purpose": "existing cluster"})
    try:
        local.wait_for_cluster(cluster_id, 180)
        yield local, cluster_id
    finally:
        local.delete_cluster(cluster_id)


# -- fast: attach, conf, connection hand-over -------------------------------------------------


def test_the_spark_connection_type_selects_this_backend(backend):
    backend = get_backend(CONN_ID)
    assert isinstance(backend, SparkSubmitBackend)
    assert isinstance(backend, GpuSparkBackend)
    assert backend.master_url() == "spark://127.0.0.1:7"


def test_attach_find_and_detach_never_touch_the_cluster(backend):
    attachment_id = backend.create_cluster(SPEC, {"dag": "d", "run": "r1"})
    assert backend.find_cluster({"dag": "d", "run": "r1"}) == attachment_id
    assert backend.find_cluster({"dag": "d", "run": "r2"}) is None
    record = backend.get_attachment(attachment_id)
    assert record["master"] == "spark://127.0.0.1:7" and record["state"] == AttachmentState.ATTACHED

    backend.delete_cluster(attachment_id)
    backend.delete_cluster(attachment_id)  # idempotent
    assert backend.get_attachment(attachment_id)["state"] == AttachmentState.DETACHED
    assert backend.find_cluster({"dag": "d", "run": "r1"}) is None
    with pytest.raises(ClusterError, match="detached"):
        backend.submit_job(attachment_id, InferenceJobConfig("in", "out", "m:M", "2026-01-01"), "t")


def test_a_master_that_does_not_answer_fails_the_wait_naming_it(backend):
    attachment_id = backend.create_cluster(SPEC, {})
    with pytest.raises(ClusterError, match=r"spark://127\.0\.0\.1:7 \(connection 'spark_existing'\)"):
        backend.wait_for_cluster(attachment_id, timeout_s=1)


def test_a_spark_binary_missing_from_path_is_named(backend, monkeypatch):
    set_spark_connection(monkeypatch, "spark://127.0.0.1:7", **{"spark-binary": "spark3-submit"})
    missing = SparkSubmitBackend(CONN_ID, home=str(backend.home))
    attachment_id = missing.create_cluster(SPEC, {})
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ClusterError, match=r"'spark3-submit'.*not on the PATH"):
        missing.wait_for_cluster(attachment_id, timeout_s=1)


def test_gpu_and_one_executor_per_node_settings(backend, monkeypatch):
    cpu_conf = backend._spark_conf(SPEC)
    assert "spark.executor.resource.gpu.amount" not in cpu_conf
    assert cpu_conf["spark.executor.instances"] == "2" and cpu_conf["spark.cores.max"] == "2"
    assert cpu_conf["spark.pyspark.python"] == sys.executable

    set_spark_connection(monkeypatch, "spark://127.0.0.1:7")
    gpu_conf = SparkSubmitBackend(CONN_ID, home=str(backend.home))._spark_conf(SPEC)
    assert gpu_conf["spark.executor.resource.gpu.amount"] == "1"
    assert gpu_conf["spark.task.resource.gpu.amount"] == "1"
    assert gpu_conf["spark.executor.cores"] == "1"
    assert "spark.pyspark.python" not in gpu_conf


def test_the_connection_is_handed_to_the_runner_privately(backend, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    backend._hand_over_connection(run_dir)
    path = run_dir / CONNECTION_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["host"] == "spark://127.0.0.1"


def test_the_job_code_ships_as_one_archive_per_version(backend):
    first = backend._spark_jobs_archive()
    assert first == backend._spark_jobs_archive()
    import zipfile

    names = zipfile.ZipFile(first).namelist()
    assert "spark_jobs/batch_inference.py" in names and "spark_jobs/models/minilm.py" in names


# -- slow: the real job on a real standalone cluster ------------------------------------------


@pytest.mark.slow
def test_nightly_digits_runs_on_an_existing_standalone_cluster(airflow_db, standalone, tmp_path, monkeypatch):
    from airflow_spark_triton.dag_runner import run_dag
    from airflow_spark_triton.demo.sample_digits import BROKEN_PER_DAY, write_digits_table
    from spark_jobs.models.digits_classifier import predict_proba

    local, cluster_id = standalone
    master = local.get_cluster(cluster_id)["master"]["url"]
    home = tmp_path / "submit-home"
    set_spark_connection(monkeypatch, master, python=sys.executable, gpus="false", home=str(home))
    monkeypatch.setenv("AIRFLOW__SPARK_TRITON__ALLOWED_CONN_IDS", CONN_ID)  # a run's conf picks it
    digits, predictions = tmp_path / "digits", tmp_path / "predictions"
    write_digits_table(str(digits), [DAY], 60)
    conf = {
        "conn_id": CONN_ID,
        "input_table": str(digits),
        "output_table": str(predictions),
        "batch_size": 16,
    }

    result = run_dag(REPO / "dags", "nightly_digits", DAY, conf, retries=0)

    assert result.state == "success", result.task_states
    report = result.xcoms["classify_digits.infer"]
    assert (report["rows_read"], report["rows_scored"], report["rows_rejected"]) == (
        60 + BROKEN_PER_DAY,
        60,
        BROKEN_PER_DAY,
    )
    submit_backend = SparkSubmitBackend(CONN_ID)
    attachment_id = result.xcoms["classify_digits.create_cluster"]
    assert submit_backend.get_attachment(attachment_id)["state"] == AttachmentState.DETACHED
    (run_dir,) = (home / "attachments" / attachment_id / "runs").iterdir()
    submitted = json.loads((run_dir / SUBMIT_FILE).read_text())
    assert submitted["hook"]["conn_id"] == CONN_ID and submitted["hook"]["py_files"].endswith(".zip")
    assert not (run_dir / CONNECTION_FILE).exists(), "the runner deletes the connection once read"
    assert "Spark-Submit cmd: spark-submit --master " + master in (run_dir / "driver.log").read_text()

    # The existing cluster is still up (not ours to delete) and no Triton server outlived the job.
    assert procs.is_alive(procs.ProcessRecord.from_dict(local.get_cluster(cluster_id)["master"]))
    assert not [r for r in local._triton_servers(cluster_id) if procs.group_members(r)]

    out = DeltaTable(str(predictions)).to_pandas().merge(DeltaTable(str(digits)).to_pandas(), on="id")
    assert len(out) == 60 and out["id"].is_unique
    served = np.stack(out["probabilities"].to_numpy()).astype(np.float32)
    np.testing.assert_allclose(
        served, predict_proba(np.stack(out["pixels"].to_numpy())), rtol=1e-5, atol=1e-6
    )


@pytest.mark.slow
def test_cancel_stops_the_driver_and_its_servers_and_leaves_the_cluster(standalone, tmp_path, monkeypatch):
    from airflow_spark_triton.demo.sample_documents import sample_documents
    from spark_jobs.delta_io import write_pandas_table

    local, cluster_id = standalone
    set_spark_connection(
        monkeypatch, local.get_cluster(cluster_id)["master"]["url"], python=sys.executable, gpus="false"
    )
    backend = SparkSubmitBackend(CONN_ID, home=str(tmp_path / "submit-home"))
    documents = tmp_path / "documents"
    write_pandas_table(str(documents), sample_documents([DAY], 400), ["date"])
    attachment_id = backend.create_cluster(SPEC, {})
    backend.wait_for_cluster(attachment_id, 30)
    job = InferenceJobConfig(
        str(documents),
        str(tmp_path / "out"),
        "spark_jobs.models.hashing_embedder:MODEL",
        DAY.isoformat(),
        model_options={"seconds_per_batch": 1.0},  # 400 rows / 8 per batch: long enough to cancel
        batch_size=8,
    )
    run_id = backend.submit_job(attachment_id, job, "cancel-me")
    assert backend.submit_job(attachment_id, job, "cancel-me") == run_id, "same token, same run"
    record = local.state_dir_for_servers(cluster_id) / f"{run_id}.json"  # written once serving
    assert procs.wait_until(record.exists, 180, interval_s=0.5), backend.driver_log_tail(run_id)

    backend.delete_cluster(attachment_id)  # detaching cancels the active run

    status = wait_terminal(backend, run_id, 60)
    assert status.state == RunLifecycle.CANCELED, status
    assert "canceled by SIGTERM" in status.message, status.message
    assert backend.get_run_report(run_id).status == "CANCELED"
    assert not [r for r in local._triton_servers(cluster_id) if procs.group_members(r)], "the job stops them"
    out = tmp_path / "out"
    assert not (out / "_delta_log").exists(), "a canceled run commits nothing"
    assert not list(out.rglob("*.parquet")), "and leaves no staged files"
    assert procs.is_alive(procs.ProcessRecord.from_dict(local.get_cluster(cluster_id)["master"]))
