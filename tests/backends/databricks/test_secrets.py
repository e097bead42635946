"""Secrets in a cluster spec's ``spark_env_vars`` on Databricks (issue #24, item 5): a plain secret
value never reaches the workspace (the volume's jobs compute definition, ``clusters/create``,
``runs/submit``); a Databricks secret reference passes through as written, for the nodes to resolve.
"""

from __future__ import annotations

import json

import pytest

from airflow_spark_triton.backends.base import BackendConfigError
from airflow_spark_triton.cluster_spec import GpuClusterSpec
from tests.backends.databricks.test_backend import job
from tests.backends.databricks.test_cluster_spec import TAGS
from tests.databricks_emulator import DatabricksEmulator
from tests.hooks.conftest import ARTIFACT_ROOT
from tests.processes import files_containing

CANARY = "dbx-canary-5c0ffee1"
REFERENCE = "{{secrets/ml-nightly/hf_token}}"


def create(backend, spec: GpuClusterSpec) -> str:
    return (
        backend.prepare_job_compute(spec, TAGS)
        if spec.compute == "job"
        else backend.create_cluster(spec, TAGS)
    )


def nowhere_in(emulator: DatabricksEmulator, text: str) -> None:
    assert text not in repr(emulator.requests), "a request carried it"
    assert files_containing(text, emulator.home) == [], "the volume holds it"


@pytest.mark.parametrize("compute", ["job", "all_purpose"])
def test_a_plain_secret_value_is_refused_before_anything_reaches_the_workspace(
    compute, make_backend, emulator
):
    spec = GpuClusterSpec(compute=compute, spark_env_vars={"HF_TOKEN": CANARY, "MODEL_DIR": "/models"})
    with pytest.raises(
        BackendConfigError,
        match=r"'spark_env_vars': HF_TOKEN look\(s\) secret.*\{\{secrets/<scope>/<key>\}\}",
    ):
        create(make_backend(), spec)
    assert emulator.calls() == [], "refused before any upload, policy check or create"
    nowhere_in(emulator, CANARY)


@pytest.mark.parametrize("compute", ["job", "all_purpose"])
def test_a_secret_reference_passes_through_to_the_cluster_and_the_stored_definition(
    compute, make_backend, emulator
):
    backend = make_backend()
    spec = GpuClusterSpec(compute=compute, spark_env_vars={"HF_TOKEN": REFERENCE, "MODEL_DIR": "/models"})
    cluster_id = create(backend, spec)
    backend.submit_job(cluster_id, job(), "t1")

    if compute == "job":
        stored = emulator.workspace.files.read(
            f"{ARTIFACT_ROOT}/compute/{cluster_id.removeprefix('jobcompute-')}.json"
        )
        sent = emulator.calls("POST", "2.2/jobs/runs/submit")[0].body["tasks"][0]["new_cluster"]
        assert json.loads(stored)["spark_env_vars"]["HF_TOKEN"] == REFERENCE
    else:
        sent = emulator.calls("POST", "2.1/clusters/create")[0].body
    assert (
        sent["spark_env_vars"]["HF_TOKEN"] == REFERENCE and sent["spark_env_vars"]["MODEL_DIR"] == "/models"
    )
