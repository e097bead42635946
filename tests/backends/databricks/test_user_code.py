"""A ``ServedModel`` in the user's own package reaches Databricks nodes as a wheel the backend builds.

On the emulator: the run's libraries carry ``spark_triton_user_<package>-0+<digest>-py3-none-any.whl``
uploaded under the artifact root by its content; pip installs that wheel (as Databricks does on every
node) and a fresh interpreter with only the installed wheel and this project's own packages on its path
resolves the model from it. A change of the module gives a new wheel beside the old one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from airflow_spark_triton.backends.databricks.user_code import user_code_wheel
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from spark_jobs.contract import InferenceJobConfig
from tests.conftest import REPO

TAGS = {"airflow_dag_id": "team_dag", "airflow_task_id": "create_cluster", "airflow_run_id": "r1"}
SCORER = """
from spark_jobs.models.base import ServedModel, TensorSpec

from {package}.features import SCALE


def load(options):
    import numpy as np

    def infer(text):
        return {{"score": np.array([len(t) * SCALE for t in text.reshape(-1)], dtype=np.float32)}}

    return infer


MODEL = ServedModel(
    name="team_scorer", inputs=(TensorSpec("text", "bytes"),), output=TensorSpec("score", "float32"),
    loader=load, requirements=("numpy<2",),
)
"""


@pytest.fixture
def team_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A package of the user's, as in a DAGs folder: two modules, imported from the DAGs folder."""
    package = f"team_models_{os.getpid()}_{abs(hash(tmp_path)) % 10**6}"
    root = tmp_path / "dags" / package
    root.mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "features.py").write_text("SCALE = 2.0\n")
    (root / "scorer.py").write_text(SCORER.format(package=package))
    monkeypatch.syspath_prepend(str(tmp_path / "dags"))
    return package, root


def job(model: str) -> InferenceJobConfig:
    return InferenceJobConfig(
        input_table="/data/in", output_table="/data/out", model=model, logical_date="2026-11-24"
    )


def test_a_model_of_the_users_package_ships_as_a_wheel_the_nodes_install(
    make_backend, emulator, team_package, tmp_path
):
    package, _root = team_package
    backend = make_backend()
    compute_id = backend.prepare_job_compute(GpuClusterSpec(num_workers=1), TAGS)
    backend.submit_job(compute_id, job(f"{package}.scorer:MODEL"), "t-user-code")

    (task,) = emulator.calls("POST", "2.2/jobs/runs/submit")[-1].body["tasks"]
    wheels = [lib["whl"] for lib in task["libraries"] if "whl" in lib and "/spark_triton_user_" in lib["whl"]]
    assert [lib["pypi"]["package"] for lib in task["libraries"] if "pypi" in lib] == ["numpy<2"]
    (remote,) = wheels
    assert remote.startswith(f"{backend.hook.artifact_root}/artifacts/models/")
    assert Path(remote).name.startswith(f"spark_triton_user_{package}-0+")
    local = tmp_path / Path(remote).name
    local.write_bytes(emulator.workspace.files.read(remote))
    with zipfile.ZipFile(local) as wheel:
        assert {f"{package}/__init__.py", f"{package}/features.py", f"{package}/scorer.py"} <= set(
            wheel.namelist()
        )

    # What Databricks does with a whl library on every node, then the job's model resolution there.
    site = tmp_path / "node-site-packages"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(local),
        ],
        check=True,
    )
    probe = (
        "import numpy as np\nfrom spark_jobs.models.references import resolve_model\n"
        f"m = resolve_model('{package}.scorer:MODEL')\n"
        "print(m.name, m.load({})(np.array([[b'abc']], dtype=object))['score'][0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True, text=True, check=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}"},
    )  # fmt: skip
    assert out.stdout.split() == ["team_scorer", "6.0"]


def test_the_wheel_is_named_by_its_content(team_package):
    package, root = team_package
    first = user_code_wheel(f"{package}.scorer:MODEL")
    assert first is not None and user_code_wheel(f"{package}.scorer:MODEL") == first
    assert (
        first.read_bytes() == user_code_wheel(f"{package}.features:X").read_bytes()
    )  # one package, one wheel
    (root / "features.py").write_text("SCALE = 3.0\n")
    changed = user_code_wheel(f"{package}.scorer:MODEL")
    assert changed != first and first.is_file()


@pytest.mark.parametrize(
    "reference", ["spark_jobs.models.minilm:MODEL", "json:dumps", "no_such_pkg.mod:MODEL"]
)
def test_this_packages_models_and_the_standard_library_are_not_shipped(reference):
    assert user_code_wheel(reference) is None
