"""RunStatusTrigger against the in-memory backend: the event it yields and what it does on kill."""

from __future__ import annotations

import asyncio

import pytest

from airflow_spark_triton.backends.base import RunLifecycle
from airflow_spark_triton.triggers import run_status
from airflow_spark_triton.triggers.run_status import RunStatusTrigger
from tests.backends.fake import FakeBackend


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    fake = FakeBackend()

    async def aget_backend(conn_id: str) -> FakeBackend:
        return fake

    monkeypatch.setattr(run_status, "aget_backend", aget_backend)
    return fake


async def first_event(trigger: RunStatusTrigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def test_the_event_carries_the_terminal_status_and_progress_errors_do_not_end_the_wait(
    backend: FakeBackend,
) -> None:
    backend.add_run("run-1", RunLifecycle.PENDING, RunLifecycle.RUNNING, RunLifecycle.FAILED)
    backend.progress = OSError("progress file unreadable")
    event = asyncio.run(first_event(RunStatusTrigger("conn", "run-1", poll_interval_s=0.01)))
    assert event["run_id"] == "run-1" and event["state"] == "FAILED"


def test_on_kill_cancels_the_run(backend: FakeBackend) -> None:
    backend.add_run("run-1", RunLifecycle.RUNNING)
    asyncio.run(RunStatusTrigger("conn", "run-1").on_kill())
    assert backend.get_run_status("run-1").state is RunLifecycle.CANCELED


def test_the_trigger_round_trips_through_serialize() -> None:
    path, kwargs = RunStatusTrigger("conn", "run-1", poll_interval_s=2.0).serialize()
    assert path == "airflow_spark_triton.triggers.run_status.RunStatusTrigger"
    assert RunStatusTrigger(**kwargs).serialize() == (path, kwargs)
