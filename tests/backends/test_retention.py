"""Retention of the local and spark-submit backends' state (backends/supervised.py): a finished
owner (DELETED cluster, DETACHED attachment) whose runs are all finished and in which nothing changed
for the retention period goes, with its logs and reports; anything live or recent stays."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest

from airflow_spark_triton.backends.local.backend import LocalSparkBackend
from airflow_spark_triton.backends.spark_submit.backend import SparkSubmitBackend
from spark_jobs.json_files import write_json_atomic

DAY_S = 86_400.0
RETENTION = dt.timedelta(days=30)


def age(path: Path, days: float) -> None:
    """Everything under ``path`` (and itself) last changed ``days`` ago."""
    when = time.time() - days * DAY_S
    for item in [*path.rglob("*"), path]:
        os.utime(item, (when, when))


def owner(backend, owner_id: str, record: dict, runs: dict[str, str], days_old: float) -> Path:
    """An owner directory with its record, a log and runs in the given states, all ``days_old``."""
    directory = backend.owners_dir / owner_id
    (directory / "logs").mkdir(parents=True)
    write_json_atomic(directory / backend._record(owner_id).path.name, record)
    (directory / "logs" / "master.log").write_text("started\n")
    for suffix, state in runs.items():
        run_id = f"{owner_id}-run-{suffix}"
        run_dir = directory / "runs" / run_id
        run_dir.mkdir(parents=True)
        write_json_atomic(run_dir / "run.json", {"run_id": run_id, "idempotency_token": suffix})
        write_json_atomic(run_dir / "status.json", {"run_id": run_id, "state": state})
        (run_dir / "driver.log").write_text("done\n")
    age(directory, days_old)
    return directory


def cluster(backend: LocalSparkBackend, hex12: str, state: str, days_old: float, **runs: str) -> Path:
    cluster_id = f"local-{hex12}"
    return owner(backend, cluster_id, {"cluster_id": cluster_id, "state": state}, runs, days_old)


@pytest.fixture
def local(tmp_path: Path) -> LocalSparkBackend:
    return LocalSparkBackend(spark_triton_conn_id=None, home=str(tmp_path / "home"))


def test_only_finished_unchanged_clusters_go(local):
    expired = cluster(local, "00000000000a", "DELETED", 40, aaaaaaaa="SUCCESS", bbbbbbbb="CANCELED")
    recent = cluster(local, "00000000000b", "DELETED", 5, aaaaaaaa="SUCCESS")
    running = cluster(local, "00000000000c", "RUNNING", 40, aaaaaaaa="SUCCESS")
    deleting = cluster(local, "00000000000d", "DELETING", 40)
    terminated = cluster(local, "00000000000e", "TERMINATED", 40)  # processes may remain until deleted
    unfinished_run = cluster(local, "00000000000f", "DELETED", 40, aaaaaaaa="RUNNING")
    touched = cluster(local, "000000000010", "DELETED", 40, aaaaaaaa="SUCCESS")
    (touched / "logs" / "reaper.log").write_text("a late line\n")  # changed today
    stranger = local.owners_dir / "not-a-cluster"
    stranger.mkdir()
    age(stranger, 40)

    assert local.remove_expired(RETENTION) == [str(expired)]
    assert not expired.exists()
    for kept in (recent, running, deleting, terminated, unfinished_run, touched, stranger):
        assert kept.is_dir(), kept
    assert local.remove_expired(RETENTION) == []
    assert local.remove_expired(dt.timedelta(days=1)) == [str(recent)]


def test_a_home_without_clusters_removes_nothing(local):
    assert local.remove_expired(RETENTION) == []


def test_a_detached_attachment_goes_with_the_reports_written_outside_it(tmp_path):
    backend = SparkSubmitBackend("spark_default", home=str(tmp_path / "home"))
    report_dir = tmp_path / "reports"
    attachment = {"attachment_id": "submit-00000000000a", "state": "DETACHED", "report_dir": str(report_dir)}
    directory = owner(backend, "submit-00000000000a", attachment, {"aaaaaaaa": "SUCCESS"}, 40)
    report = report_dir / "submit-00000000000a-run-aaaaaaaa"
    report.mkdir(parents=True)
    (report / "report.json").write_text("{}")
    age(report, 40)
    attached = owner(backend, "submit-00000000000b", {"state": "ATTACHED"}, {"aaaaaaaa": "SUCCESS"}, 40)

    assert backend.remove_expired(RETENTION) == [str(report), str(directory)]
    assert not report.exists() and not directory.exists() and attached.is_dir()
