"""The ``predict_batch_udf`` whose predict function is a Triton client bound to its own node's server.

Each Spark Python worker builds one client, once, pointing at 127.0.0.1 and the port recorded by
the server on that host: the model lives in the server (one copy per node), the workers only move
Arrow batches to it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pyspark.ml.functions import predict_batch_udf
from pyspark.sql import types as T

from spark_jobs.models.base import ServedModel, TensorSpec
from spark_jobs.triton_fleet import local_server_record

_SPARK_TYPES = {
    "float32": T.FloatType(),
    "float64": T.DoubleType(),
    "int64": T.LongType(),
    "int32": T.IntegerType(),
}


def _to_tensor(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.is_text:
        encoded = [
            v if isinstance(v, bytes | bytearray) else str(v).encode("utf-8") for v in values.reshape(-1)
        ]
        return np.array(encoded, dtype=np.object_).reshape(-1, *spec.shape)
    return np.asarray(values, dtype=spec.numpy_dtype).reshape(-1, *spec.shape)


def return_type(model: ServedModel) -> T.DataType:
    element = _SPARK_TYPES.get(model.output.dtype)
    if element is None:
        raise ValueError(f"model {model.name}: unsupported output dtype {model.output.dtype!r}")
    return T.ArrayType(element) if model.output.shape != (1,) else element


def triton_predict_udf(model: ServedModel, run_id: str, batch_size: int, timeout_s: float):
    def make_predict_fn() -> Callable[..., np.ndarray]:
        from pytriton.client import ModelClient

        record = local_server_record(run_id)
        client = ModelClient(
            f"http://127.0.0.1:{record['http_port']}",
            model.name,
            init_timeout_s=timeout_s,
            inference_timeout_s=timeout_s,
        )

        def predict(*columns: np.ndarray) -> np.ndarray:
            inputs = {
                spec.name: _to_tensor(col, spec) for col, spec in zip(columns, model.inputs, strict=True)
            }
            return client.infer_batch(**inputs)[model.output.name]

        return predict

    shapes = [None if spec.is_text else list(spec.shape) for spec in model.inputs]
    return predict_batch_udf(
        make_predict_fn,
        return_type=return_type(model),
        batch_size=batch_size,
        input_tensor_shapes=shapes if any(s is not None for s in shapes) else None,
    )
