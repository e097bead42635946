"""Wait for an inference run in the triggerer, so a deferred task holds no worker slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_spark_triton.backends.base import GpuSparkBackend, RunStatus
from airflow_spark_triton.backends.registry import aget_backend
from airflow_spark_triton.progress_format import format_progress


class RunStatusTrigger(BaseTrigger):
    """Polls the backend until the run is terminal; cancels the run when a user kills the task.

    Airflow does not call a deferred operator's ``on_kill``; since 3.3 it calls the trigger's, so
    cancellation lives here too.

    Nothing blocks the triggerer's event loop: the connection is fetched with the SDK's async API
    (:func:`~airflow_spark_triton.backends.registry.aget_backend`), the run's status with the
    backend's async poll (Databricks: the provider's aiohttp calls, whose connection it looks up
    asynchronously), and the rest (progress, a cancel) runs in worker threads.

    An API incident while polling (429, 5xx, connection errors, timeouts) is ridden out with
    back-off, honouring ``Retry-After``, with no deadline of its own: the deferral's timeout (the
    task's ``execution_timeout``, which Airflow enforces by canceling this trigger), the task's
    kill or the run's own terminal state end the wait.
    """

    def __init__(self, conn_id: str, run_id: str, poll_interval_s: float = 10.0) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.run_id = run_id
        self.poll_interval_s = poll_interval_s
        self._backend: GpuSparkBackend | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"conn_id": self.conn_id, "run_id": self.run_id, "poll_interval_s": self.poll_interval_s},
        )

    async def _get_backend(self) -> GpuSparkBackend:
        if self._backend is None:
            self._backend = await aget_backend(self.conn_id)
        return self._backend

    async def run(self) -> AsyncIterator[TriggerEvent]:
        backend = await self._get_backend()
        while True:
            status: RunStatus = await backend.apoll_run_status(self.run_id, None)
            if status.state.is_terminal:
                yield TriggerEvent(status.to_dict())
                return
            try:
                progress = await asyncio.to_thread(backend.get_run_progress, self.run_id)
            except Exception:
                # Progress is a courtesy: an unreadable progress file must not fail the wait.
                self.log.debug("Could not read the progress of run %s", self.run_id, exc_info=True)
                progress = None
            # One short line per poll (the task log shows the trigger's lines too).
            if progress:
                self.log.info("Progress: %s", format_progress(progress))
            else:
                self.log.info("Run %s is %s", self.run_id, status.state.value)
            await asyncio.sleep(self.poll_interval_s)

    async def on_kill(self) -> None:
        backend = await self._get_backend()
        self.log.info("Task killed: canceling run %s", self.run_id)
        await asyncio.to_thread(backend.cancel_run, self.run_id)
