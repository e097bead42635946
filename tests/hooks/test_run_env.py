"""No secrets on disk or in ps (issue #11): the environment of cluster and run processes, and file modes.

Fast: the allow-list helper, the environment the backends build, and the modes of run files.
Slow: canary secrets in the Airflow worker's environment while a real local cluster runs a job; they
reach no file under the state home and no process of the cluster (environment or command line).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import psutil
import pytest

from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.hooks import local_processes as procs
from airflow_spark_triton.hooks.base import RunLifecycle
from airflow_spark_triton.hooks.local_processes import ProcessRecord
from airflow_spark_triton.hooks.local_spark import LocalSparkHook
from airflow_spark_triton.hooks.run_env import looks_secret, run_environment
from spark_jobs.job_config import InferenceJobConfig
from spark_jobs.json_files import READABLE_MODE, write_json_atomic
from tests.hooks.test_local_spark import (
    READY_TIMEOUT_S,
    assert_nothing_left,
    fake_cluster,
    wait_for_log_line,
    wait_terminal,
    write_script,
)
from tests.processes import processes_under

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


# -- what the backends build -------------------------------------------------------------------


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return CANARY


def test_the_local_cluster_environment_has_no_worker_secret(canary, tmp_path):
    hook = LocalSparkHook(spark_triton_conn_id=None, home=str(tmp_path / "home"))
    cluster_id = fake_cluster(hook)
    cluster = hook.get_cluster(cluster_id)
    cluster["spec"]["spark_env_vars"] = {"MODEL_API_KEY": "wanted"}
    env = hook._base_env(cluster)
    assert canary not in json.dumps(env)
    assert env["SPARK_TRITON_CLUSTER_ID"] == cluster_id and env["PYSPARK_PYTHON"] == sys.executable
    assert env["MODEL_API_KEY"] == "wanted", "the spec's own env vars are explicit: they pass"


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """The environment of every process a backend would start (none is started)."""
    envs: list[dict[str, str]] = []

    def fake_start(argv, *, env, **_kwargs):
        envs.append(dict(env))
        return ProcessRecord.of(os.getpid())

    monkeypatch.setattr(procs, "start_detached", fake_start)
    return envs


def test_a_local_run_writes_no_secret_and_only_private_records(canary, tmp_path, started):
    hook = LocalSparkHook(spark_triton_conn_id=None, home=str(tmp_path / "home"))
    cluster_id = fake_cluster(hook)
    job = InferenceJobConfig(
        input_table="/t/in", output_table="/t/out", model="m:M", logical_date="2026-11-24"
    )
    run_id = hook.submit_job(cluster_id, job, "dag__run__try")
    run_dir = hook.run_dir(run_id)

    supervisor_env = started[0]
    assert canary not in json.dumps(supervisor_env)
    assert supervisor_env["PATH"] == os.environ["PATH"]
    command = json.loads((run_dir / "command.json").read_text())
    assert command["env"]["SPARK_TRITON_CLUSTER_ID"] == cluster_id
    for path in [*run_dir.rglob("*"), *hook.cluster_dir(cluster_id).glob("*.json")]:
        if path.is_file():
            assert canary not in path.read_text(), path
    for name in ("command.json", "run.json", "status.json"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((hook.cluster_dir(cluster_id) / "cluster.json").stat().st_mode) == 0o600


def test_the_spark_submit_runner_gets_no_secret_and_no_connection(canary, tmp_path, monkeypatch, started):
    from airflow_spark_triton.hooks.spark_submit import SparkSubmitGpuHook

    connection = {"conn_type": "spark", "host": "127.0.0.1", "port": 7, "password": canary,
                  "extra": {"deploy-mode": "client", "gpus": "false"}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_CANARY", json.dumps(connection))
    hook = SparkSubmitGpuHook("spark_canary", home=str(tmp_path / "home"))
    attachment_id = hook.create_cluster(GpuClusterSpec(num_workers=1), {})
    job = InferenceJobConfig(
        input_table="/t/in", output_table="/t/out", model="m:M", logical_date="2026-11-24"
    )
    run_dir = hook.run_dir(hook.submit_job(attachment_id, job, "token"))

    command = json.loads((run_dir / "command.json").read_text())
    assert command["env"]["AIRFLOW_HOME"] == os.environ["AIRFLOW_HOME"]
    assert canary not in json.dumps(command) and canary not in json.dumps(started)
    # The password is only in the hand-over file, which only this user can read.
    holders = [p.name for p in run_dir.rglob("*") if p.is_file() and canary in p.read_text()]
    assert holders == ["connection.json"]
    for name in ("command.json", "run.json", "status.json", "submit.json", "connection.json"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o600, name


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


# -- slow: a real cluster and run ---------------------------------------------------------------

# Reports the variable names the driver and each executor's Python worker see, then keeps the
# application (and so its executors) alive until the test has inspected every process.
ENV_JOB = """
import json, os, sys, time
from pyspark.sql import SparkSession

report, release = sys.argv[1], sys.argv[2]
spark = SparkSession.builder.getOrCreate()
executors = spark.sparkContext.parallelize(range(2), 2).map(lambda _: sorted(os.environ)).collect()
with open(report, "w") as out:
    json.dump({"driver": sorted(os.environ), "executors": executors}, out)
print("INSPECT ME", flush=True)
deadline = time.monotonic() + 300
while not os.path.exists(release) and time.monotonic() < deadline:
    time.sleep(0.2)
spark.stop()
"""


def cluster_processes(hook: LocalSparkHook, cluster_id: str, run_id: str) -> list[psutil.Process]:
    """Every live process of the cluster and the run: daemons, executors, Python workers, the
    supervisor, spark-submit and the Python driver (recorded ones, their descendants, and anything
    pointing into the state home)."""
    cluster = hook.get_cluster(cluster_id) or {}
    status = json.loads((hook.run_dir(run_id) / "status.json").read_text())
    recorded = [cluster["master"], *cluster["workers"], status["supervisor"], status["driver"]]
    found: dict[int, psutil.Process] = {p.pid: p for p in processes_under(hook.home)}
    for entry in recorded:
        record = ProcessRecord.from_dict(entry)
        if procs.is_alive(record):
            found[record.pid] = psutil.Process(record.pid)
            found.update({p.pid: p for p in procs.iter_descendants(record)})
    return list(found.values())


@pytest.mark.slow
@pytest.mark.usefixtures("no_process_left_behind")
def test_a_worker_secret_reaches_no_file_and_no_process(canary, tmp_path):
    hook = LocalSparkHook(spark_triton_conn_id=None, home=str(tmp_path / "home"))
    spec = GpuClusterSpec(num_workers=1, executor_cores=1, worker_memory="1g")
    cluster_id = hook.create_cluster(spec, {"purpose": "secrets"})
    release = tmp_path / "release"
    try:
        hook.wait_for_cluster(cluster_id, READY_TIMEOUT_S)
        script = write_script(tmp_path, "env_job.py", ENV_JOB)
        run_id = hook._submit_script(
            cluster_id, script, lambda _id, run_dir: [str(run_dir / "report.json"), str(release)], "env"
        )
        wait_for_log_line(hook, run_id, "INSPECT ME", timeout_s=240)

        inspected: list[tuple[str, dict[str, str]]] = []
        for proc in cluster_processes(hook, cluster_id, run_id):
            try:
                inspected.append((" ".join(proc.cmdline()), proc.environ()))
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue  # exited meanwhile (e.g. spark-class's launcher)
        cmdlines = [cmdline for cmdline, _ in inspected]
        for kind in ("deploy.master.Master", "deploy.worker.Worker", "CoarseGrainedExecutorBackend",
                     "local_run_supervisor", "SparkSubmit", "env_job.py"):  # fmt: skip
            assert any(kind in cmdline for cmdline in cmdlines), f"no {kind} process among {cmdlines}"
        for cmdline, environ in inspected:
            assert canary not in cmdline, cmdline
            assert not [v for v in environ.values() if canary in v], f"canary in environ of {cmdline[:200]}"
            assert not set(SECRETS) & set(environ), cmdline[:200]

        release.touch()
        status = wait_terminal(hook, run_id)
        assert status.state == RunLifecycle.SUCCESS, hook.driver_log_tail(run_id)
        seen = hook.get_run_report(run_id)
        for names in [seen["driver"], *seen["executors"]]:
            assert not set(SECRETS) & set(names)
            assert "SPARK_TRITON_STATE_DIR" in names
    finally:
        release.touch()
        hook.delete_cluster(cluster_id)
    assert_nothing_left(hook, cluster_id)

    data_dir = Path(os.environ.get("SPARK_TRITON_DATA_DIR", tmp_path))
    files = [p for root in {tmp_path, data_dir} for p in root.rglob("*") if p.is_file()]
    assert len(files) > 10
    assert not [p for p in files if canary.encode() in p.read_bytes()]
    run_dir = hook.run_dir(run_id)
    for path in [run_dir / "run.json", run_dir / "command.json", run_dir / "status.json",
                 hook.cluster_dir(cluster_id) / "cluster.json"]:  # fmt: skip
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
