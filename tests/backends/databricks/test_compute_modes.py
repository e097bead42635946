"""Jobs compute and all-purpose compute on the Databricks emulator, with a cluster policy, an instance
pool and spot settings: what each mode sends, what the emulator (checking every body with
databricks-sdk's classes) makes of it, the teardown's cancel, idempotent resubmits and time limits.

The two ``slow`` tests run the nightly DAG through ``dag.test()`` on the emulator backed by local
Spark, one per mode; the others are fast (the emulator simulates clusters and runs).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from airflow_spark_triton.backends.base import ClusterError, RunLifecycle
from airflow_spark_triton.backends.databricks.backend import JOB_COMPUTE_PREFIX
from airflow_spark_triton.backends.databricks.cluster_spec import KEY_TAG, tag_key
from airflow_spark_triton.cluster_spec import ClusterSpecError, GpuClusterSpec
from tests.backends.databricks.test_backend import job, wait_terminal
from tests.backends.databricks.test_cluster_spec import TAGS
from tests.conftest import REPO
from tests.databricks_emulator import DatabricksEmulator, Fault, Settings
from tests.hooks.conftest import ARTIFACT_ROOT, TOKEN

POLICY_ID = "gpu-nightly"
POOL_ID = "pool-g5-xlarge"
# What a platform team's policy for GPU batch jobs typically pins: spot with fallback, a cost tag,
# a size cap, and a default the job does not have to know (applied with apply_policy_default_values).
POLICY = {
    "aws_attributes.availability": {"type": "fixed", "value": "SPOT_WITH_FALLBACK"},
    "aws_attributes.zone_id": {"type": "unlimited", "defaultValue": "auto"},
    "custom_tags.cost_center": {"type": "fixed", "value": "ml-nightly"},
    "num_workers": {"type": "range", "maxValue": 4},
}
GOVERNED = {
    "policy_id": POLICY_ID,
    "apply_policy_default_values": True,
    "instance_pool_id": POOL_ID,
    "aws_attributes": {"availability": "SPOT_WITH_FALLBACK", "first_on_demand": 1},
}


def seed(emulator: DatabricksEmulator) -> None:
    emulator.add_policy(POLICY_ID, POLICY)
    emulator.add_instance_pool(POOL_ID, "g5.xlarge")


def ok(emulator: DatabricksEmulator, method: str, endpoint: str) -> list[Any]:
    return [r for r in emulator.calls(method, endpoint) if r.status < 300]


def cluster_of_run(emulator: DatabricksEmulator, run_id: str):
    with emulator.workspace.lock:
        return emulator.workspace.clusters[emulator.workspace.runs[int(run_id)].cluster_id]


# -- jobs compute ---------------------------------------------------------------------------------


def test_jobs_compute_submits_one_new_cluster_and_never_calls_clusters_create(make_backend, emulator):
    seed(emulator)
    backend = make_backend()
    spec = GpuClusterSpec(num_workers=3, **GOVERNED)

    compute_id = backend.prepare_job_compute(spec, TAGS)
    assert compute_id == f"{JOB_COMPUTE_PREFIX}{tag_key(TAGS)}"
    assert emulator.workspace.clusters == {}  # no compute exists after the create step
    assert emulator.workspace.files.exists(f"{ARTIFACT_ROOT}/compute/{tag_key(TAGS)}.json")
    run_id = backend.submit_job(compute_id, job(), "try-1")
    status = wait_terminal(backend, run_id)

    assert status.state is RunLifecycle.SUCCESS, status.message
    assert not emulator.calls("POST", "2.1/clusters/create")
    (submit,) = ok(emulator, "POST", "2.2/jobs/runs/submit")
    (task,) = submit.body["tasks"]
    assert "existing_cluster_id" not in task
    new = task["new_cluster"]
    assert (new["policy_id"], new["apply_policy_default_values"], new["instance_pool_id"]) == (
        POLICY_ID,
        True,
        POOL_ID,
    )
    assert "node_type_id" not in new and "cluster_name" not in new and "autotermination_minutes" not in new
    assert new["aws_attributes"] == {"availability": "SPOT_WITH_FALLBACK", "first_on_demand": 1}
    assert new["spark_conf"]["spark.executor.resource.gpu.amount"] == "1"
    assert new["custom_tags"][KEY_TAG] == tag_key(TAGS)
    assert new["init_scripts"][0]["volumes"]["destination"].endswith("/databricks_init.sh")
    wheel = new["spark_env_vars"]["SPARK_TRITON_WHEEL"]
    assert task["spark_python_task"]["python_file"] == wheel.rsplit("/", 1)[0] + "/batch_inference.py"
    sent = json.loads(task["spark_python_task"]["parameters"][1])
    assert sent["expected_executors"] == 3

    # Databricks made the run's own cluster from it, with the pool's node type and the policy
    # applied, and terminated it when the run ended; runs/get names that cluster.
    cluster = cluster_of_run(emulator, run_id)
    run = backend.hook.get_run(int(run_id))
    assert run["cluster_instance"]["cluster_id"] == cluster.cluster_id
    assert run["tasks"][0]["new_cluster"] == new
    assert (cluster.source, cluster.state, cluster.termination_reason["code"]) == (
        "JOB",
        "TERMINATED",
        "JOB_FINISHED",
    )
    assert cluster.spec["node_type_id"] == "g5.xlarge"
    assert cluster.spec["aws_attributes"]["zone_id"] == "auto"  # the policy's default, applied
    assert cluster.spec["custom_tags"]["cost_center"] == "ml-nightly"  # the policy's fixed tag
    assert backend.get_run_report(run_id).run_id == "try-1"


def test_a_bad_policy_or_pool_fails_the_create_step_naming_the_setting_before_any_compute(
    make_backend, emulator
):
    seed(emulator)
    backend = make_backend()
    with pytest.raises(ClusterSpecError, match=r"'policy_id': 'no-such-policy' cannot be used.*404"):
        backend.prepare_job_compute(GpuClusterSpec(policy_id="no-such-policy"), TAGS)
    with pytest.raises(ClusterSpecError, match=r"'instance_pool_id': 'pool-x' cannot be used.*400"):
        backend.prepare_job_compute(GpuClusterSpec(instance_pool_id="pool-x"), TAGS)
    with pytest.raises(ClusterSpecError, match=r"'driver_instance_pool_id': 'pool-y' cannot be used"):
        backend.create_cluster(
            GpuClusterSpec(instance_pool_id=POOL_ID, driver_instance_pool_id="pool-y"), TAGS
        )
    with pytest.raises(ClusterSpecError, match=r"'aws_attributes.availability' must be one of"):
        backend.prepare_job_compute(
            GpuClusterSpec(aws_attributes={"availability": "SPOT_WITH_FALLBACK_AZ"}), TAGS
        )
    assert emulator.workspace.clusters == {} and emulator.workspace.runs == {}
    assert not emulator.calls("PUT", "2.0/fs/files")  # checked before anything was uploaded


def test_the_teardown_cancels_the_run_still_active_on_jobs_compute_and_databricks_ends_its_cluster(
    make_backend, emulator
):
    emulator.settings.run_duration_s = 60
    backend = make_backend()
    compute_id = backend.prepare_job_compute(GpuClusterSpec(), TAGS)
    other_id = backend.prepare_job_compute(GpuClusterSpec(), {**TAGS, "airflow_run_id": "other"})
    run_id = backend.submit_job(compute_id, job(), "killed-try")
    other = backend.submit_job(other_id, job(), "other-run")
    assert wait_terminal(backend, run_id, timeout_s=0.3).state is RunLifecycle.RUNNING

    backend.delete_cluster(compute_id)  # what DeleteClusterOperator does after a killed infer task

    assert backend.get_run_status(run_id).state is RunLifecycle.CANCELED
    assert cluster_of_run(emulator, run_id).state == "TERMINATED"
    assert backend.get_run_status(other).state is RunLifecycle.RUNNING  # another run's is untouched
    (listed,) = emulator.calls("GET", "2.2/jobs/runs/list")
    assert listed.query["active_only"] == ["true"] and listed.query["expand_tasks"] == ["true"]
    assert [r.body["run_id"] for r in emulator.calls("POST", "2.2/jobs/runs/cancel")] == [int(run_id)]
    assert not emulator.calls("POST", "2.1/clusters/permanent-delete")

    backend.delete_cluster(compute_id)  # a retried teardown: nothing left to cancel
    assert len(emulator.calls("POST", "2.2/jobs/runs/cancel")) == 1


def test_the_teardown_finds_the_run_across_pages_of_active_runs(make_backend, emulator):
    emulator.settings.run_duration_s = 60
    backend = make_backend()
    compute_id = backend.prepare_job_compute(GpuClusterSpec(), TAGS)
    run_id = backend.submit_job(compute_id, job(), "first")
    others = backend.prepare_job_compute(GpuClusterSpec(), {**TAGS, "airflow_run_id": "busy"})
    for i in range(26):  # newer runs: ours is on the second page of 25
        backend.submit_job(others, job(), f"busy-{i}")
    backend.delete_cluster(compute_id)
    assert backend.get_run_status(run_id).state is RunLifecycle.CANCELED
    assert len(emulator.calls("GET", "2.2/jobs/runs/list")) == 2


def test_a_resubmit_whose_answer_was_lost_gives_one_run_and_one_cluster(make_backend, emulator):
    backend = make_backend(timeout_seconds=1)
    compute_id = backend.prepare_job_compute(GpuClusterSpec(), TAGS)
    emulator.inject("POST", "2.2/jobs/runs/submit", Fault.slow(1.5))  # the first answer is lost
    first = backend.submit_job(compute_id, job(), "try-1")
    again = backend.submit_job(compute_id, job(), "try-1")  # a retried task try with the same token

    assert first == again
    assert len(emulator.calls("POST", "2.2/jobs/runs/submit")) >= 2  # it was sent again
    assert list(emulator.workspace.runs) == [int(first)]
    assert len(emulator.workspace.clusters) == 1


def test_the_create_step_is_idempotent_and_a_fixed_spec_reaches_the_next_run(make_backend, emulator):
    backend = make_backend()
    first = backend.prepare_job_compute(GpuClusterSpec(num_workers=2), TAGS)
    again = backend.prepare_job_compute(GpuClusterSpec(num_workers=3), TAGS)  # cleared and rerun
    assert first == again
    backend.submit_job(again, job(), "t")
    (submit,) = emulator.calls("POST", "2.2/jobs/runs/submit")
    assert submit.body["tasks"][0]["new_cluster"]["num_workers"] == 3


def test_a_jobs_compute_id_without_its_definition_fails_naming_the_create_task(make_backend, emulator):
    with pytest.raises(
        ClusterError, match=r"has no cluster definition at .*/compute/0123\.json: run its create"
    ):
        make_backend().submit_job(f"{JOB_COMPUTE_PREFIX}0123", job(), "t")
    assert not emulator.calls("POST", "2.2/jobs/runs/submit")


def test_a_jobs_compute_cluster_whose_init_script_fails_fails_the_run_with_the_scripts_stderr(
    make_backend, emulator
):
    """The run's own state message only names INIT_SCRIPT_FAILURE; the task's error carries the
    script's last stderr lines from the run's cluster's events, as on all-purpose clusters."""
    backend = make_backend()
    compute_id = backend.prepare_job_compute(GpuClusterSpec(num_workers=1), TAGS)
    stderr = (
        "Collecting nvidia-pytriton==0.7.0\nSPARK_TRITON_INIT_ERROR: pip could not install nvidia-pytriton"
    )
    emulator.fail_next_init_script(stderr)
    run_id = backend.submit_job(compute_id, job(), "t1")
    status = wait_terminal(backend, run_id)

    assert status.state is RunLifecycle.FAILED
    cluster = cluster_of_run(emulator, run_id)
    message = status.message
    assert message.startswith("INTERNAL_ERROR/FAILED: Unexpected failure while waiting for the cluster")
    assert f"cluster {cluster.cluster_id} is TERMINATED" in message
    assert "termination reason INIT_SCRIPT_FAILURE (CLIENT_ERROR)" in message
    assert "/databricks_init.sh: FAILED_EXECUTION Script exit status is non-zero" in message
    assert "SPARK_TRITON_INIT_ERROR: pip could not install nvidia-pytriton" in message
    assert stderr not in emulator.workspace.runs[int(run_id)].state_message, "the API alone never says it"
    ok_run = backend.submit_job(compute_id, job(), "t2")  # a run whose cluster ends as jobs do
    assert wait_terminal(backend, ok_run).message == ""


# -- time limits, both modes ---------------------------------------------------------------------


@pytest.mark.parametrize("compute", ["job", "all_purpose"])
def test_timeout_seconds_is_sent_and_the_emulator_ends_a_run_past_it_timedout(
    compute, make_backend, emulator
):
    emulator.settings.run_duration_s = 60
    backend = make_backend()
    spec = GpuClusterSpec(compute=compute)
    if compute == "job":
        cluster_id = backend.prepare_job_compute(spec, TAGS)
    else:
        cluster_id = backend.create_cluster(spec, TAGS)
    run_id = backend.submit_job(cluster_id, job(), "t", time_limit_s=0.4)

    assert emulator.calls("POST", "2.2/jobs/runs/submit")[0].body["timeout_seconds"] == 1  # rounded up
    status = wait_terminal(backend, run_id, timeout_s=5)
    assert status.state is RunLifecycle.FAILED
    assert "TERMINATED/TIMEDOUT" in status.message
    if compute == "job":
        assert cluster_of_run(emulator, run_id).state == "TERMINATED"
    backend.submit_job(cluster_id, job(), "no-limit", time_limit_s=None)
    assert "timeout_seconds" not in emulator.calls("POST", "2.2/jobs/runs/submit")[1].body


# -- all-purpose compute with governance --------------------------------------------------------


def test_all_purpose_compute_sends_the_governance_settings_to_clusters_create(make_backend, emulator):
    seed(emulator)
    backend = make_backend()
    cluster_id = backend.create_cluster(GpuClusterSpec(compute="all_purpose", **GOVERNED), TAGS)
    backend.wait_for_cluster(cluster_id, timeout_s=10)

    (create,) = emulator.calls("POST", "2.1/clusters/create")
    assert create.status == 200
    assert (create.body["policy_id"], create.body["instance_pool_id"]) == (POLICY_ID, POOL_ID)
    assert "node_type_id" not in create.body
    details = backend.hook.get_cluster(cluster_id)
    assert details["node_type_id"] == "g5.xlarge" and details["cluster_source"] == "API"
    assert details["aws_attributes"] == {
        "availability": "SPOT_WITH_FALLBACK",
        "first_on_demand": 1,
        "zone_id": "auto",
    }


def test_a_jobs_compute_cluster_is_never_taken_for_the_all_purpose_cluster_of_the_same_tags(
    make_backend, emulator
):
    emulator.settings.run_duration_s = 60
    backend = make_backend()
    run_id = backend.submit_job(backend.prepare_job_compute(GpuClusterSpec(), TAGS), job(), "t")
    wait_terminal(backend, run_id, timeout_s=0.5)
    assert cluster_of_run(emulator, run_id).state == "RUNNING"
    assert backend.find_cluster(TAGS) is None


def test_the_emulator_rejects_what_the_real_api_rejects_in_pools_and_policies(make_backend, emulator):
    from airflow.providers.databricks.exceptions import DatabricksApiError

    seed(emulator)
    backend = make_backend()
    call = backend.hook._do_api_call
    base = {"spark_version": "15.4.x-gpu-ml-scala2.12", "num_workers": 1}
    cases = [
        (
            {**base, "instance_pool_id": POOL_ID, "node_type_id": "g5.xlarge"},
            "node_type_id cannot be supplied",
        ),
        ({**base, "instance_pool_id": "pool-x"}, "Can't find an instance pool with id: pool-x"),
        ({**base, "node_type_id": "g5.xlarge", "policy_id": "nope"}, "Cluster policy nope does not exist"),
        (
            {
                **base,
                "instance_pool_id": POOL_ID,
                "policy_id": POLICY_ID,
                "aws_attributes": {"availability": "SPOT"},
            },
            "Validation failed for aws_attributes.availability, the value must be 'SPOT_WITH_FALLBACK'",
        ),
        (
            {**base, "instance_pool_id": POOL_ID, "policy_id": POLICY_ID, "num_workers": 8},
            "num_workers, the value must be in",
        ),
        (
            {**base, "instance_pool_id": POOL_ID, "aws_attributes": {"availabilty": "SPOT"}},
            r"aws_attributes\.availabilty' \(AwsAttributes has no such field",
        ),
        (
            {**base, "instance_pool_id": POOL_ID, "autoscale": {"min_workers": "1"}},
            r"autoscale\.min_workers' must be an integer",
        ),
    ]
    for body, message in cases:
        with pytest.raises(DatabricksApiError, match=message) as raised:
            call(("POST", "2.1/clusters/create"), body)
        assert raised.value.http_status_code == 400, body
        # the same rules for a jobs compute run's new_cluster
        task = {
            "task_key": "t",
            "new_cluster": body,
            "spark_python_task": {"python_file": "/Volumes/a/b/c/x.py"},
        }
        with pytest.raises(DatabricksApiError, match=message):
            call(("POST", "2.2/jobs/runs/submit"), {"tasks": [task]})
    assert emulator.workspace.clusters == {} and emulator.workspace.runs == {}
    policy = call(("GET", "2.0/policies/clusters/get"), {"policy_id": POLICY_ID})
    assert json.loads(policy["definition"]) == POLICY
    assert (
        call(("GET", "2.0/instance-pools/get"), {"instance_pool_id": POOL_ID})["node_type_id"] == "g5.xlarge"
    )


# -- the nightly DAG end to end on local Spark, one per mode --------------------------------------

CONN_ID = "databricks_compute_modes"


@pytest.mark.slow
@pytest.mark.parametrize("compute", ["job", "all_purpose"])
def test_the_nightly_dag_runs_in_both_modes_with_a_policy_a_pool_and_spot(
    compute, airflow_db, tmp_path, monkeypatch
):
    from airflow_spark_triton.dag_runner import run_dag
    from tests.faults import ledger
    from tests.faults.nightly import DAY, make_tables, nightly_conf

    tables = make_tables(tmp_path, [DAY])
    settings = Settings(cluster_start_s=0.0)
    emulator = DatabricksEmulator(
        TOKEN, local_spark=True, home=tmp_path / "emulator", settings=settings
    ).start()
    try:
        seed(emulator)
        connection = {
            **emulator.connection(),
            "extra": {"artifact_root": ARTIFACT_ROOT, "poll_interval_s": 1},
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
        # The deployment lets a run's conf pick this connection and the governance settings.
        monkeypatch.setenv("AIRFLOW__SPARK_TRITON__ALLOWED_CONN_IDS", CONN_ID)
        monkeypatch.setenv("AIRFLOW__SPARK_TRITON__ALLOWED_CLUSTER_SETTINGS", "*")
        conf = nightly_conf(tables, conn_id=CONN_ID, compute=compute, cluster_settings=GOVERNED)
        overrides = {"embed_documents": {"poll_interval_s": 1.0}}
        started = time.monotonic()
        result = run_dag(REPO / "dags", "nightly_embeddings", DAY, conf, retries=0, task_overrides=overrides)
        elapsed = time.monotonic() - started
        requests = [r for r in emulator.calls() if r.status < 300]
        with emulator.workspace.lock:
            clusters = list(emulator.workspace.clusters.values()) + list(emulator.workspace.deleted.values())
            runs = list(emulator.workspace.runs.values())
    finally:
        emulator.stop()
    left = ledger.local_clusters_left(emulator.home / "local_spark")
    print(f"nightly DAG, compute={compute}: {elapsed:.0f}s")

    assert result.state == "success", result.task_states
    report = result.xcoms["embed_documents"]
    assert (report["rows_read"], report["rows_scored"], report["rows_rejected"]) == (60, 57, 3)
    creates = [r for r in requests if r.endpoint == "2.1/clusters/create"]
    (submit,) = [r for r in requests if r.endpoint == "2.2/jobs/runs/submit"]
    (task,) = submit.body["tasks"]
    assert submit.body["timeout_seconds"] == 3 * 3600 + 60  # the infer task's execution_timeout + margin
    (run,) = runs
    (cluster,) = clusters
    if compute == "job":
        assert creates == []
        assert result.xcoms["create_cluster"].startswith(JOB_COMPUTE_PREFIX)
        body = task["new_cluster"]
        assert "existing_cluster_id" not in task
        assert (cluster.source, cluster.state, cluster.termination_reason["code"]) == (
            "JOB",
            "TERMINATED",
            "JOB_FINISHED",
        )
        assert not [r for r in requests if r.endpoint == "2.1/clusters/permanent-delete"]
        assert [r for r in requests if r.endpoint == "2.2/jobs/runs/list"]  # the teardown looked
    else:
        (create,) = creates
        body = create.body
        assert task["existing_cluster_id"] == result.xcoms["create_cluster"] == cluster.cluster_id
        deletes = [r.body["cluster_id"] for r in requests if r.endpoint == "2.1/clusters/permanent-delete"]
        assert deletes == [cluster.cluster_id] and cluster.source == "API"
    assert run.cluster_id == cluster.cluster_id
    assert (body["policy_id"], body["instance_pool_id"]) == (POLICY_ID, POOL_ID)
    assert body["aws_attributes"] == {"availability": "SPOT_WITH_FALLBACK", "first_on_demand": 1}
    assert "node_type_id" not in body
    assert cluster.spec["node_type_id"] == "g5.xlarge" and cluster.spec["aws_attributes"]["zone_id"] == "auto"
    assert body["custom_tags"]["airflow_dag_id"] == "nightly_embeddings"
    assert left == [], left
    assert all(TOKEN not in json.dumps(r.body) for r in requests)
