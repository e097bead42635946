"""Wait for an inference run in the triggerer, so a deferred task holds no worker slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_spark_triton.hooks.backend import get_backend
from airflow_spark_triton.hooks.base import RunStatus


class RunStatusTrigger(BaseTrigger):
    """Polls the backend until the run is terminal; cancels the run when a user kills the task.

    Airflow does not call a deferred operator's ``on_kill``; since 3.3 it calls the trigger's, so
    cancellation lives here too.
    """

    def __init__(self, conn_id: str, run_id: str, poll_interval_s: float = 10.0) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.run_id = run_id
        self.poll_interval_s = poll_interval_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"conn_id": self.conn_id, "run_id": self.run_id, "poll_interval_s": self.poll_interval_s},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        backend = get_backend(self.conn_id)
        while True:
            status: RunStatus = await asyncio.to_thread(backend.get_run_status, self.run_id)
            if status.state.is_terminal:
                yield TriggerEvent(status.to_dict())
                return
            self.log.info("Run %s is %s", self.run_id, status.state.value)
            getter = getattr(backend, "get_run_progress", None)
            progress = await asyncio.to_thread(getter, self.run_id) if callable(getter) else None
            if progress:
                from airflow_spark_triton.operators.inference import format_progress

                self.log.info("Run %s progress: %s", self.run_id, format_progress(progress))
            await asyncio.sleep(self.poll_interval_s)

    async def on_kill(self) -> None:
        backend = get_backend(self.conn_id)
        await asyncio.to_thread(backend.cancel_run, self.run_id)
