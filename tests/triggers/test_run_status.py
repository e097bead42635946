"""The deferrable wait (issue #11): the trigger reaches a terminal event, never blocks the event loop on
a connection lookup, logs progress, and cancels the run when the task is killed.

Runs against a real local-backend run directory (state files written here, no Spark): the trigger
only reads ``status.json`` and ``report.progress.json``, and a cancel signals the recorded supervisor.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from airflow.sdk import BaseHook

from airflow_spark_triton.backends.base import RunLifecycle
from airflow_spark_triton.backends.local.backend import LocalSparkBackend
from airflow_spark_triton.runs import processes as procs
from airflow_spark_triton.runs.processes import ProcessRecord
from airflow_spark_triton.triggers.run_status import RunStatusTrigger
from spark_jobs.json_files import write_json_atomic
from tests.backends.local.conftest import no_process_left_behind  # noqa: F401  (the fixture, used below)
from tests.backends.local.test_backend import fake_cluster

pytestmark = pytest.mark.usefixtures("no_process_left_behind")

CONN_ID = "st_trigger_local"


@pytest.fixture
def hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalSparkBackend:
    """The local backend, reached through a connection as the triggerer reaches it."""
    home = tmp_path / "home"
    connection = {"conn_type": "spark_triton_local", "extra": {"home": str(home)}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
    return LocalSparkBackend(spark_triton_conn_id=None, home=str(home))


@pytest.fixture
def no_sync_lookup_in_the_loop(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail any synchronous connection lookup made on the event loop's thread; worker threads
    (``asyncio.to_thread``, where the backend's blocking calls run) may still use it."""
    original = BaseHook.get_connection.__func__
    lookups: list[str] = []

    def guarded(cls, conn_id):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return original(cls, conn_id)
        lookups.append(conn_id)
        raise AssertionError(f"synchronous lookup of {conn_id!r} inside the event loop")

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(guarded))
    return lookups


def make_run(hook: LocalSparkBackend, supervisor: ProcessRecord, state: str = "RUNNING") -> str:
    cluster_id = fake_cluster(hook)
    run_id = f"{cluster_id}-run-0000beef"
    run_dir = hook.run_dir(run_id)
    run_dir.mkdir(parents=True)
    record = {"run_id": run_id, "idempotency_token": "t", "supervisor": supervisor.to_dict()}
    write_json_atomic(run_dir / "run.json", record)
    write_json_atomic(run_dir / "status.json", {"run_id": run_id, "state": state})
    return run_id


def set_state(hook: LocalSparkBackend, run_id: str, state: str, message: str = "") -> None:
    path = hook.run_dir(run_id) / "status.json"
    write_json_atomic(path, {**json.loads(path.read_text()), "state": state, "message": message})


def test_serializes_to_what_it_was_built_from():
    trigger = RunStatusTrigger("c", "r", 2.5)
    path, kwargs = trigger.serialize()
    assert path == "airflow_spark_triton.triggers.run_status.RunStatusTrigger"
    assert RunStatusTrigger(**kwargs).serialize() == (path, kwargs)


def test_polls_to_a_terminal_event_logging_progress(hook, no_sync_lookup_in_the_loop):
    me = ProcessRecord.of(os.getpid())  # a live "supervisor" that is never signalled here
    run_id = make_run(hook, me)
    write_json_atomic(
        hook.run_dir(run_id) / "report.progress.json",
        {"rows_done": 50, "rows_total": 200, "rows_per_s": 12.5, "phase": "inference"},
    )
    trigger = RunStatusTrigger(CONN_ID, run_id, poll_interval_s=0.05)
    trigger._log = mock.Mock()

    async def first_event():
        async def finish_later():
            await asyncio.sleep(0.3)
            await asyncio.to_thread(set_state, hook, run_id, "SUCCESS")

        finisher = asyncio.create_task(finish_later())
        try:
            async with asyncio.timeout(30):
                async for event in trigger.run():
                    return event
        finally:
            await finisher

    event = asyncio.run(first_event())
    assert event.payload["state"] == RunLifecycle.SUCCESS.value
    assert event.payload["run_id"] == run_id
    logged = [call.args for call in trigger._log.info.call_args_list]
    # One short line per poll: the progress, or the state while there is none.
    assert set(logged) == {("Progress: %s", "50/200 rows (25%), 12.5 rows/s [inference]")}
    assert no_sync_lookup_in_the_loop == []


def test_a_run_already_finished_yields_at_once(hook, no_sync_lookup_in_the_loop):
    run_id = make_run(hook, ProcessRecord.of(os.getpid()), state="FAILED")
    set_state(hook, run_id, "FAILED", "ValueError: bad input")

    async def first_event():
        async for event in RunStatusTrigger(CONN_ID, run_id, poll_interval_s=60).run():
            return event

    event = asyncio.run(asyncio.wait_for(first_event(), 30))
    assert event.payload["state"] == "FAILED" and event.payload["message"] == "ValueError: bad input"


def test_a_missing_connection_fails_the_trigger_by_name(no_sync_lookup_in_the_loop):
    async def first_event():
        async for event in RunStatusTrigger("st_no_such_conn", "local-0123456789ab-run-0000beef").run():
            return event

    with pytest.raises(Exception, match="'st_no_such_conn' does not exist"):
        asyncio.run(first_event())


def test_on_kill_cancels_the_run(hook, tmp_path, no_sync_lookup_in_the_loop):
    """As the triggerer does on a user kill: cancel the running ``run()``, then await ``on_kill``."""
    supervisor = procs.start_detached(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        env=dict(os.environ),
        log_path=tmp_path / "supervisor.log",
        cwd=tmp_path,
    )
    try:
        run_id = make_run(hook, supervisor)
        trigger = RunStatusTrigger(CONN_ID, run_id, poll_interval_s=0.05)

        async def kill_while_waiting():
            waiting = asyncio.create_task(anext(trigger.run()))
            await asyncio.sleep(0.3)
            assert not waiting.done(), "the run is still RUNNING: no event yet"
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await asyncio.wait_for(trigger.on_kill(), 60)

        asyncio.run(kill_while_waiting())
        assert not procs.is_alive(supervisor)
        assert hook.get_run_status(run_id).state == RunLifecycle.CANCELED
    finally:
        procs.stop_groups([supervisor], grace_s=1)


def test_the_operator_defers_by_default_when_airflow_says_so():
    """``deferrable`` defaults to ``[operators] default_deferrable`` (read at import, as in the
    Databricks provider), so a fresh interpreter sees the setting."""
    code = (
        "from airflow_spark_triton.operators.inference import TritonInferenceOperator as Op\n"
        "op = Op(task_id='t', cluster_id='c', input_table='/i', output_table='/o', model='m:M')\n"
        "print('DEFERRABLE', op.deferrable)\n"
    )
    configured = "True"  # Airflow's own default is False
    env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": configured}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert f"DEFERRABLE {configured}" in result.stdout, result.stderr[-2000:]
