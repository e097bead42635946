"""What the backend ships: the wheel built once per source version, and the init script's own errors."""

from __future__ import annotations

import os
import subprocess
import zipfile

import pytest

from airflow_spark_triton.backends.base import BackendError
from airflow_spark_triton.backends.databricks.artifacts import INIT_SCRIPT, ArtifactError, artifact_set
from tests.hooks.conftest import ARTIFACT_ROOT


def test_the_wheel_is_built_from_the_sources_once_per_version():
    first, second = artifact_set(), artifact_set()
    assert first == second
    assert first.wheel.name == "airflow_spark_triton-0.1.0-py3-none-any.whl"
    names = zipfile.ZipFile(first.wheel).namelist()
    assert "spark_jobs/batch_inference.py" in names
    assert "airflow_spark_triton/init_scripts/databricks_init.sh" in names
    paths = first.remote_paths(ARTIFACT_ROOT)
    assert paths["wheel"] == f"{ARTIFACT_ROOT}/artifacts/{first.digest}/{first.wheel.name}"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SPARK_TRITON_WHEEL is not set"),
        (
            {"SPARK_TRITON_WHEEL": "/Volumes/x/y/z/missing.whl"},
            "wheel /Volumes/x/y/z/missing.whl is not readable",
        ),
    ],
)
def test_the_init_script_fails_with_a_clear_message(tmp_path, env, message):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_TRITON")}
    run = subprocess.run(
        ["bash", str(INIT_SCRIPT)],
        env={**clean, **env, "SPARK_TRITON_INIT_LOG": str(tmp_path / "init.log")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 1
    assert run.stderr.startswith("SPARK_TRITON_INIT_ERROR: ")
    assert message in run.stderr
    assert message in (tmp_path / "init.log").read_text()


def test_a_wheel_that_is_not_a_wheel_is_a_backend_error_naming_the_setting(tmp_path):
    bogus = tmp_path / "package.zip"
    bogus.write_bytes(b"PK")
    with pytest.raises(ArtifactError, match="connection extra 'wheel'") as raised:
        artifact_set(str(bogus))
    assert isinstance(raised.value, BackendError)
