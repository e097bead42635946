"""The nightly pipeline deployed as production runs Airflow: PostgreSQL, CeleryExecutor, two workers.

The metadata DB is PostgreSQL, tasks go through a Redis broker to two Celery workers with their own
hostnames (``worker1@…``, ``worker2@…``), beside the scheduler, dag-processor, api-server and
triggerer (the harness's ``celery`` profile). The scenarios are the quick profile's own
(``test_nightly_deployed.py``), collected again here with this module's ``deployment``: the
scheduled run, the parallel backfill and its reprocess, kill -9 of the inference task (the retry
reconnects to its run) and of the create task on its last try (the reaper deletes the cluster).

Under Celery the task's processes are a pool process of a worker, retitled ``airflow supervisor:
<ti id>`` while it supervises the task, and the task process it forks, ``airflow worker -- <ti
id>`` as under the LocalExecutor: ``kill9_task`` finds and kills both by the ti id.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deployed import test_nightly_deployed as scenarios
from tests.deployed.conftest import Deployment, deploy
from tests.harness.airflow_stack import CELERY, CELERY_WORKERS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    yield from deploy("deployed-celery", CELERY)


# The quick profile's scenarios, in its order (the scheduled run must be the nightly DAG's first run).
test_scheduled_run_scores_the_last_complete_day = scenarios.test_scheduled_run_scores_the_last_complete_day
test_backfill_of_three_parallel_dates_then_reprocess_rescores = (
    scenarios.test_backfill_of_three_parallel_dates_then_reprocess_rescores
)
test_kill9_of_the_inference_task_while_triton_serves = (
    scenarios.test_kill9_of_the_inference_task_while_triton_serves
)
test_kill9_of_the_create_task_on_its_last_try = scenarios.test_kill9_of_the_create_task_on_its_last_try


def test_both_celery_workers_ran_tasks(deployment: Deployment) -> None:
    """After the scenarios: the tasks were spread over both workers, each with its own hostname."""
    for worker in CELERY_WORKERS:
        log = deployment.stack.log_tail(worker, chars=10_000_000)
        assert f"{worker}@" in log and "Executing workload in Celery" in log, f"{worker} ran no task"
