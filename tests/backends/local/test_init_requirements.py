"""The local backend checks the served model's declared requirements on every node at create time.

``local_init.sh`` runs before each worker starts; given ``SPARK_TRITON_MODEL_REQUIREMENTS`` it checks
each requirement against the node interpreter's installed distributions (importlib.metadata and
packaging's specifiers) and fails with one line naming the one that is missing or mismatched. The
script tests run it directly with this venv's interpreter; one slow test creates a real cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest

from airflow_spark_triton.backends.base import BackendConfigError, ClusterError
from airflow_spark_triton.backends.local import commands
from airflow_spark_triton.cluster_spec import GpuClusterSpec

SCRIPT = commands.packaged_init_script()
NUMPY = metadata.version("numpy")


def run_script(
    tmp_path: Path, requirements: list[str] | None, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **extra_env,
        "PATH": "/usr/bin:/bin",
        "SPARK_TRITON_CLUSTER_ID": "local-test",
        "SPARK_TRITON_WORKER_INDEX": "0",
        "SPARK_TRITON_WORKER_DIR": str(tmp_path / "worker-0"),
        "SPARK_TRITON_PYTHON": sys.executable,
    }
    if requirements is not None:
        env[commands.MODEL_REQUIREMENTS_ENV] = json.dumps(requirements)
    return subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path
    )


def test_installed_requirements_pass_and_the_node_is_marked_ok(tmp_path):
    assert NUMPY.startswith("1.")  # the local extra pins numpy<2 (pytriton 0.7)
    result = run_script(tmp_path, ["numpy<2", "packaging", "numpy>=1; python_version < '3'"])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "worker-0" / "spark_triton_init.ok").is_file()


def test_an_mlflow_requirement_is_met_by_mlflow_skinny(tmp_path):
    """MLflow writes mlflow==<version> into a model's requirements.txt even when it was logged with
    mlflow-skinny alone: a node with mlflow-skinny of that version meets it."""
    site = tmp_path / "site"
    (site / "mlflow_skinny-9.9.9.dist-info").mkdir(parents=True)
    (site / "mlflow_skinny-9.9.9.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: mlflow-skinny\nVersion: 9.9.9\n"
    )
    result = run_script(tmp_path, ["mlflow==9.9.9"], PYTHONPATH=str(site))
    assert result.returncode == 0, result.stderr
    result = run_script(tmp_path, ["mlflow==9.9.8"], PYTHONPATH=str(site))
    assert result.returncode == 1
    assert "mlflow==9.9.8 is not satisfied by the installed" in result.stderr
    assert "mlflow-skinny 9.9.9" in result.stderr


@pytest.mark.parametrize(
    ("requirement", "why"),
    [
        ("no-such-package-xyz>=1", "no-such-package-xyz>=1 is not installed"),
        ("numpy>=2", f"numpy>=2 is not satisfied by the installed numpy {NUMPY}"),
        ("numpy===0.0 ; python_version >= '3'", f"is not satisfied by the installed numpy {NUMPY}"),
        ("numpy=>2", "'numpy=>2' is not a valid PEP 508 requirement"),
    ],
)
def test_a_missing_or_mismatched_requirement_fails_the_node_with_one_line_naming_it(
    tmp_path, requirement, why
):
    result = run_script(tmp_path, ["numpy<2", requirement])
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("local_init.sh (cluster local-test, worker 0): model requirement not met in ")
    assert why in line
    assert "numpy<2" not in line  # the satisfied one is not blamed
    assert not (tmp_path / "worker-0" / "spark_triton_init.ok").exists()


@pytest.fixture
def declared_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """A model module on sys.path whose declaration the test picks."""

    def make(requirements: tuple[str, ...] = (), wheels: tuple[str, ...] = ()) -> str:
        name = f"local_declared_model_{abs(hash((requirements, wheels)))}"
        (tmp_path / f"{name}.py").write_text(
            "from spark_jobs.models.base import ServedModel, TensorSpec\n"
            "MODEL = ServedModel(name='m', inputs=(TensorSpec('text', 'bytes'),), "
            "output=TensorSpec('e', 'float32'), loader=lambda o: None, "
            f"requirements={requirements!r}, wheels={wheels!r})\n"
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        return f"{name}:MODEL"

    return make


def test_the_init_script_gets_the_models_requirements_and_its_wheels_as_pins(tmp_path, declared_model):
    model = declared_model(("numpy<2",), ("/wheels/my_weights-1.2.0-py3-none-any.whl",))
    requirements = commands.model_requirements(model)
    assert requirements == ["numpy<2", "my-weights==1.2.0"]
    record = {
        "cluster_id": "local-x", "python": sys.executable, "spark_version": "4.0.0", "spark_home": "/s",
        "spec": GpuClusterSpec(model=model).to_dict(), "model_requirements": requirements,
    }  # fmt: skip
    env = commands.init_script_env(record, tmp_path, 0, tmp_path / "w")
    assert json.loads(env[commands.MODEL_REQUIREMENTS_ENV]) == requirements
    # No model: nothing to check, and no variable the script would read.
    del record["model_requirements"]
    assert commands.MODEL_REQUIREMENTS_ENV not in commands.init_script_env(
        record, tmp_path, 0, tmp_path / "w"
    )


def test_an_invalid_declaration_fails_the_create_before_anything_starts(backend, declared_model):
    with pytest.raises(BackendConfigError, match=r"declares requirement 'numpy=>2'.*PEP 508"):
        backend.create_cluster(GpuClusterSpec(num_workers=1, model=declared_model(("numpy=>2",))), {})
    with pytest.raises(BackendConfigError, match=r"cluster setting 'model'.*no_such_module"):
        backend.create_cluster(GpuClusterSpec(num_workers=1, model="no_such_module:MODEL"), {})
    assert not backend.clusters_dir.exists() or not any(backend.clusters_dir.iterdir())  # nothing made


@pytest.mark.slow
@pytest.mark.usefixtures("no_process_left_behind")
def test_a_local_create_fails_naming_the_missing_requirement(backend, declared_model):
    model = declared_model(("numpy<2", "no-such-package-xyz>=1"))
    with pytest.raises(ClusterError) as failed:
        backend.create_cluster(GpuClusterSpec(num_workers=1, model=model), {"airflow_run_id": "r"})
    message = str(failed.value)
    assert "failed for worker 0" in message
    assert "model requirement not met" in message and "no-such-package-xyz>=1 is not installed" in message
    assert backend.find_cluster({"airflow_run_id": "r"}) is None


def test_an_mlflow_models_requirements_and_python_are_checked_before_anything_starts(tmp_path):
    """An MLflow model's requirements.txt is what the nodes are checked for; its python_env.yaml's
    Python must be the nodes' (a pickled model of another Python does not load)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n")
    (model / "requirements.txt").write_text("mlflow==3.17.2\nnumpy<2\n")
    (model / "python_env.yaml").write_text("python: 3.9.18\n")
    with pytest.raises(BackendConfigError, match=r"logged with Python 3\.9\.18 .* is Python 3\.\d+"):
        commands.model_requirements(str(model))
    (model / "python_env.yaml").write_text(f"python: {sys.version_info.major}.{sys.version_info.minor}.0\n")
    assert commands.model_requirements(str(model)) == ["mlflow==3.17.2", "numpy<2"]
