"""The driver's class-data archive: recorded by the first run, published only after a success,
mapped by every later driver, never left in a run directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_spark_triton.backends.local import jvm_archive
from airflow_spark_triton.backends.local.commands import spark_home


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(jvm_archive.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def recorded_by(run_dir: Path) -> Path:
    """What a recording driver leaves as it exits (a stand-in: the JVM writes the real one)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / jvm_archive.RUN_ARCHIVE).write_bytes(b"classes")
    return run_dir / jvm_archive.RUN_ARCHIVE


def test_the_first_run_records_and_its_success_publishes_for_every_later_driver(cache, tmp_path):
    home = str(spark_home())
    first = tmp_path / "run-1"
    assert (
        jvm_archive.driver_options(home, first)
        == f"-XX:ArchiveClassesAtExit={first / jvm_archive.RUN_ARCHIVE}"
    )

    recorded = recorded_by(first)
    published = jvm_archive.settle(home, first, succeeded=True)
    assert published == jvm_archive.archive_path(home) and published.read_bytes() == b"classes"
    assert published.parent == cache and not recorded.exists()
    assert jvm_archive.settle(home, first, succeeded=True) is None  # idempotent

    options = jvm_archive.driver_options(home, tmp_path / "run-2")
    assert options == f"-XX:SharedArchiveFile={published} -Xshare:auto"


def test_a_failed_run_publishes_nothing_and_leaves_no_archive(cache, tmp_path):
    home = str(spark_home())
    recorded = recorded_by(tmp_path / "run")
    assert jvm_archive.settle(home, tmp_path / "run", succeeded=False) is None
    assert not recorded.exists() and not cache.exists()


def test_off_means_no_archive_flags(monkeypatch, tmp_path):
    monkeypatch.setenv(jvm_archive.CACHE_ENV, "off")
    assert jvm_archive.driver_options(str(spark_home()), tmp_path) == ""
    recorded = recorded_by(tmp_path)
    assert jvm_archive.settle(str(spark_home()), tmp_path, succeeded=True) is None
    assert not recorded.exists()


def test_another_java_or_spark_gets_another_archive(cache, monkeypatch, tmp_path):
    home = str(spark_home())
    here = jvm_archive.archive_path(home)
    other_spark = tmp_path / "spark"
    (other_spark / "jars").mkdir(parents=True)
    assert jvm_archive.archive_path(str(other_spark)) != here
    monkeypatch.setattr(jvm_archive, "_java", lambda: Path("/bin/sh").resolve())
    assert jvm_archive.archive_path(home) != here
