"""The local backend on a real Spark standalone cluster: lifecycle, runs, cancel, and nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.hooks import local_processes as procs
from airflow_spark_triton.hooks.base import ClusterError, GpuSparkBackend, RunError, RunLifecycle
from airflow_spark_triton.hooks.local_processes import ProcessRecord
from airflow_spark_triton.hooks.local_run_supervisor import driver_error_message
from airflow_spark_triton.hooks.local_spark import HOME_ENV, LocalSparkHook, memory_mb
from spark_jobs.job_config import InferenceJobConfig
from spark_jobs.json_files import write_json_atomic

# The fixture (tests/hooks/conftest.py) fails a test that leaves any process it started running.
pytestmark = pytest.mark.usefixtures("no_process_left_behind")

SPEC = GpuClusterSpec(num_workers=2, executor_cores=1, worker_memory="1g")
READY_TIMEOUT_S = 180
RUN_TIMEOUT_S = 240
LIBDIR = sysconfig.get_config_var("LIBDIR")

TINY_JOB = """
import json, os, sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
sc = spark.sparkContext
count = sc.parallelize(range(1000), 2).count()
env = sc.parallelize(range(2), 2).map(
    lambda _: [os.environ.get("LD_LIBRARY_PATH", ""), os.environ.get("SPARK_TRITON_STATE_DIR")]
).collect()
report = {"count": count, "executor_env": env, "driver_state_dir": os.environ.get("SPARK_TRITON_STATE_DIR")}
with open(sys.argv[1], "w") as out:
    json.dump(report, out)
spark.stop()
"""

FAILING_JOB = """
import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
count = spark.sparkContext.parallelize(range(1000), 2).count()
spark.stop()
if sys.argv[1] == "marked":
    print(f"SPARK_TRITON_ERROR: ValueError: tiny job counted {count} rows and failed", file=sys.stderr)
    sys.exit(1)
raise RuntimeError(f"tiny job counted {count} rows and failed")
"""

SLEEPING_JOB = """
import time
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
print("SLEEPING", flush=True)
spark.sparkContext.parallelize(range(2), 2).map(lambda x: time.sleep(600) or x).collect()
"""


def write_script(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


def wait_terminal(hook: LocalSparkHook, run_id: str, timeout_s: float = RUN_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = hook.get_run_status(run_id)
        if status.state.is_terminal:
            return status
        time.sleep(1)
    raise AssertionError(f"run {run_id} not finished after {timeout_s}s:\n{hook.driver_log_tail(run_id)}")


def wait_for_log_line(hook: LocalSparkHook, run_id: str, marker: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if marker in hook.driver_log_tail(run_id, 500):
            return
        assert not hook.get_run_status(run_id).state.is_terminal, hook.driver_log_tail(run_id)
        time.sleep(0.5)
    raise AssertionError(f"{marker!r} never appeared:\n{hook.driver_log_tail(run_id)}")


def recorded_processes(hook: LocalSparkHook, cluster_id: str) -> list[ProcessRecord]:
    cluster = hook.get_cluster(cluster_id) or {}
    entries = [cluster.get("master"), *cluster.get("workers", [])]
    return [ProcessRecord.from_dict(entry) for entry in entries if entry]


def spark_daemons_under(home: Path) -> list[str]:
    """Spark master/worker JVMs whose command line or working directory points into ``home``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "org.apache.spark.deploy" not in cmdline or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if str(home) in cmdline or proc.cwd().startswith(str(home)):
                found.append(f"{proc.pid}: {cmdline[:160]}")
        except psutil.Error:
            continue
    return found


def assert_nothing_left(hook: LocalSparkHook, cluster_id: str) -> None:
    records = recorded_processes(hook, cluster_id)
    assert records, "the cluster recorded no processes"
    assert not [r for r in records if procs.is_alive(r)]
    assert not spark_daemons_under(hook.home)


# -- fast: settings, parsing, records ---------------------------------------------------------


def test_hook_implements_the_backend_protocol(hook):
    assert isinstance(hook, GpuSparkBackend)
    assert LocalSparkHook.conn_type == "spark_triton_local"
    assert LocalSparkHook.conn_name_attr == "spark_triton_conn_id"


def test_home_comes_from_argument_then_connection_then_env_then_default(tmp_path, monkeypatch):
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "from-env"))
    assert LocalSparkHook(None, home=str(tmp_path / "arg")).home == tmp_path / "arg"
    assert LocalSparkHook(None).home == tmp_path / "from-env"
    monkeypatch.delenv(HOME_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert LocalSparkHook(None).home == tmp_path / "user" / ".airflow_spark_triton"

    extras = {"home": str(tmp_path / "from-conn"), "python": "/opt/py/bin/python", "worker_memory": "3g"}
    monkeypatch.setattr(
        LocalSparkHook,
        "get_connection",
        classmethod(lambda cls, conn_id: SimpleNamespace(extra_dejson=extras)),
    )
    from_conn = LocalSparkHook("my_local")
    assert from_conn.home == tmp_path / "from-conn"
    assert from_conn.python == "/opt/py/bin/python"
    assert LocalSparkHook("my_local", home=str(tmp_path / "arg")).home == tmp_path / "arg"


def test_missing_connection_means_local_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "env-home"))
    hook = LocalSparkHook("spark_triton_no_such_connection")
    assert hook.home == tmp_path / "env-home"
    assert hook.python == sys.executable


@pytest.mark.parametrize(("value", "mb"), [("1g", 1024), ("512m", 512), ("2G", 2048), ("1gb", 1024)])
def test_memory_strings(value, mb):
    assert memory_mb(value) == mb


@pytest.mark.parametrize("value", ["1024", "lots", "0m"])
def test_memory_strings_need_a_unit(value):
    with pytest.raises(ClusterError, match="worker_memory"):
        memory_mb(value)


def test_error_message_prefers_the_jobs_marked_line():
    log = "\n".join(
        [
            "26/11/25 10:00:00 INFO SparkContext: Running Spark",
            "Traceback (most recent call last):",
            '  File "job.py", line 3, in <module>',
            "ValueError: inner",
            "SPARK_TRITON_ERROR: JobConfigError: job setting 'model' is required",
            "26/11/25 10:00:01 INFO ShutdownHookManager: Shutdown hook called",
        ]
    )
    message = driver_error_message(log, 1)
    assert message.startswith("JobConfigError: job setting 'model' is required")
    assert "exit code 1" in message


def test_error_message_falls_back_to_the_final_exception_of_the_last_traceback():
    log = "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "a.py", line 1, in <module>',
            "KeyError: 'first'",
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            "Traceback (most recent call last):",
            '  File "job.py", line 9, in <module>',
            "    run()",
            "pyspark.errors.exceptions.captured.AnalysisException: [TABLE_OR_VIEW_NOT_FOUND] table x",
            "cannot be found. SQLSTATE: 42P01",
            "26/11/25 10:00:01 INFO SparkContext: Invoking stop() from shutdown hook",
        ]
    )
    message = driver_error_message(log, 1)
    assert message.splitlines()[0] == (
        "pyspark.errors.exceptions.captured.AnalysisException: [TABLE_OR_VIEW_NOT_FOUND] table x"
    )
    assert "SQLSTATE: 42P01" in message
    assert "KeyError" not in message and "INFO" not in message


def test_error_message_without_traceback_uses_error_lines():
    log = "26/11/25 10:00:00 INFO A: fine\n26/11/25 10:00:01 ERROR SparkContext: master unreachable\n"
    assert "master unreachable" in driver_error_message(log, 1)
    assert "no driver output" in driver_error_message("", 1)


def test_a_killed_driver_is_named_as_killed_not_by_its_last_log_line():
    log = "26/11/25 10:00:01 ERROR FileFormatWriter: Aborting job 3f2.\n"
    assert driver_error_message(log, 137) == (
        "the driver was killed by SIGKILL before the job reported an error (spark-submit exit code 137)"
    )
    assert "killed by SIGSEGV" in driver_error_message(log, -11)
    assert "Aborting job" in driver_error_message(log, 143), "a cancel (SIGTERM) says why on its own"


def test_unknown_ids(hook):
    hook.delete_cluster("local-000000000000")  # unknown: a no-op
    assert hook.find_cluster({"any": "tag"}) is None
    with pytest.raises(ClusterError, match="not a local cluster id"):
        hook.delete_cluster("../../etc")
    with pytest.raises(RunError, match="unknown run"):
        hook.get_run_status("local-000000000000-run-00000000")
    with pytest.raises(RunError, match=r"report\.json does not exist"):
        hook.get_run_report("local-000000000000-run-00000000")
    with pytest.raises(ClusterError, match="unknown local cluster"):
        hook.wait_for_cluster("local-000000000000", 1)


def test_stop_groups_never_signals_a_reused_pid(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True, cwd=tmp_path)
    try:
        real = ProcessRecord.of(sleeper.pid)
        stranger = ProcessRecord(real.pid, real.create_time - 100.0, real.pgid)  # same pid, older process
        assert procs.is_alive(real) and not procs.is_alive(stranger)
        assert procs.stop_groups([stranger], grace_s=1)
        assert sleeper.poll() is None, "a pid whose create time does not match must not be signalled"
        assert procs.stop_groups([real], grace_s=5)
        assert sleeper.wait(5) is not None
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def fake_cluster(hook: LocalSparkHook, cluster_id: str = "local-0123456789ab", state: str = "RUNNING") -> str:
    """A cluster record whose 'master' is this test process: alive, and never signalled here."""
    cdir = hook.cluster_dir(cluster_id)
    (cdir / "runs").mkdir(parents=True)
    (cdir / "triton").mkdir()
    me = ProcessRecord.of(os.getpid())
    write_json_atomic(
        cdir / "cluster.json",
        {
            "cluster_id": cluster_id,
            "state": state,
            "tags": {"dag": "d"},
            "spec": SPEC.to_dict(),
            "python": sys.executable,
            "python_libdir": LIBDIR,
            "spark_home": "/opt/spark",
            "spark_version": "4.3.0",
            "master": {**me.to_dict(), "port": 7077, "webui_port": 8080, "url": "spark://127.0.0.1:7077"},
            "workers": [],
            "created_at": "2026-01-01T00:00:00+00:00",
        },
    )
    return cluster_id


def test_submit_job_builds_the_spark_submit_command(hook, monkeypatch):
    cluster_id = fake_cluster(hook)
    started: list[list[str]] = []

    def fake_start(argv, **_kwargs):
        started.append(list(argv))
        return ProcessRecord.of(os.getpid())

    monkeypatch.setattr(procs, "start_detached", fake_start)
    job = InferenceJobConfig(
        input_table="/t/in", output_table="/t/out", model="m:M", logical_date="2026-11-24"
    )
    run_id = hook.submit_job(cluster_id, job, "dag__run__try")
    assert hook.submit_job(cluster_id, job, "dag__run__try") == run_id
    assert len(started) == 1 and "airflow_spark_triton.hooks.local_run_supervisor" in started[0]

    command = json.loads((hook.run_dir(run_id) / "command.json").read_text())
    argv = command["argv"]
    assert argv[:3] == ["/opt/spark/bin/spark-submit", "--master", "spark://127.0.0.1:7077"]
    conf = dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "--conf")
    state_dir = str(hook.state_dir_for_servers(cluster_id))
    assert conf["spark.executorEnv.SPARK_TRITON_STATE_DIR"] == state_dir
    assert conf["spark.executorEnv.LD_LIBRARY_PATH"].split(os.pathsep)[0] == LIBDIR
    assert conf["spark.executor.memory"] == "1024m"
    assert conf["spark.executor.cores"] == "1"
    assert conf["spark.driver.host"] == "127.0.0.1"
    assert not [key for key in conf if "resource.gpu" in key], "no GPUs locally"
    assert command["env"]["SPARK_TRITON_STATE_DIR"] == state_dir
    assert command["env"]["PYSPARK_PYTHON"] == sys.executable
    assert argv[-2] == "--job" and argv[-3].endswith("spark_jobs/batch_inference.py")
    submitted = InferenceJobConfig.from_json(argv[-1])
    assert submitted.run_id == run_id
    assert submitted.report_path == str(hook.run_dir(run_id) / "report.json")
    assert submitted.expected_executors == 2
    assert hook.get_run_status(run_id).state == RunLifecycle.PENDING


def test_a_run_whose_supervisor_died_is_failed(hook):
    cluster_id = fake_cluster(hook)
    run_id = f"{cluster_id}-run-0badc0de"
    run_dir = hook.run_dir(run_id)
    run_dir.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = {"pid": dead.pid, "create_time": 1.0, "pgid": dead.pid}
    write_json_atomic(run_dir / "run.json", {"run_id": run_id, "idempotency_token": "t", "supervisor": gone})
    write_json_atomic(run_dir / "status.json", {"run_id": run_id, "state": "RUNNING", "supervisor": gone})
    status = hook.get_run_status(run_id)
    assert status.state == RunLifecycle.FAILED
    assert "supervisor died" in status.message
    assert status.url == (run_dir / "driver.log").as_uri()
    hook.cancel_run(run_id)  # finished: a no-op


def test_submitting_to_a_deleted_cluster_fails(hook):
    cluster_id = fake_cluster(hook, state="DELETED")
    job = InferenceJobConfig(
        input_table="/t/in", output_table="/t/out", model="m:M", logical_date="2026-11-24"
    )
    with pytest.raises(ClusterError, match="it is DELETED"):
        hook.submit_job(cluster_id, job, "token")
    hook.delete_cluster(cluster_id)  # already deleted: a no-op


# -- slow: real Spark standalone clusters -----------------------------------------------------


@pytest.mark.slow
def test_create_wait_find_delete_leaves_no_jvm(hook):
    tags = {"dag_id": "nightly", "run_id": "scheduled__2026-11-24", "team": "search"}
    started = time.monotonic()
    cluster_id = hook.create_cluster(SPEC, tags)
    try:
        assert cluster_id.startswith("local-") and len(cluster_id) == len("local-") + 12
        hook.wait_for_cluster(cluster_id, READY_TIMEOUT_S)
        up_s = time.monotonic() - started
        cluster = hook.get_cluster(cluster_id)
        assert cluster["state"] == "RUNNING"
        assert len(cluster["workers"]) == 2
        assert all(procs.is_alive(r) for r in recorded_processes(hook, cluster_id))
        for index in range(2):
            assert (
                hook.cluster_dir(cluster_id) / "work" / f"worker-{index}" / "spark_triton_init.ok"
            ).is_file()

        assert hook.find_cluster({"dag_id": "nightly", "run_id": "scheduled__2026-11-24"}) == cluster_id
        assert hook.find_cluster(tags) == cluster_id
        assert hook.find_cluster({"dag_id": "nightly", "run_id": "other"}) is None
    finally:
        deleted = time.monotonic()
        hook.delete_cluster(cluster_id)
        delete_s = time.monotonic() - deleted
    print(f"cluster up in {up_s:.1f}s, deleted in {delete_s:.1f}s")
    assert hook.get_cluster(cluster_id)["state"] == "DELETED"
    assert_nothing_left(hook, cluster_id)
    assert hook.find_cluster(tags) is None
    hook.delete_cluster(cluster_id)  # twice is fine
    with pytest.raises(ClusterError, match="DELETED"):
        hook.wait_for_cluster(cluster_id, 5)


@pytest.mark.slow
def test_wait_names_the_jvm_that_died(hook):
    cluster_id = hook.create_cluster(SPEC, {"dag_id": "dies"})
    try:
        worker_1 = ProcessRecord.from_dict(hook.get_cluster(cluster_id)["workers"][1])
        assert procs.stop_groups([worker_1], grace_s=15)
        with pytest.raises(ClusterError, match=r"worker 1 \(pid \d+\) exited; last lines of .*worker-1\.log"):
            hook.wait_for_cluster(cluster_id, READY_TIMEOUT_S)
        assert hook.get_cluster(cluster_id)["state"] == "TERMINATED"
        assert hook.find_cluster({"dag_id": "dies"}) is None
    finally:
        hook.delete_cluster(cluster_id)
    assert_nothing_left(hook, cluster_id)


@pytest.mark.slow
def test_delete_cancels_the_active_run_and_stops_recorded_triton_servers(hook, tmp_path):
    cluster_id = hook.create_cluster(SPEC, {"dag_id": "teardown"})
    try:
        hook.wait_for_cluster(cluster_id, READY_TIMEOUT_S)
        run_id = hook._submit_script(cluster_id, write_script(tmp_path, "sleep.py", SLEEPING_JOB), [], "t1")
        wait_for_log_line(hook, run_id, "SLEEPING")

        # A stand-in Triton server: its own session, with a child in its group like tritonserver.
        triton_dir = hook.state_dir_for_servers(cluster_id)
        server = subprocess.Popen(
            ["bash", "-c", "sleep 300 & wait"],
            start_new_session=True,
            cwd=triton_dir,
            stdin=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        record = ProcessRecord.of(server.pid)
        child = psutil.Process(server.pid).children()[0]
        write_json_atomic(triton_dir / "x.json", record.to_dict())
    finally:
        hook.delete_cluster(cluster_id)

    status = hook.get_run_status(run_id)
    assert status.state == RunLifecycle.CANCELED
    driver = ProcessRecord.from_dict(json.loads((hook.run_dir(run_id) / "status.json").read_text())["driver"])
    assert not procs.is_alive(driver)
    assert server.wait(5) is not None
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert_nothing_left(hook, cluster_id)


@pytest.fixture(scope="module")
def running_cluster(tmp_path_factory: pytest.TempPathFactory):
    hook = LocalSparkHook(spark_triton_conn_id=None, home=str(tmp_path_factory.mktemp("runs-home")))
    cluster_id = hook.create_cluster(SPEC, {"dag_id": "runs"})
    try:
        hook.wait_for_cluster(cluster_id, READY_TIMEOUT_S)
        yield hook, cluster_id
    finally:
        hook.delete_cluster(cluster_id)
        assert_nothing_left(hook, cluster_id)


@pytest.mark.slow
def test_tiny_script_succeeds_with_the_cluster_environment(running_cluster, tmp_path):
    hook, cluster_id = running_cluster
    script = write_script(tmp_path, "tiny.py", TINY_JOB)

    def args(run_id: str, run_dir: Path) -> list[str]:
        return [str(run_dir / "report.json")]

    run_id = hook._submit_script(cluster_id, script, args, "tiny-1")
    assert run_id.startswith(f"{cluster_id}-run-")
    assert hook._submit_script(cluster_id, script, args, "tiny-1") == run_id, "same token, same run"

    status = wait_terminal(hook, run_id)
    assert status.state == RunLifecycle.SUCCESS, hook.driver_log_tail(run_id)
    assert status.url == (hook.run_dir(run_id) / "driver.log").as_uri()
    report = hook.get_run_report(run_id)
    assert report["count"] == 1000
    state_dir = str(hook.state_dir_for_servers(cluster_id))
    assert report["driver_state_dir"] == state_dir
    assert len(report["executor_env"]) == 2
    for ld_library_path, executor_state_dir in report["executor_env"]:
        assert ld_library_path.split(os.pathsep)[0] == LIBDIR
        assert executor_state_dir == state_dir
    assert "SparkContext" in hook.driver_log_tail(run_id, 200)
    hook.cancel_run(run_id)  # finished: a no-op
    assert hook.get_run_status(run_id).state == RunLifecycle.SUCCESS


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("marked", "ValueError: tiny job counted 1000 rows and failed"),
        ("traceback", "RuntimeError: tiny job counted 1000 rows and failed"),
    ],
)
def test_failing_script_is_failed_with_its_error_line(running_cluster, tmp_path, mode, expected):
    hook, cluster_id = running_cluster
    script = write_script(tmp_path, "failing.py", FAILING_JOB)
    run_id = hook._submit_script(cluster_id, script, [mode], f"failing-{mode}")
    status = wait_terminal(hook, run_id)
    assert status.state == RunLifecycle.FAILED
    assert status.message.splitlines()[0].startswith(expected), status.message
    with pytest.raises(RunError, match=r"report\.json does not exist"):
        hook.get_run_report(run_id)


@pytest.mark.slow
def test_cancel_run_stops_the_driver(running_cluster, tmp_path):
    hook, cluster_id = running_cluster
    run_id = hook._submit_script(cluster_id, write_script(tmp_path, "sleep.py", SLEEPING_JOB), [], "sleepy")
    wait_for_log_line(hook, run_id, "SLEEPING")
    assert hook.get_run_status(run_id).state == RunLifecycle.RUNNING

    started = time.monotonic()
    hook.cancel_run(run_id)
    print(f"canceled in {time.monotonic() - started:.1f}s")
    status = hook.get_run_status(run_id)
    assert status.state == RunLifecycle.CANCELED
    recorded = json.loads((hook.run_dir(run_id) / "status.json").read_text())
    assert not procs.is_alive(ProcessRecord.from_dict(recorded["driver"]))
    assert not procs.is_alive(ProcessRecord.from_dict(recorded["supervisor"]))
    hook.cancel_run(run_id)  # again: a no-op
