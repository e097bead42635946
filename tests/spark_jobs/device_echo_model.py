"""A test model that answers with the GPU index its copy was loaded for, touching no GPU.

Served by ``test_multi_gpu_server.py`` on a Spark cluster whose "GPUs" come from a discovery script
that invents them: every row's answer says which copy (``options["device"]``) scored it, so the test
sees the executor's GPU addresses reach the node server's model copies without CUDA.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spark_jobs.models.base import InferFn, ServedModel, TensorSpec

LOADED: list[dict[str, Any]] = []  # in the server process: the options of each copy, in load order


def _load(options: Mapping[str, Any]) -> InferFn:
    import numpy as np

    device = str(options.get("device") or "none")
    LOADED.append(dict(options))
    index = float(device.rpartition(":")[2]) if device.startswith("cuda:") else -1.0

    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"gpu": np.full((len(x), 1), index, dtype=np.float32)}

    return infer


MODEL = ServedModel(
    name="device_echo",
    inputs=(TensorSpec("x", "float32", (1,)),),
    output=TensorSpec("gpu", "float32", (1,)),
    loader=_load,
    max_batch_size=64,
)
