"""Retention under artifact_root on the Databricks emulator (its Files API lists, ages and deletes):
what finished runs and old releases left goes; what a live cluster or an active run refers to stays."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_spark_triton.cluster_spec import GpuClusterSpec
from tests.backends.databricks.test_backend import job
from tests.backends.databricks.test_cluster_spec import TAGS
from tests.databricks_emulator import Settings
from tests.hooks.conftest import ARTIFACT_ROOT

DAY_S = 86_400.0
RETENTION = dt.timedelta(days=30)


@pytest.fixture
def emulator_settings() -> Settings:
    return Settings(run_duration_s=3600)  # runs stay active until canceled


def put(emulator, path: str, days_old: float) -> str:
    emulator.workspace.files.write(path, b"x", overwrite=True)
    emulator.workspace.files.age(path, days_old * DAY_S)
    return path


def version(emulator, digest: str, days_old: float) -> list[str]:
    """A code version's three files, as ArtifactSet uploads them."""
    base = f"{ARTIFACT_ROOT}/artifacts/{digest}"
    names = ("airflow_spark_triton-0.0.1-py3-none-any.whl", "batch_inference.py", "databricks_init.sh")
    return [put(emulator, f"{base}/{name}", days_old) for name in names]


def age_all(emulator, prefix: str, days_old: float) -> None:
    for path in sorted((emulator.workspace.files.root / prefix.lstrip("/")).rglob("*")):
        if path.is_file():
            emulator.workspace.files.age(
                "/" + str(path.relative_to(emulator.workspace.files.root)), days_old * DAY_S
            )


def exists(emulator, path: str) -> bool:
    return emulator.workspace.files.exists(path)


def test_expired_files_go_and_whatever_is_in_use_stays(make_backend, emulator):
    backend = make_backend()
    # In use: a live all-purpose cluster (its code version), a run active on it (its report), and a
    # run active on jobs compute (its cluster definition). All of it looks 40 days old.
    cluster_id = backend.create_cluster(GpuClusterSpec(), TAGS)
    backend.wait_for_cluster(cluster_id, timeout_s=10)
    active = backend.submit_job(cluster_id, job(), "token-active")
    compute_id = backend.prepare_job_compute(GpuClusterSpec(), {**TAGS, "airflow_run_id": "jobs"})
    on_compute = backend.submit_job(compute_id, job(), "token-jobs")
    age_all(emulator, ARTIFACT_ROOT, 40)
    in_use_version = emulator.calls("POST", "2.1/clusters/create")[0].body["init_scripts"][0]["volumes"][
        "destination"
    ]
    active_progress = put(emulator, f"{ARTIFACT_ROOT}/reports/token-active.progress.json", 40)
    compute_file = f"{ARTIFACT_ROOT}/compute/{compute_id.split('-', 1)[1]}.json"
    assert exists(emulator, compute_file), compute_file

    # Expired: an older release, a finished run's report set, another group's cluster definition.
    old_version = version(emulator, "0ld0ld0ld0ld0ld0", days_old=50)
    old_reports = [put(emulator, f"{ARTIFACT_ROOT}/reports/token-done{suffix}", 45)
                   for suffix in (".json", ".progress.json", ".md")]  # fmt: skip
    old_compute = put(emulator, f"{ARTIFACT_ROOT}/compute/deadbeefdeadbeef.json", 45)
    # Kept by age alone: a recent report; and the newest release (35 days: newer than the others).
    recent = put(emulator, f"{ARTIFACT_ROOT}/reports/token-recent.json", 1)
    newest_version = version(emulator, "n3wn3wn3wn3wn3wn", days_old=35)

    removed = backend.remove_expired(RETENTION)

    assert sorted(removed) == sorted([*old_version, *old_reports, old_compute])
    assert not emulator.workspace.files.is_dir(
        f"{ARTIFACT_ROOT}/artifacts/0ld0ld0ld0ld0ld0"
    )  # emptied, removed
    for path in [in_use_version, active_progress, compute_file, recent, *newest_version]:
        assert exists(emulator, path), path
    deletes = emulator.calls("DELETE", "2.0/fs/files")
    assert {r.status for r in deletes} == {204} and len(deletes) == len(removed)

    # Once the cluster is deleted and the runs end, the same files expire too.
    backend.cancel_run(active)
    backend.cancel_run(on_compute)
    backend.delete_cluster(cluster_id)
    age_all(emulator, f"{ARTIFACT_ROOT}/reports", 40)  # the runs wrote their progress until canceled
    emulator.workspace.files.age(recent, DAY_S)
    removed = backend.remove_expired(RETENTION)
    assert in_use_version in removed and active_progress in removed and compute_file in removed
    for path in [recent, *newest_version]:
        assert exists(emulator, path), path
    assert backend.remove_expired(RETENTION) == []  # nothing left to do


def test_an_empty_or_missing_artifact_root_removes_nothing(make_backend, emulator):
    assert make_backend().remove_expired(RETENTION) == []
    assert make_backend(artifact_root=f"{ARTIFACT_ROOT}/never-used").remove_expired(RETENTION) == []
