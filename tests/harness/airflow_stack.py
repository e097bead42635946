"""A real Airflow deployment for end-to-end tests: api-server, scheduler, dag-processor and triggerer.

``dag.test()`` runs a DAG inside the test's own process; users run components that parse, schedule,
defer and kill tasks on their own. This harness starts those four components under a temporary
``AIRFLOW_HOME`` (free ports), waits until the DAGs are parsed, and is driven only the way users drive
Airflow: the ``airflow`` CLI (unpause, trigger, backfill, clear) and the REST API.
:meth:`AirflowStack.stop` stops every process it started, by process group.

Two profiles (``profile=``):

* ``local`` (default, the quick one): the LocalExecutor and SQLite;
* ``celery`` (as production runs Airflow): PostgreSQL as the metadata DB, the CeleryExecutor with a
  Redis broker, and two Celery workers with their own hostnames (``worker1@…``, ``worker2@…``)
  beside the four components. PostgreSQL and Redis are throwaway servers of the stack
  (:mod:`tests.harness.services`), started first and stopped last.

People use it through ``make airflow`` (``python -m tests.harness.airflow_stack [--profile celery]``):
the same stack in the foreground, with the UI on the printed URL, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from spark_jobs.node_state import free_port
from tests.harness.services import PostgresServer, RedisServer, Service, die_with_parent

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
LOCAL, CELERY = PROFILES = ("local", "celery")
CELERY_WORKERS = ("worker1", "worker2")  # each a `celery worker` with its own hostname
CELERY_CONCURRENCY = 4  # task slots per worker
TERMINAL_RUN_STATES = {"success", "failed"}
LOCKED = "database is locked"  # SQLite has one writer: a CLI write can lose to the scheduler's
STOP_GRACE_S = 30.0


def _log_line(line: Any) -> str:
    """One structured log line as text: its message, and the exception it carries (a failed task's
    ``error_detail``: type, message and frames), as the UI shows it."""
    if not isinstance(line, dict):
        return str(line)
    text = str(line.get("event", line))
    for error in line.get("error_detail") or []:
        if isinstance(error, dict):
            text += f"\n{error.get('exc_type')}: {error.get('exc_value')}"
    return text


def _venv_bin() -> Path:
    return Path(sys.executable).parent


class AirflowStack:
    """One Airflow deployment rooted at ``home`` (AIRFLOW_HOME, logs; the SQLite DB of ``local``).

    :param home: an empty directory for this deployment.
    :param dags: DAG files to deploy (copied into ``home/dags``, as a deployment would ship them).
    :param env: extra environment for every component and CLI call (data dirs, connections).
    :param profile: ``local`` (LocalExecutor, SQLite) or ``celery`` (CeleryExecutor with two workers,
        a Redis broker, PostgreSQL).
    """

    def __init__(
        self,
        home: Path,
        dags: Iterable[Path],
        env: Mapping[str, str] | None = None,
        profile: str = LOCAL,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}: one of {', '.join(PROFILES)}")
        self.profile = profile
        self.home = home
        self.dags_folder = home / "dags"
        self.logs = home / "component-logs"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen] = {}
        # component name -> `airflow` arguments, and its own environment on top of self.env
        self.commands: dict[str, list[str]] = {name: [name] for name in COMPONENTS}
        self.component_env: dict[str, dict[str, str]] = {}
        # the celery profile's servers: made here, started first and stopped last
        self.postgres = PostgresServer(home, free_port()) if profile == CELERY else None
        self.redis = RedisServer(home, free_port()) if profile == CELERY else None
        self.restarts: list[str] = []  # components that exited on their own and were restarted
        self._lock = threading.Lock()  # processes: the supervising thread and the tests
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._token: str | None = None
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        for dag in dags:
            shutil.copy(dag, self.dags_folder / dag.name)
        base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
        self.env: dict[str, str] = {
            **base,
            "PATH": f"{_venv_bin()}{os.pathsep}{base.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), base.get("PYTHONPATH", "")) if p),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            # Airflow's default: the files never change during a test, and each re-parse is a forked
            # process importing the DAG file, CPU the Spark runs beside it need on a 2-core machine.
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            # A kill -9'd task stops heartbeating; users wait 300 s for Airflow to notice, tests 20 s.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            **self._profile_env(),
            **(env or {}),
        }
        if profile == CELERY:
            for name in CELERY_WORKERS:
                self.commands[name] = [
                    "celery", "worker", "--celery-hostname", f"{name}@%h",
                    "--concurrency", str(CELERY_CONCURRENCY),
                ]  # fmt: skip
                # each worker serves its own task logs, as each host of a deployment does
                self.component_env[name] = {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}

    @property
    def services(self) -> list[Service]:
        return [service for service in (self.postgres, self.redis) if service is not None]

    def _profile_env(self) -> dict[str, str]:
        """The executor and its settings (the metadata DB of ``celery``: :meth:`_start_services`)."""
        if self.redis is None:
            return {
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "tests.harness.sqlite_connect_args.CONNECT_ARGS",
            }
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(CELERY_CONCURRENCY),
        }

    def _start_services(self) -> None:
        """PostgreSQL and Redis, before anything uses them; the DB's URL names the directory of its
        socket, which exists only once the server does."""
        for service in self.services:
            service.start()
        if self.postgres is not None:
            self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.postgres.url
            self.env["AIRFLOW__CELERY__RESULT_BACKEND"] = f"db+{self.postgres.url}"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout_s: float = 240.0) -> AirflowStack:
        """Start the profile's servers, migrate the DB, start the components (the four, and the Celery
        workers of ``celery``), wait until the API answers and the DAGs are parsed."""
        self._start_services()
        self.cli("db", "migrate", timeout_s=300)
        for component in self.commands:
            self._start(component)
        deadline = time.monotonic() + timeout_s
        while not self._api_up():
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"api-server did not answer on {self.url}; see {self.logs}")
            time.sleep(1)
        expected = {p.stem for p in self.dags_folder.glob("*.py")}
        while True:
            self._check_alive()
            files = {Path(d["fileloc"]).stem for d in self.api("GET", "/api/v2/dags?limit=100")["dags"]}
            errors = self.api("GET", "/api/v2/importErrors")["import_errors"]
            if errors:
                raise RuntimeError(f"DAG import errors: {json.dumps(errors)[:3000]}")
            if expected <= files:
                self._supervisor = threading.Thread(target=self._supervise, name="airflow-stack", daemon=True)
                self._supervisor.start()
                return self
            if time.monotonic() > deadline:
                raise TimeoutError(f"DAG files {sorted(expected - files)} not parsed; see {self.logs}")
            time.sleep(2)

    def _start(self, component: str) -> None:
        log = (self.logs / f"{component}.log").open("ab")
        self.processes[component] = subprocess.Popen(
            [str(_venv_bin() / "airflow"), *self.commands[component]],
            env={**self.env, **self.component_env.get(component, {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.home,
            preexec_fn=die_with_parent,  # one group per component: stop() signals it
        )
        log.close()

    def _supervise(self) -> None:
        """Restart a component that exits on its own, as systemd or Kubernetes restart a crashed
        scheduler in a real deployment. Seen in CI: Airflow 3.3's scheduler on SQLite exiting with
        ``StaleDataError: UPDATE statement on table 'dag_run' expected to update 2 row(s); 0 were
        matched`` seconds after a run finished (an open Airflow 3.x scheduler bug class, e.g.
        apache/airflow#63926); unsupervised, every later scenario failed. Each
        restart is kept in :attr:`restarts` (the deployed tests report them as warnings)."""
        while not self._stopping.wait(2):
            with self._lock:
                for name, proc in list(self.processes.items()):
                    if proc.poll() is None or self._stopping.is_set():
                        continue
                    reason = self.log_tail(name, 600).strip().splitlines()[-1:] or [""]
                    self.restarts.append(
                        f"{name} exited with {proc.returncode} ({reason[0][:300]}); restarted"
                    )
                    self._start(name)

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")

    def log_tail(self, component: str, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return (self.logs / f"{component}.log").read_text(errors="replace")[-chars:]
        return ""

    def kill_component(self, component: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """What an OOM kill or a redeploy does to one component (its whole process group)."""
        with self._lock:
            proc = self.processes.pop(component)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            proc.wait(timeout=60)

    def restart_component(self, component: str) -> None:
        with self._lock:
            self._start(component)

    def stop(self) -> None:
        """SIGTERM every component's group, SIGKILL what is left after the grace; by pid, never by name.
        Then the profile's servers, once nothing uses them."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=30)
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group: task processes the executor forked
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.processes.clear()
        for service in reversed(self.services):
            service.stop()

    def __enter__(self) -> AirflowStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the CLI, as users call it --------------------------------------------------------------

    def cli(self, *args: str, timeout_s: float = 180, attempts: int = 5) -> str:
        """Run ``airflow ARGS``; retried while SQLite reports "database is locked"."""
        for attempt in range(1, attempts + 1):
            result = subprocess.run(
                [str(_venv_bin() / "airflow"), *args],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
            )
            if result.returncode == 0:
                return result.stdout
            if LOCKED in result.stdout + result.stderr and attempt < attempts:
                time.sleep(2 * attempt)
                continue
            raise RuntimeError(
                f"airflow {' '.join(args)} exited {result.returncode}:\n{result.stdout[-2000:]}\n"
                f"{result.stderr[-4000:]}"
            )
        raise AssertionError("unreachable")

    # -- the REST API ---------------------------------------------------------------------------

    def _api_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def token(self) -> str:
        """A JWT from the simple auth manager (all users are admins in this deployment)."""
        if self._token is None:
            with urllib.request.urlopen(f"{self.url}/auth/token", timeout=30) as response:
                self._token = json.loads(response.read())["access_token"]
        return self._token

    def token_for(self, username: str, role: str | None) -> str:
        """A JWT of another user of this deployment's auth manager (SimpleAuthManager), signed with the
        deployment's own secret, as its login would issue one; ``role`` None: a user with no role."""
        code = (
            "import sys\n"
            "from airflow.api_fastapi.app import create_auth_manager\n"
            "from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser as User\n"
            "user = User(username=sys.argv[1], role=sys.argv[2] or None)\n"
            "print(create_auth_manager().generate_jwt(user))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, username, role or ""],
            env=self.env, capture_output=True, text=True, timeout=180, cwd=self.home, check=True,
        )  # fmt: skip
        return result.stdout.strip().splitlines()[-1]

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token()}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:2000]!r}") from exc
        return json.loads(raw) if raw else None

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=logical_date")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        quoted = urllib.request.quote(run_id, safe="")
        tis = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances?limit=100")
        return {ti["task_id"]: ti for ti in tis["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        quoted = urllib.request.quote(run_id, safe="")
        entry = self.api(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/xcomEntries/{key}"
        )
        return entry["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        quoted = urllib.request.quote(run_id, safe="")
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/logs/{try_number}"
        content = self.api("GET", f"{path}?full_content=true").get("content", [])
        return "\n".join(_log_line(line) for line in content)

    def wait_for(
        self, what: str, condition: Callable[[], Any], timeout_s: float, interval_s: float = 2.0
    ) -> Any:
        """Poll ``condition`` until it returns something truthy; fail naming ``what`` and the logs."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = condition()  # a component that dies meanwhile is restarted by _supervise
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not reached in {timeout_s:.0f}s; scheduler log:\n"
                                   f"{self.log_tail('scheduler')}")  # fmt: skip
            time.sleep(interval_s)

    def wait_for_runs(self, dag_id: str, count: int, timeout_s: float) -> list[dict[str, Any]]:
        """Wait until ``dag_id`` has at least ``count`` runs, all finished; return them."""

        def finished() -> list[dict[str, Any]] | None:
            runs = self.dag_runs(dag_id)
            done = [r for r in runs if r["state"] in TERMINAL_RUN_STATES]
            return runs if len(runs) >= count and len(done) == len(runs) else None

        return self.wait_for(f"{count} finished runs of {dag_id}", finished, timeout_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local Airflow with this repo's DAGs")
    parser.add_argument("--home", help="AIRFLOW_HOME (default: a new temporary directory)")
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=LOCAL,
        help="local: LocalExecutor + SQLite; celery: CeleryExecutor (2 workers, Redis) + PostgreSQL",
    )
    args = parser.parse_args(argv)
    home = Path(args.home or tempfile.mkdtemp(prefix="airflow-spark-triton-"))
    home.mkdir(parents=True, exist_ok=True)
    stack = AirflowStack(home, sorted((REPO / "dags").glob("*.py")), profile=args.profile)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        stack.start()
        print(
            f"Airflow ({args.profile}) is up: {stack.url} (AIRFLOW_HOME={home}); component logs in {stack.logs}"
        )
        print("Ctrl-C stops every component.", flush=True)
        while True:  # a component that exits is restarted (_supervise) and reported here
            time.sleep(5)
            while stack.restarts:
                print(stack.restarts.pop(0), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
