"""The local backend on a real Spark standalone cluster: lifecycle, runs, cancel, and nothing left behind."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from airflow_spark_triton.backends.base import ClusterError, GpuSparkBackend, RunError, RunLifecycle
from airflow_spark_triton.backends.local import commands, daemons, jvm_archive
from airflow_spark_triton.backends.local.backend import LocalSparkBackend
from airflow_spark_triton.backends.local.cluster_state import cluster_record
from airflow_spark_triton.backends.local.commands import LOCAL_JVM_OPTIONS, memory_mb
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from airflow_spark_triton.hooks.local_spark import LocalSparkHook
from airflow_spark_triton.runs import processes as procs
from airflow_spark_triton.runs.hosts import this_host
from airflow_spark_triton.runs.processes import ProcessRecord
from airflow_spark_triton.runs.records import HOME_ENV, TransitionRefused
from spark_jobs.class_archive import EXECUTOR_ARCHIVE_ENV
from spark_jobs.contract import InferenceJobConfig
from spark_jobs.json_files import write_json_atomic

# The fixture (tests/backends/local/conftest.py) fails a test that leaves any process it started running.
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


def wait_terminal(backend: LocalSparkBackend, run_id: str, timeout_s: float = RUN_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = backend.get_run_status(run_id)
        if status.state.is_terminal:
            return status
        time.sleep(1)
    raise AssertionError(f"run {run_id} not finished after {timeout_s}s:\n{backend.driver_log_tail(run_id)}")


def wait_for_log_line(backend: LocalSparkBackend, run_id: str, marker: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if marker in backend.driver_log_tail(run_id, 500):
            return
        assert not backend.get_run_status(run_id).state.is_terminal, backend.driver_log_tail(run_id)
        time.sleep(0.5)
    raise AssertionError(f"{marker!r} never appeared:\n{backend.driver_log_tail(run_id)}")


def recorded_processes(backend: LocalSparkBackend, cluster_id: str) -> list[ProcessRecord]:
    cluster = backend.get_cluster(cluster_id) or {}
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


def assert_nothing_left(backend: LocalSparkBackend, cluster_id: str) -> None:
    records = recorded_processes(backend, cluster_id)
    assert records, "the cluster recorded no processes"
    assert not [r for r in records if procs.is_alive(r)]
    assert not spark_daemons_under(backend.home)


# -- fast: settings, parsing, records ---------------------------------------------------------


def test_the_backend_implements_the_contract(backend):
    assert isinstance(backend, GpuSparkBackend)
    assert LocalSparkBackend.conn_name_attr == LocalSparkHook.conn_name_attr == "spark_triton_conn_id"
    assert backend.spark_triton_conn_id is None


def test_the_home_argument_wins_and_otherwise_the_hook_decides(tmp_path, monkeypatch):
    """The hook's own precedence (connection, env, default) is tests/hooks/test_local_spark.py's."""
    monkeypatch.setattr(LocalSparkHook, "home", property(lambda hook: tmp_path / "from-hook"))
    monkeypatch.setattr(LocalSparkHook, "python", property(lambda hook: "/opt/py/bin/python"))
    assert LocalSparkBackend(None, home=str(tmp_path / "arg")).home == tmp_path / "arg"
    from_conn = LocalSparkBackend("my_local")
    assert (from_conn.home, from_conn.python) == (tmp_path / "from-hook", "/opt/py/bin/python")
    assert LocalSparkBackend("my_local", home=str(tmp_path / "arg")).home == tmp_path / "arg"


def test_missing_connection_means_local_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "env-home"))
    backend = LocalSparkBackend("spark_triton_no_such_connection")
    assert backend.home == tmp_path / "env-home"
    assert backend.python == sys.executable


@pytest.mark.parametrize(("value", "mb"), [("1g", 1024), ("512m", 512), ("2G", 2048), ("1gb", 1024)])
def test_memory_strings(value, mb):
    assert memory_mb(value) == mb


@pytest.mark.parametrize("value", ["1024", "lots", "0m"])
def test_memory_strings_need_a_unit(value):
    with pytest.raises(ClusterError, match="worker_memory"):
        memory_mb(value)


def test_unknown_ids(backend):
    backend.delete_cluster("local-000000000000")  # unknown: a no-op
    assert backend.find_cluster({"any": "tag"}) is None
    with pytest.raises(ClusterError, match="not a local cluster id"):
        backend.delete_cluster("../../etc")
    with pytest.raises(RunError, match="unknown run"):
        backend.get_run_status("local-000000000000-run-00000000")
    with pytest.raises(RunError, match=r"report\.json does not exist"):
        backend.get_run_report("local-000000000000-run-00000000")
    with pytest.raises(ClusterError, match="unknown local cluster"):
        backend.wait_for_cluster("local-000000000000", 1)


def fake_cluster(
    backend: LocalSparkBackend,
    cluster_id: str = "local-0123456789ab",
    state: str = "RUNNING",
    host: str | None = None,
) -> str:
    """A cluster record whose 'master' is this test process: alive, and never signalled here.
    ``host``: the host that wrote it (default: none, as records written before hosts were)."""
    cdir = backend.cluster_dir(cluster_id)
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
            **({"host": host} if host else {}),
        },
    )
    return cluster_id


def test_another_hosts_cluster_is_never_judged_or_stopped_here(backend):
    """A record of host worker-b (a shared state dir): its pids are worker-b's. The master recorded
    is a live process on this machine, so a pid check here would find it running and a delete
    would signal it; instead every operation that needs its processes fails naming both hosts,
    before anything is written."""
    cluster_id = fake_cluster(backend, host="worker-b")
    before = backend.get_cluster(cluster_id)
    elsewhere = rf"cluster {cluster_id} is running on host 'worker-b'; this host \({this_host()!r}\) cannot"
    with pytest.raises(ClusterError, match=elsewhere):
        backend.delete_cluster(cluster_id)
    with pytest.raises(ClusterError, match=elsewhere):
        backend.wait_for_cluster(cluster_id, 5)
    job = InferenceJobConfig(
        input_table="/t/in", output_table="/t/out", model="m:M", logical_date="2026-11-24"
    )
    with pytest.raises(ClusterError, match=elsewhere):
        backend.submit_job(cluster_id, job, "token")
    assert backend.find_cluster({"dag": "d"}) is None  # a retry on this host makes its own cluster
    assert backend.get_cluster(cluster_id) == before  # nothing marked DELETING, FAILED or DELETED

    # Its run, as a triggerer here would poll it: its supervisor pid means nothing on this host.
    run_id = f"{cluster_id}-run-0badc0de"
    run_dir = backend.run_dir(run_id)
    run_dir.mkdir(parents=True)
    gone = {"pid": 999_999_999, "create_time": 1.0}
    write_json_atomic(run_dir / "run.json", {"run_id": run_id, "host": "worker-b", "supervisor": gone})
    write_json_atomic(run_dir / "status.json", {"run_id": run_id, "state": "RUNNING", "supervisor": gone})
    status = backend.get_run_status(run_id)
    assert (status.state, status.message) == (
        RunLifecycle.RUNNING, f"running on host 'worker-b'; this host ({this_host()!r}) cannot check it"
    )  # fmt: skip
    with pytest.raises(RunError, match=f"cannot cancel: run {run_id} is running on host 'worker-b'"):
        backend.cancel_run(run_id)
    assert backend.runs.active(cluster_id) == [run_id]

    record = cluster_record(backend.cluster_dir(cluster_id))
    record.update(host=this_host())  # the control: the same record on its own host is usable
    assert backend.find_cluster({"dag": "d"}) == cluster_id


def test_submit_job_builds_the_spark_submit_command(backend, monkeypatch):
    cluster_id = fake_cluster(backend)
    started: list[list[str]] = []

    def fake_start(argv, **_kwargs):
        started.append(list(argv))
        return ProcessRecord.of(os.getpid())

    monkeypatch.setattr(procs, "start_detached", fake_start)
    job = InferenceJobConfig(
        input_table="/t/in", output_table="/t/out", model="m:M", logical_date="2026-11-24"
    )
    run_id = backend.submit_job(cluster_id, job, "dag__run__try")
    assert backend.submit_job(cluster_id, job, "dag__run__try") == run_id
    assert len(started) == 1 and "airflow_spark_triton.runs.supervisor" in started[0]

    command = json.loads((backend.run_dir(run_id) / "command.json").read_text())
    argv = command["argv"]
    assert argv[:3] == ["/opt/spark/bin/spark-submit", "--master", "spark://127.0.0.1:7077"]
    conf = dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "--conf")
    state_dir = str(backend.state_dir_for_servers(cluster_id))
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
    assert submitted.report_path == str(backend.run_dir(run_id) / "report.json")
    assert submitted.expected_executors == 2
    assert backend.get_run_status(run_id).state == RunLifecycle.PENDING


def test_every_jvm_gets_the_light_options_unless_the_spec_sets_its_own(tmp_path):
    record = {
        "cluster_id": "local-0123456789ab",
        "spec": SPEC.to_dict(),
        "python": sys.executable,
        "spark_home": "/opt/spark",
        "master": {"url": "spark://127.0.0.1:7077"},
    }
    env = commands.base_env(record, tmp_path)
    assert env["SPARK_DAEMON_JAVA_OPTS"] == env["SPARK_LAUNCHER_OPTS"] == LOCAL_JVM_OPTIONS
    argv, _ = commands.spark_submit_command(record, tmp_path, "r", tmp_path / "r", Path("job.py"), [])
    conf = dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "--conf")
    for role in ("driver", "executor"):  # + the class-data archive (test_jvm_archive.py)
        assert conf[f"spark.{role}.extraJavaOptions"].startswith(LOCAL_JVM_OPTIONS + " -XX:")
    # A recording executor is asked to dump into the run's directory; one that maps is not.
    records = conf["spark.executor.extraJavaOptions"].endswith(jvm_archive.DUMP_ON_REQUEST)
    assert conf.get(f"spark.executorEnv.{EXECUTOR_ARCHIVE_ENV}") == (str(tmp_path / "r") if records else None)
    daemons = [
        commands.master_env(record, tmp_path),
        commands.worker_env(record, tmp_path, tmp_path, tmp_path, 0),
    ]
    for env in daemons:  # + their class-data archive, recorded into the cluster's scratch dir or mapped
        assert env["SPARK_DAEMON_JAVA_OPTS"].startswith(LOCAL_JVM_OPTIONS + " -XX:")

    own = GpuClusterSpec(
        num_workers=1,
        spark_conf={"spark.executor.extraJavaOptions": "-XX:+UseG1GC"},
        spark_env_vars={"SPARK_DAEMON_JAVA_OPTS": "-Xss4m"},
    )
    record["spec"] = own.to_dict()
    assert commands.base_env(record, tmp_path)["SPARK_DAEMON_JAVA_OPTS"] == "-Xss4m"
    assert commands.master_env(record, tmp_path)["SPARK_DAEMON_JAVA_OPTS"] == "-Xss4m"
    assert commands.worker_env(record, tmp_path, tmp_path, tmp_path, 0)["SPARK_DAEMON_JAVA_OPTS"] == "-Xss4m"
    argv, _ = commands.spark_submit_command(record, tmp_path, "r", tmp_path / "r", Path("job.py"), [])
    conf = dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "--conf")
    assert conf["spark.executor.extraJavaOptions"] == "-XX:+UseG1GC"
    assert f"spark.executorEnv.{EXECUTOR_ARCHIVE_ENV}" not in conf
    assert conf["spark.driver.extraJavaOptions"].startswith(LOCAL_JVM_OPTIONS)


def test_a_run_whose_supervisor_died_is_failed(backend):
    cluster_id = fake_cluster(backend)
    run_id = f"{cluster_id}-run-0badc0de"
    run_dir = backend.run_dir(run_id)
    run_dir.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = {"pid": dead.pid, "create_time": 1.0, "pgid": dead.pid}
    write_json_atomic(run_dir / "run.json", {"run_id": run_id, "idempotency_token": "t", "supervisor": gone})
    write_json_atomic(run_dir / "status.json", {"run_id": run_id, "state": "RUNNING", "supervisor": gone})
    status = backend.get_run_status(run_id)
    assert status.state == RunLifecycle.FAILED
    assert "supervisor died" in status.message
    assert status.url == (run_dir / "driver.log").as_uri()
    backend.cancel_run(run_id)  # finished: a no-op


def test_submitting_to_a_deleted_cluster_fails(backend):
    cluster_id = fake_cluster(backend, state="DELETED")
    job = InferenceJobConfig(
        input_table="/t/in", output_table="/t/out", model="m:M", logical_date="2026-11-24"
    )
    with pytest.raises(ClusterError, match="it is DELETED"):
        backend.submit_job(cluster_id, job, "token")
    backend.delete_cluster(cluster_id)  # already deleted: a no-op


@pytest.mark.parametrize("taken", ["DELETING", "DELETED", "TERMINATED"])
def test_wait_never_brings_a_taken_cluster_back_to_running(backend, monkeypatch, taken):
    """A teardown (or the reaper) takes the cluster after wait's last liveness check, just as the
    master reports every worker: the guarded PENDING -> RUNNING transition refuses, the state stays."""
    cluster_id = fake_cluster(backend, state="PENDING")
    record = cluster_record(backend.cluster_dir(cluster_id))

    def ready_while_a_deleter_takes_it(_webui_port):
        for state in {"DELETING": ["DELETING"], "DELETED": ["DELETING", "DELETED"]}.get(taken, [taken]):
            record.update(state=state)
        return {"status": "ALIVE", "aliveworkers": SPEC.num_workers}

    monkeypatch.setattr(daemons, "master_json", ready_while_a_deleter_takes_it)
    with pytest.raises(ClusterError, match=f"cannot become RUNNING: it became {taken}"):
        backend.wait_for_cluster(cluster_id, 5)
    assert backend.get_cluster(cluster_id)["state"] == taken


def test_the_cluster_record_only_moves_forward(backend):
    record = cluster_record(backend.cluster_dir(fake_cluster(backend, state="PENDING")))
    record.update(state="RUNNING")
    record.update(state="DELETING")
    for back in ("PENDING", "RUNNING", "TERMINATED"):
        with pytest.raises(TransitionRefused, match=f"state DELETING cannot become {back}"):
            record.update(state=back)
    assert record.transition("RUNNING") is None
    record.update(state="DELETED")
    assert record.transition("RUNNING") is None and record.transition("DELETING") is None
    assert record.read()["state"] == "DELETED"


def test_a_taken_cluster_is_marked_running_only_from_pending(backend):
    cluster_id = fake_cluster(backend, state="PENDING")
    backend._mark_running(cluster_id, 1.0)
    running = backend.get_cluster(cluster_id)
    assert running["state"] == "RUNNING" and running["owners"] == []
    backend._mark_running(cluster_id, 2.0)  # waited for again: only the timing changes
    assert backend.get_cluster(cluster_id)["timings_s"]["ready_wait"] == 2.0
    cluster_record(backend.cluster_dir(cluster_id)).update(state="DELETING")
    with pytest.raises(ClusterError, match="cannot become RUNNING: it became DELETING"):
        backend._mark_running(cluster_id, 3.0)
    assert backend.get_cluster(cluster_id)["state"] == "DELETING"


# -- slow: real Spark standalone clusters -----------------------------------------------------


@pytest.mark.slow
def test_create_wait_find_delete_leaves_no_jvm(backend):
    tags = {"dag_id": "nightly", "run_id": "scheduled__2026-11-24", "team": "search"}
    started = time.monotonic()
    cluster_id = backend.create_cluster(SPEC, tags)
    try:
        assert cluster_id.startswith("local-") and len(cluster_id) == len("local-") + 12
        backend.wait_for_cluster(cluster_id, READY_TIMEOUT_S)
        up_s = time.monotonic() - started
        cluster = backend.get_cluster(cluster_id)
        assert cluster["state"] == "RUNNING"
        assert cluster["host"] == this_host()  # whose pids these are (runs.hosts)
        assert len(cluster["workers"]) == 2
        assert all(procs.is_alive(r) for r in recorded_processes(backend, cluster_id))
        for index in range(2):
            assert (
                backend.cluster_dir(cluster_id) / "work" / f"worker-{index}" / "spark_triton_init.ok"
            ).is_file()

        assert backend.find_cluster({"dag_id": "nightly", "run_id": "scheduled__2026-11-24"}) == cluster_id
        assert backend.find_cluster(tags) == cluster_id
        assert backend.find_cluster({"dag_id": "nightly", "run_id": "other"}) is None
    finally:
        deleted = time.monotonic()
        backend.delete_cluster(cluster_id)
        delete_s = time.monotonic() - deleted
    print(f"cluster up in {up_s:.1f}s, deleted in {delete_s:.1f}s")
    assert backend.get_cluster(cluster_id)["state"] == "DELETED"
    assert_nothing_left(backend, cluster_id)
    assert backend.find_cluster(tags) is None
    backend.delete_cluster(cluster_id)  # twice is fine
    with pytest.raises(ClusterError, match="DELETED"):
        backend.wait_for_cluster(cluster_id, 5)


@pytest.mark.slow
def test_wait_names_the_jvm_that_died(backend):
    cluster_id = backend.create_cluster(SPEC, {"dag_id": "dies"})
    try:
        worker_1 = ProcessRecord.from_dict(backend.get_cluster(cluster_id)["workers"][1])
        assert procs.stop_groups([worker_1], grace_s=15)
        with pytest.raises(ClusterError, match=r"worker 1 \(pid \d+\) exited; last lines of .*worker-1\.log"):
            backend.wait_for_cluster(cluster_id, READY_TIMEOUT_S)
        assert backend.get_cluster(cluster_id)["state"] == "TERMINATED"
        assert backend.find_cluster({"dag_id": "dies"}) is None
    finally:
        backend.delete_cluster(cluster_id)
    assert_nothing_left(backend, cluster_id)


@pytest.mark.slow
def test_delete_cancels_the_active_run_and_stops_recorded_triton_servers(backend, tmp_path):
    cluster_id = backend.create_cluster(SPEC, {"dag_id": "teardown"})
    try:
        backend.wait_for_cluster(cluster_id, READY_TIMEOUT_S)
        run_id = backend._submit_script(
            cluster_id, write_script(tmp_path, "sleep.py", SLEEPING_JOB), [], "t1"
        )
        wait_for_log_line(backend, run_id, "SLEEPING")

        # A stand-in Triton server: its own session, with a child in its group like tritonserver.
        triton_dir = backend.state_dir_for_servers(cluster_id)
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
        backend.delete_cluster(cluster_id)

    status = backend.get_run_status(run_id)
    assert status.state == RunLifecycle.CANCELED
    driver = ProcessRecord.from_dict(
        json.loads((backend.run_dir(run_id) / "status.json").read_text())["driver"]
    )
    assert not procs.is_alive(driver)
    assert server.wait(5) is not None
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert_nothing_left(backend, cluster_id)


@contextlib.contextmanager
def started_cluster(home: Path, spec: GpuClusterSpec, dag_id: str) -> Iterator[tuple[LocalSparkBackend, str]]:
    """A running local cluster for a module's runs, deleted (nothing left) when the module is done."""
    backend = LocalSparkBackend(spark_triton_conn_id=None, home=str(home))
    cluster_id = backend.create_cluster(spec, {"dag_id": dag_id})
    try:
        backend.wait_for_cluster(cluster_id, READY_TIMEOUT_S)
        yield backend, cluster_id
    finally:
        backend.delete_cluster(cluster_id)
        assert_nothing_left(backend, cluster_id)


@pytest.fixture(scope="module")
def running_cluster(tmp_path_factory: pytest.TempPathFactory):
    with started_cluster(tmp_path_factory.mktemp("runs-home"), SPEC, "runs") as cluster:
        yield cluster


@pytest.mark.slow
def test_tiny_script_succeeds_with_the_cluster_environment(running_cluster, tmp_path):
    backend, cluster_id = running_cluster
    script = write_script(tmp_path, "tiny.py", TINY_JOB)

    def args(run_id: str, run_dir: Path) -> list[str]:
        return [str(run_dir / "report.json")]

    run_id = backend._submit_script(cluster_id, script, args, "tiny-1")
    assert run_id.startswith(f"{cluster_id}-run-")
    assert backend._submit_script(cluster_id, script, args, "tiny-1") == run_id, "same token, same run"

    status = wait_terminal(backend, run_id)
    assert status.state == RunLifecycle.SUCCESS, backend.driver_log_tail(run_id)
    assert status.url == (backend.run_dir(run_id) / "driver.log").as_uri()
    report = json.loads((backend.run_dir(run_id) / "report.json").read_text())  # the script's own
    assert report["count"] == 1000
    state_dir = str(backend.state_dir_for_servers(cluster_id))
    assert report["driver_state_dir"] == state_dir
    assert len(report["executor_env"]) == 2
    for ld_library_path, executor_state_dir in report["executor_env"]:
        assert ld_library_path.split(os.pathsep)[0] == LIBDIR
        assert executor_state_dir == state_dir
    assert "SparkContext" in backend.driver_log_tail(run_id, 200)
    backend.cancel_run(run_id)  # finished: a no-op
    assert backend.get_run_status(run_id).state == RunLifecycle.SUCCESS


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("marked", "ValueError: tiny job counted 1000 rows and failed"),
        ("traceback", "RuntimeError: tiny job counted 1000 rows and failed"),
    ],
)
def test_failing_script_is_failed_with_its_error_line(running_cluster, tmp_path, mode, expected):
    backend, cluster_id = running_cluster
    script = write_script(tmp_path, "failing.py", FAILING_JOB)
    run_id = backend._submit_script(cluster_id, script, [mode], f"failing-{mode}")
    status = wait_terminal(backend, run_id)
    assert status.state == RunLifecycle.FAILED
    assert status.message.splitlines()[0].startswith(expected), status.message
    with pytest.raises(RunError, match=r"report\.json does not exist"):
        backend.get_run_report(run_id)


@pytest.mark.slow
def test_cancel_run_stops_the_driver(running_cluster, tmp_path):
    backend, cluster_id = running_cluster
    run_id = backend._submit_script(
        cluster_id, write_script(tmp_path, "sleep.py", SLEEPING_JOB), [], "sleepy"
    )
    wait_for_log_line(backend, run_id, "SLEEPING")
    assert backend.get_run_status(run_id).state == RunLifecycle.RUNNING

    started = time.monotonic()
    backend.cancel_run(run_id)
    print(f"canceled in {time.monotonic() - started:.1f}s")
    status = backend.get_run_status(run_id)
    assert status.state == RunLifecycle.CANCELED
    recorded = json.loads((backend.run_dir(run_id) / "status.json").read_text())
    assert not procs.is_alive(ProcessRecord.from_dict(recorded["driver"]))
    assert not procs.is_alive(ProcessRecord.from_dict(recorded["supervisor"]))
    backend.cancel_run(run_id)  # again: a no-op
