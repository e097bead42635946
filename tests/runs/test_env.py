"""No secrets on disk or in ps (issue #11): the allow-listed environment of every process a backend
starts, and the modes of record files. What the backends build from it: tests/backends/*/test_secrets.py.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from airflow_spark_triton.runs.env import looks_secret, run_environment
from spark_jobs.json_files import READABLE_MODE, write_json_atomic

CANARY = "canary-s3cr3t-7f1d0c"

SECRETS = {
    "AIRFLOW_CONN_CANARY_DB": f"postgresql://etl:{CANARY}@db:5432/x",
    "AIRFLOW_VAR_API": CANARY,
    "DATABRICKS_TOKEN": CANARY,
    "AWS_SECRET_ACCESS_KEY": CANARY,
    "AWS_SESSION_TOKEN": CANARY,
    "GITHUB_PAT": CANARY,
    # allow-listed prefixes, secret all the same
    "HF_TOKEN": CANARY,
    "HUGGINGFACE_HUB_TOKEN": CANARY,
    "SPARK_AUTH_SECRET": CANARY,
    "SPARK_TRITON_API_KEY": CANARY,
    "HADOOP_CREDSTORE_PASSWORD": CANARY,
    "SPARK_REMOTE": f"sc://host:443/;token={CANARY}",
    "HTTPS_PROXY": f"http://me:{CANARY}@proxy:3128",
    "JAVA_TOOL_OPTIONS": f"-Djavax.net.ssl.trustStorePassword={CANARY}",
    # Airflow's own configuration, even where its options are passed
    "AIRFLOW__CORE__FERNET_KEY": CANARY,
    "AIRFLOW__API__SECRET_KEY": CANARY,
    "AIRFLOW__API_AUTH__JWT_SECRET": CANARY,
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql://airflow:{CANARY}@db/airflow",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": f"echo {CANARY}",
    "AIRFLOW__CELERY__BROKER_URL": f"redis://:{CANARY}@redis:6379/0",
    "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps({"token": CANARY}),
    "AIRFLOW__SMTP__SMTP_PASSWORD": CANARY,
}

KEPT = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/etl",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    "TMPDIR": "/tmp",
    "PYTHONPATH": "/opt/lib",
    "VIRTUAL_ENV": "/opt/venv",
    "JAVA_HOME": "/usr/lib/jvm/java-17",
    "LD_LIBRARY_PATH": "/opt/lib",
    "SPARK_HOME": "/opt/spark",
    "PYSPARK_PYTHON": "/opt/venv/bin/python",
    "SPARK_TRITON_DATA_DIR": "/data",
    "AIRFLOW_SPARK_TRITON_HOME": "/var/lib/spark_triton",
    "AIRFLOW_HOME": "/opt/airflow",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TORCH_HOME": "/cache/torch",
    "OMP_NUM_THREADS": "1",
    "CUDA_VISIBLE_DEVICES": "0",
    "NVIDIA_VISIBLE_DEVICES": "all",
    "HTTPS_PROXY": "http://proxy:3128",
    "KRB5CCNAME": "FILE:/tmp/krb5cc_1000",
}

UNRELATED = {"AIRFLOW__CORE__DAGS_FOLDER": "/dags", "SSH_AUTH_SOCK": "/tmp/ssh", "EDITOR": "vi", "FOO": "bar"}


def test_only_allow_listed_non_secret_variables_pass():
    env = run_environment(source={**UNRELATED, **SECRETS, **KEPT})
    assert env == KEPT
    assert CANARY not in json.dumps(env)


def test_a_process_that_imports_airflow_gets_its_non_secret_options_only():
    env = run_environment(airflow_config=True, source={**UNRELATED, **SECRETS, **KEPT})
    assert env == {**KEPT, "AIRFLOW__CORE__DAGS_FOLDER": "/dags"}
    assert CANARY not in json.dumps(env)


def test_additions_are_added_as_given():
    env = run_environment({"SPARK_HOME": "/mine", "HF_TOKEN": "on purpose", "N": 3}, source=KEPT)
    assert env["SPARK_HOME"] == "/mine" and env["HF_TOKEN"] == "on purpose" and env["N"] == "3"


def test_the_default_source_is_this_process_environment(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CANARY_DB", SECRETS["AIRFLOW_CONN_CANARY_DB"])
    monkeypatch.setenv("SPARK_TRITON_EXAMPLE", "kept")
    env = run_environment()
    assert "AIRFLOW_CONN_CANARY_DB" not in env and env["SPARK_TRITON_EXAMPLE"] == "kept"
    assert env["PATH"] == os.environ["PATH"]


@pytest.mark.parametrize("name", ["KEYS", "MY_KEYS", "DB_PASSWD", "MYSECRETS", "APP_CREDENTIALS", "X_CMD"])
def test_secret_looking_names(name):
    assert looks_secret(name)


@pytest.mark.parametrize("name", ["PATH", "SPARK_CONNECT_MODE_ENABLED", "TOKENIZERS_PARALLELISM", "PWD"])
def test_names_that_only_resemble_secrets(name):
    assert not looks_secret(name, "/some/where")


# -- file modes ---------------------------------------------------------------------------------


def test_records_are_private_even_under_a_permissive_umask(tmp_path: Path):
    path = tmp_path / "record.json"
    path.write_text("{}")
    path.chmod(0o644)
    old = os.umask(0)
    try:
        write_json_atomic(path, {"a": 1})
        write_json_atomic(tmp_path / "report.json", {"rows": 1}, mode=READABLE_MODE)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and json.loads(path.read_text()) == {"a": 1}
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json", "report.json"], "no temp file left"
