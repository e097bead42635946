"""Class-data archives: recorded by the first run's JVMs, published once they exited (whole ones
only), mapped by every later JVM of the role, never left in a run or cluster directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_spark_triton.backends.local import jvm_archive
from airflow_spark_triton.backends.local.commands import spark_home


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(jvm_archive.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def recorded_by(run_dir: Path, name: str = "driver-classes.jsa", size: int = 16) -> Path:
    """What a recording JVM leaves as it exits (a stand-in with the archive's magic number)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / name).write_bytes(jvm_archive.DYNAMIC_ARCHIVE_MAGIC + b"c" * size)
    return run_dir / name


def test_the_first_run_records_and_its_success_publishes_for_every_later_jvm(cache, tmp_path):
    home = str(spark_home())
    first = tmp_path / "run-1"
    driver_flag = jvm_archive.jvm_options(home, first, "driver")
    quiet = jvm_archive.QUIET_RECORDING  # a recording JVM logs CDS errors only, not every skipped class
    assert driver_flag == f"-XX:ArchiveClassesAtExit={first}/driver-classes.jsa {quiet}"
    # An executor dumps on the job's request, into the directory the job is given (spark_jobs.class_archive).
    assert jvm_archive.jvm_options(home, first, "executor") == f"-XX:+RecordDynamicDumpInfo {quiet}"

    recorded = [recorded_by(first), recorded_by(first, "executor-classes-0.jsa", 64)]
    recorded.append(recorded_by(first, "executor-classes-1.jsa", 32))
    recorded.append(first / "executor-classes-2.jsa")  # no archive magic at its start
    recorded[-1].write_bytes(b"\0" * 128)
    driver, executor = jvm_archive.settle(home, first)
    assert driver == jvm_archive.archive_path(home, "driver") and driver.parent == cache
    assert executor == jvm_archive.archive_path(home, "executor")
    assert executor.stat().st_size == 4 + 64  # the largest whole one
    assert not any(p.exists() for p in recorded)
    assert jvm_archive.settle(home, first) == []  # idempotent

    for role, archive in (("driver", driver), ("executor", executor)):
        options = jvm_archive.jvm_options(home, tmp_path / "run-2", role)
        assert options == f"-XX:SharedArchiveFile={archive} -Xshare:auto"


def test_a_run_that_failed_in_its_job_publishes_its_whole_archive_too(cache, tmp_path):
    home = str(spark_home())
    recorded = recorded_by(tmp_path / "run")
    assert jvm_archive.settle(home, tmp_path / "run", ("driver",)) == [jvm_archive.archive_path(home)]
    assert not recorded.exists()


def test_off_means_no_archive_flags(monkeypatch, tmp_path):
    monkeypatch.setenv(jvm_archive.CACHE_ENV, "off")
    assert jvm_archive.jvm_options(str(spark_home()), tmp_path, "driver") == ""
    recorded = recorded_by(tmp_path)
    assert jvm_archive.settle(str(spark_home()), tmp_path) == []
    assert not recorded.exists()


def test_another_java_or_spark_gets_another_archive(cache, monkeypatch, tmp_path):
    home = str(spark_home())
    here = jvm_archive.archive_path(home)
    other_spark = tmp_path / "spark"
    (other_spark / "jars").mkdir(parents=True)
    assert jvm_archive.archive_path(str(other_spark)) != here
    monkeypatch.setattr(jvm_archive, "_java", lambda: Path("/bin/sh").resolve())
    assert jvm_archive.archive_path(home) != here


def test_the_daemons_record_one_file_per_worker_and_the_largest_is_published(cache, tmp_path):
    home, scratch = str(spark_home()), tmp_path / "cluster" / "local"
    assert (
        jvm_archive.jvm_options(home, scratch, "master")
        == f"-XX:ArchiveClassesAtExit={scratch}/master-classes.jsa {jvm_archive.QUIET_RECORDING}"
    )
    flag = jvm_archive.jvm_options(home, scratch, "worker", "1")
    assert flag == f"-XX:ArchiveClassesAtExit={scratch}/worker-classes-1.jsa {jvm_archive.QUIET_RECORDING}"
    recorded = [recorded_by(scratch, "master-classes.jsa"), recorded_by(scratch, "worker-classes-0.jsa", 8)]
    recorded.append(recorded_by(scratch, "worker-classes-1.jsa", 40))
    assert jvm_archive.recorded_files(scratch) == []  # a run's roles are not the daemons'
    master, worker = jvm_archive.settle(home, scratch, jvm_archive.DAEMON_ROLES)
    assert (master, worker) == (
        jvm_archive.archive_path(home, "master"),
        jvm_archive.archive_path(home, "worker"),
    )
    assert worker.stat().st_size == 4 + 40
    assert not any(p.exists() for p in recorded)
    assert (
        jvm_archive.jvm_options(home, scratch, "worker", "0")
        == f"-XX:SharedArchiveFile={worker} -Xshare:auto"
    )
