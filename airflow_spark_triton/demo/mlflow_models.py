"""A small MLflow pyfunc model in a local registry, for the tests, the demo and the benchmarks.

``log_text_scorer`` logs a pyfunc model whose code is its own module, shipped with the model
(``code_paths``): the module is written to a directory of its own and imported from there, so a
node can load the model only from the model's files, as a team's model. Its signature takes
``text`` (string) and ``weight`` (double) and gives three columns, ``length`` (long), ``score``
(double) and ``label`` (string); each version scales the score by its own factor and tags its label
with its own version, so outputs tell the versions apart.

The store is MLflow's own: a ``sqlite:///`` tracking and registry URI (MLflow 3, the ``[mlflow]``
extra) with artifacts in a directory next to it. Nothing here imports MLflow at module import.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

MODULE_NAME = "spark_triton_demo_text_scorer"
# The model's own code, logged with it (code_paths) and importable only from the model's files.
MODULE_SOURCE = '''"""A pyfunc text scorer (airflow-spark-triton demo): three output columns per row."""

import mlflow.pyfunc
import pandas as pd


class TextScorer(mlflow.pyfunc.PythonModel):
    def __init__(self, scale, tag):
        self.scale = float(scale)
        self.tag = str(tag)

    def predict(self, context, model_input, params=None):
        text = model_input["text"].astype(str)
        weight = model_input["weight"].astype(float)
        return pd.DataFrame(
            {
                "length": text.str.len().astype("int64"),
                "score": (text.str.count("a") + 1.0) * weight * self.scale,
                "label": self.tag + ":" + text.str.split().str[0].fillna(""),
            }
        )
'''


@dataclass(frozen=True)
class LoggedVersion:
    name: str
    version: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def local_store(root: Path) -> str:
    """A ``sqlite:///`` tracking and registry URI under ``root`` (artifacts in ``root/artifacts``)."""
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _scorer_module(code_dir: Path):
    """The model's module, written under ``code_dir`` and imported from there."""
    code_dir.mkdir(parents=True, exist_ok=True)
    path = code_dir / f"{MODULE_NAME}.py"
    if not path.is_file() or path.read_text() != MODULE_SOURCE:
        path.write_text(MODULE_SOURCE)
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))
    return importlib.import_module(MODULE_NAME), path


def log_text_scorer(
    tracking_uri: str,
    name: str,
    scale: float,
    *,
    experiment: str = "spark-triton-demo",
    artifact_root: Path | None = None,
    alias: str | None = None,
) -> LoggedVersion:
    """Log one version of the text scorer (score times ``scale``) and register it as ``name``;
    ``alias`` moves that alias to it. Returns the new version."""
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    root = artifact_root or Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=root.resolve().as_uri())
    mlflow.set_experiment(experiment)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    existing = (
        client.search_model_versions(f"name='{name}'")
        if client.search_registered_models(f"name='{name}'")
        else []
    )
    tag = f"v{len(existing) + 1}"
    module, path = _scorer_module(root / "code" / tag)
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "text"), ColSpec("double", "weight")]),
        outputs=Schema([ColSpec("long", "length"), ColSpec("double", "score"), ColSpec("string", "label")]),
    )
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=module.TextScorer(scale, tag),
            code_paths=[str(path)],
            signature=signature,
            # Pinned as logged; given here so MLflow does not start a process to infer them.
            pip_requirements=[f"mlflow=={mlflow.__version__}", f"pandas=={pd.__version__}"],
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return LoggedVersion(name, version, run.info.run_id)
