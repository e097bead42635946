"""Faults of the cluster APIs: a REST 429/503 storm through a whole nightly run on the Databricks
emulator (which runs the job for real on local Spark), and a failing init script on both backends.

These replace the old end-to-end Databricks test: the storm run asserts everything it did (the
create body, one upload set, one run, the permanent delete, no token anywhere) and more.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from airflow_spark_triton.backends.base import ClusterError
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from tests.conftest import REPO
from tests.databricks_emulator import DatabricksEmulator, Settings
from tests.faults import ledger
from tests.faults.nightly import (
    DAY,
    PREVIOUS,
    Probe,
    assert_clean,
    make_tables,
    measure,
    nightly_conf,
    run_ids_of,
    seed_previous_run,
    table_version,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

TOKEN = "dapi0123456789abcdef0123456789abcdef"
CONN_ID = "databricks_faults"
ARTIFACT_ROOT = "/Volumes/main/default/spark_triton"


def use_emulator(emulator: DatabricksEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    connection = {**emulator.connection(), "extra": {"artifact_root": ARTIFACT_ROOT, "poll_interval_s": 1}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
    monkeypatch.setenv("AIRFLOW__SPARK_TRITON__ALLOWED_CONN_IDS", CONN_ID)  # a run's conf picks it


def run_nightly_on_databricks(tables, **params):
    """All-purpose compute: these faults are about ``clusters/create`` and its cleanup (the jobs
    compute default is run end to end in tests/backends/databricks/test_compute_modes.py)."""
    from airflow_spark_triton.dag_runner import run_dag

    conf = nightly_conf(tables, conn_id=CONN_ID, **{"compute": "all_purpose", **params})
    overrides = {"embed_documents": {"poll_interval_s": 1.0}}
    return run_dag(REPO / "dags", "nightly_embeddings", DAY, conf, retries=0, task_overrides=overrides)


def emulator_clusters_left(emulator: DatabricksEmulator) -> list[str]:
    """Workspace clusters never permanently deleted, and local Spark clusters behind them still up."""
    with emulator.workspace.lock:
        left = [f"{c.cluster_id}: {c.state}" for c in emulator.workspace.clusters.values()]
    return left + ledger.local_clusters_left(emulator.home / "local_spark")


def test_rest_429_503_storm_is_retried_through_a_whole_nightly_run(
    request, airflow_db, fault_home, timeline, monkeypatch
):
    tables = make_tables(fault_home, [DAY])
    seed_previous_run(tables, [DAY])
    emulator = DatabricksEmulator(TOKEN, local_spark=True, home=fault_home / "emulator").start()
    try:
        use_emulator(emulator, monkeypatch)
        emulator.start_storm()
        result = run_nightly_on_databricks(tables)
        emulator.stop_storm()
        clusters = emulator_clusters_left(emulator)
        row = measure(
            request, "REST 429/503 storm", f"infer {result.task_states.get('embed_documents')}, all retried",
            fault_home, tables, [DAY], None, timeline, backend="Databricks emulator",
        )  # fmt: skip
        row.clusters_left += len(clusters)
        row.details["emulator_clusters"] = clusters
        requests = emulator.calls()
    finally:
        emulator.stop()

    assert result.state == "success", result.task_states
    storm = Counter(r.status for r in requests)
    assert storm[429] and storm[503], f"no storm: {storm}"
    hit = {(r.method, r.endpoint.split("?")[0]) for r in requests if r.status in (429, 503)}
    for endpoint in ("2.1/clusters/create", "2.1/clusters/get", "2.2/jobs/runs/submit", "2.2/jobs/runs/get"):
        assert any(e.startswith(endpoint) for _, e in hit), f"the storm missed {endpoint}"
    ok = [r for r in requests if r.status < 300]
    (create,) = [r for r in ok if r.endpoint == "2.1/clusters/create"]
    conf_sent = create.body["spark_conf"]
    assert conf_sent["spark.executor.resource.gpu.amount"] == "1"
    assert conf_sent["spark.task.resource.gpu.amount"] == "1"
    assert create.body["custom_tags"]["airflow_dag_id"] == "nightly_embeddings"
    assert create.body["init_scripts"], "the init script must be attached"
    uploads = {r.path.rsplit("/", 1)[-1] for r in ok if r.method == "PUT"}
    assert "batch_inference.py" in uploads and any(name.endswith(".whl") for name in uploads)
    assert any(name.endswith(".sh") for name in uploads)
    # Retried calls never doubled anything: one cluster, one run, one permanent delete.
    assert len(emulator.workspace.deleted) == 1 and not emulator.workspace.clusters
    assert len(emulator.workspace.runs) == 1
    assert len([r for r in ok if r.endpoint == "2.2/jobs/runs/submit"]) == 1
    deletes = [r.body["cluster_id"] for r in ok if r.endpoint == "2.1/clusters/permanent-delete"]
    assert deletes == [result.xcoms["create_cluster"]]
    assert all(TOKEN not in json.dumps(r.body) for r in requests)
    assert TOKEN not in json.dumps(result.xcoms, default=str)
    report = result.xcoms["embed_documents"]
    assert (report["rows_read"], report["rows_scored"], report["rows_rejected"]) == (60, 57, 3)
    assert run_ids_of(tables, DAY) == {report["run_id"]}
    assert_clean(row)


def test_init_script_failure_on_databricks_fails_create_and_deletes_the_cluster(
    request, airflow_db, fault_home, timeline, monkeypatch
):
    tables = make_tables(fault_home, [DAY])
    seed_previous_run(tables, [DAY])
    versions = (table_version(tables.output), table_version(tables.rejects))
    settings = Settings(cluster_start_s=0.5, run_duration_s=0.1, cancel_s=0.1)
    emulator = DatabricksEmulator(TOKEN, home=fault_home / "emulator", settings=settings).start()
    try:
        use_emulator(emulator, monkeypatch)
        emulator.fail_next_init_script(
            "SPARK_TRITON_INIT_ERROR: pip could not install nvidia-pytriton==0.7.0"
        )
        result = run_nightly_on_databricks(tables)
        failed_at = time.monotonic()
        clusters = emulator_clusters_left(emulator)
        states = result.task_states
        row = measure(
            request, "init-script failure", f"create {states.get('create_cluster')}, infer {states.get('embed_documents')}",
            fault_home, tables, [DAY], failed_at, timeline, backend="Databricks emulator",
        )  # fmt: skip
        row.clusters_left += len(clusters)
        row.details["emulator_clusters"] = clusters
        deletes = [r.body["cluster_id"] for r in emulator.calls("POST", "2.1/clusters/permanent-delete")]
        created = list(emulator.workspace.deleted)
    finally:
        emulator.stop()

    assert result.state == "failed"
    assert result.task_states["create_cluster"] == "failed"
    assert result.task_states["embed_documents"] == "upstream_failed"
    assert created and deletes[:1] == created, "the create task deletes the cluster it made"
    assert (table_version(tables.output), table_version(tables.rejects)) == versions
    assert run_ids_of(tables, DAY) == {PREVIOUS}
    assert not Probe(fault_home).run_dirs()
    assert_clean(row)


def test_init_script_failure_on_the_local_backend_fails_create_and_stops_the_cluster(
    request, fault_home, timeline
):
    from airflow_spark_triton.backends.local.backend import LocalSparkBackend

    hook = LocalSparkBackend(spark_triton_conn_id=None, home=str(fault_home / "spark_triton"))
    script = fault_home / "init.sh"
    script.write_text(
        "set -euo pipefail\n"
        'echo "checking worker $SPARK_TRITON_WORKER_INDEX of $SPARK_TRITON_CLUSTER_ID"\n'
        'echo "no GPU driver on this node (worker $SPARK_TRITON_WORKER_INDEX)" >&2\n'
        "exit 7\n"
    )
    spec = GpuClusterSpec(num_workers=2, executor_cores=1, worker_memory="1g", init_script=str(script))
    with pytest.raises(ClusterError) as failure:
        hook.create_cluster(spec, {"dag_id": "broken"})
    raised_at = time.monotonic()
    left_when_create_failed = ledger.processes_under(fault_home)
    (cluster_dir,) = (hook.home / "clusters").iterdir()
    # The fault is the script's exit; its stderr was last written just before.
    failed_at = ledger.epoch_to_monotonic((cluster_dir / "logs" / "init-0.err").stat().st_mtime)
    state_after_failure = hook.get_cluster(cluster_dir.name)
    found = hook.find_cluster({"dag_id": "broken"})
    hook.delete_cluster(cluster_dir.name)  # the teardown after a failed create still succeeds
    message = str(failure.value)
    row = measure(
        request, "init-script failure", "create raises ClusterError; teardown ok", fault_home, None, [],
        failed_at, timeline, backend="local (hook)",
    )  # fmt: skip
    if not left_when_create_failed:  # create stops what it started before it raises: time that
        row.cleanup_s = round(max(0.0, raised_at - failed_at), 1)

    assert str(script) in message
    assert "exit code 7" in message
    assert "no GPU driver on this node (worker 0)" in message
    assert state_after_failure["state"] == "TERMINATED"
    assert "exit code 7" in state_after_failure["error"]
    assert found is None
    assert hook.get_cluster(cluster_dir.name)["state"] == "DELETED"
    assert_clean(row)
