"""The generation model as an MLflow pyfunc logged from code (:mod:`benchmarks.mlflow_model`).

MLflow saves this file with the model and runs it wherever the model loads (each Spark Python
worker of ``mlflow.pyfunc.spark_udf``). It generates through the package's own
``text2text-generation`` loader, with the options logged as the model's ``model_config``, so the
MLflow path runs the same ``generate`` as every other path and differs only in how rows reach it.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np


class GenerationModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from spark_jobs.models.huggingface import hf_model

        options = dict(context.model_config or {})
        self._infer = hf_model("text2text-generation", context.artifacts["model"]).load(options)

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> list[str]:
        texts = np.array([t.encode("utf-8") for t in model_input["text"]], dtype=np.object_).reshape(-1, 1)
        return list(self._infer(texts)["generated_text"])


mlflow.models.set_model(GenerationModel())
