"""What a served model needs installed on a Databricks cluster: its declared requirements and wheels,
an MLflow model's ``requirements.txt``, and a user module's own code (:mod:`.user_code`).

A :class:`~spark_jobs.models.base.ServedModel` declares ``requirements`` (PEP 508 strings) and
``wheels``. The backend turns them into the run task's ``libraries`` (``compute.PythonPyPiLibrary``
and ``compute.Library(whl=...)``), which Databricks installs on every node of the run's cluster, all
purpose or jobs compute, before the job starts; a library that fails to install fails the run with
Databricks' own message naming it.

Everything checkable here is checked before anything is submitted: a requirement that is not valid
PEP 508, or a wheel that does not exist, fails naming it.

Where a requirement that cannot be installed fails: on all-purpose compute the create task installs
the libraries on the new cluster (``libraries/install``) and waits for ``libraries/cluster-status``
to report them INSTALLED, so a FAILED one fails the create naming it (:func:`library_failures`).
Jobs compute has no cluster before the run, so nothing can be installed at create: the create task
checks the declaration, and an uninstallable requirement fails the run at its start, named in
Databricks' own message. The declaration is read by importing the
model module, which imports its heavy dependencies inside its loader (see ``spark_jobs.models.base``),
so the Airflow worker never needs torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from databricks.sdk.service import compute

from airflow_spark_triton.backends.databricks.user_code import user_code_wheel
from airflow_spark_triton.backends.model_dependencies import model_dependencies
from airflow_spark_triton.errors import BackendConfigError
from spark_jobs.models.huggingface import HF_SCHEME
from spark_jobs.models.mlflow_pyfunc import is_mlflow_reference

if TYPE_CHECKING:
    from airflow_spark_triton.hooks.databricks_gpu import DatabricksGpuHook


def wheel_remote_path(local: Path, artifact_root: str) -> str:
    """Content-addressed, like the package wheel: an unchanged wheel is uploaded once, a new one never
    overwrites a file a running cluster may still read. The file name is kept because pip parses it."""
    digest = hashlib.sha256(local.read_bytes()).hexdigest()[:16]
    return f"{artifact_root.rstrip('/')}/artifacts/models/{digest}/{local.name}"


def model_libraries(
    hook: DatabricksGpuHook, reference: str, version: str | None = None
) -> list[compute.Library]:
    """The task libraries that install a model's dependencies; local wheels are uploaded first. An
    MLflow model's are its ``requirements.txt`` at ``version`` (the pinned one; default: what an
    alias names now), read from the workspace's registry, with the versions the model pins."""
    from airflow_spark_triton.backends.databricks.model_registry import DatabricksModelRegistry

    try:
        registry = DatabricksModelRegistry(hook, hook.mlflow_registry_uri)
    except ValueError as exc:
        raise BackendConfigError(str(exc)) from exc
    deps = model_dependencies(reference, registry=registry, version=version)
    libraries = [compute.Library(pypi=compute.PythonPyPiLibrary(package=r)) for r in deps.requirements]
    wheels = list(deps.wheels)
    if ":" in reference and not reference.startswith(HF_SCHEME) and not is_mlflow_reference(reference):
        shipped = user_code_wheel(reference)  # the user's own module: its package as a wheel
        if shipped is not None:
            wheels.append(str(shipped))
    for wheel in wheels:
        if wheel.startswith("/Volumes/"):
            if not hook.file_exists(wheel):
                raise BackendConfigError(f"model {reference!r} declares wheel {wheel}, which does not exist")
            libraries.append(compute.Library(whl=wheel))
            continue
        local = Path(wheel).expanduser()
        if not local.is_file() or local.suffix != ".whl":
            raise BackendConfigError(
                f"model {reference!r} declares wheel {wheel!r}, which is not a local .whl file or a "
                "/Volumes/ path"
            )
        remote = wheel_remote_path(local, hook.artifact_root)
        hook.upload_file(local, remote)
        libraries.append(compute.Library(whl=remote))
    return libraries


#: ``libraries/cluster-status`` states of a library still on its way (Databricks moves each through
#: PENDING, RESOLVING, INSTALLING to INSTALLED or FAILED; a not-running cluster keeps them PENDING).
UNSETTLED_LIBRARY_STATES = frozenset({"PENDING", "RESOLVING", "INSTALLING"})


def install_body(cluster_id: str, libraries: list[compute.Library]) -> dict[str, Any]:
    """The ``libraries/install`` body (the SDK's ``LibrariesAPI.install`` arguments)."""
    return {"cluster_id": cluster_id, "libraries": [library.as_dict() for library in libraries]}


def library_label(library: dict[str, Any]) -> str:
    """``pypi sentence-transformers>=3`` or ``whl /Volumes/...``: how an error names a library."""
    parsed = compute.Library.from_dict(library)
    if parsed.pypi:
        return f"pypi {parsed.pypi.package}"
    for kind in ("whl", "jar", "egg", "requirements"):
        if getattr(parsed, kind, None):
            return f"{kind} {getattr(parsed, kind)}"
    return json.dumps(library, sort_keys=True)


def library_failures(statuses: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """``(unsettled, failed)`` of a ``library_statuses`` list: labels still installing, and one line
    per FAILED library naming it with Databricks' message."""
    unsettled, failed = [], []
    for raw in statuses:
        status = compute.LibraryFullStatus.from_dict(raw)
        label = library_label(raw.get("library") or {})
        state = status.status.value if status.status else "PENDING"
        if state in UNSETTLED_LIBRARY_STATES:
            unsettled.append(f"{label} ({state})")
        elif state == "FAILED":
            message = " ".join(" ".join(status.messages or []).split()) or "no message"
            failed.append(f"{label}: {message[:1500]}")
    return unsettled, failed
