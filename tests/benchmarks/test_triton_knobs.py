"""The serving knobs the batching sweep turns: job settings -> server flags, and their validation."""

from __future__ import annotations

import os

import pytest

from spark_jobs.contract import InferenceJobConfig, JobConfigError
from spark_jobs.triton_fleet import _server_args
from spark_jobs.triton_node import (
    CPU_MAX_QUEUE_DELAY_US,
    MAX_CPU_INSTANCES,
    ServerRequest,
    cpu_instances,
    cpu_server_flags,
)
from spark_jobs.triton_server import parse_args as server_args

BASE = {"input_table": "in", "output_table": "out", "model": "m:M", "logical_date": "2026-01-01"}
SERVER = ["--model", "m:M", "--run-id", "r", "--record", "x", "--http-port", "1", "--grpc-port", "2",
          "--metrics-port", "3"]  # fmt: skip


def test_defaults_keep_todays_server_and_client():
    job = InferenceJobConfig(**BASE)
    assert job.client_protocol == "http"
    assert job.server_model_instances is None, "instances are the node's choice unless the job sets them"
    assert job.server_max_queue_delay_us is None, "the queue delay too"
    assert "--instances" not in _server_args(job) and "--max-queue-delay-us" not in _server_args(job)
    flags = server_args(SERVER + list(_server_args(job)))
    defaults = server_args(SERVER)
    assert (flags.max_queue_delay_us, flags.preferred_batch_sizes, flags.instances) == (2000, "", 1)
    assert (defaults.max_queue_delay_us, defaults.preferred_batch_sizes, defaults.instances) == (2000, "", 1)


def request(gpus: int = 0, server_args: tuple[str, ...] = ()) -> ServerRequest:
    return ServerRequest("r", "m:M", "{}", 60.0, None, server_args=server_args, gpus=gpus)


def test_a_cpu_node_serves_one_single_threaded_instance_per_core(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(4)))
    assert cpu_instances(request(), []) == (4, 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(4 * MAX_CPU_INSTANCES)))
    assert cpu_instances(request(), []) == (MAX_CPU_INSTANCES, 4), "capped; the cores shared out"


def test_a_cpu_nodes_instances_take_requests_without_a_queue_delay(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(2)))
    flags, threads = cpu_server_flags(request(), [])
    assert server_args(SERVER + flags).instances == 2 and threads == 1
    assert server_args(SERVER + flags).max_queue_delay_us == CPU_MAX_QUEUE_DELAY_US == 0
    job = InferenceJobConfig(**BASE, server_max_queue_delay_us=500)
    flags, _ = cpu_server_flags(request(server_args=_server_args(job)), [])
    assert server_args(SERVER + list(_server_args(job)) + flags).max_queue_delay_us == 500, (
        "the job's own wins"
    )
    assert cpu_server_flags(request(gpus=1), []) == ([], None), "a GPU keeps the 2 ms default"


def test_gpus_or_the_jobs_own_instances_keep_one_instance_per_copy():
    assert cpu_instances(request(gpus=1), []) is None
    assert cpu_instances(request(), ["cuda:0", "cuda:1"]) is None
    job = InferenceJobConfig(**BASE, server_model_instances=3)
    assert cpu_instances(request(server_args=_server_args(job)), []) is None


def test_job_settings_reach_the_server_flags_and_survive_json():
    job = InferenceJobConfig(
        **BASE,
        server_max_queue_delay_us=0,
        server_preferred_batch_sizes=[128, 256],
        server_model_instances=2,
        client_protocol="grpc",
    )
    again = InferenceJobConfig.from_json(job.to_json())
    assert again == job and again.server_preferred_batch_sizes == (128, 256)
    flags = server_args(SERVER + list(_server_args(again)))
    assert (flags.max_queue_delay_us, flags.preferred_batch_sizes, flags.instances) == (0, "128,256", 2)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("client_protocol", "https"),
        ("server_max_queue_delay_us", -1),
        ("server_preferred_batch_sizes", [64, 0]),
        ("server_model_instances", 0),
    ],
)
def test_bad_knobs_are_rejected_naming_the_setting(setting, value):
    with pytest.raises(JobConfigError, match=setting):
        InferenceJobConfig(**BASE, **{setting: value})
