"""MLflow models in a Databricks workspace, reached from Airflow through the connection's hook.

Two registries, chosen by the connection extra ``mlflow_registry_uri``: ``databricks-uc`` (the
default: Unity Catalog models, ``models:/<catalog>.<schema>.<model>@<alias>``) and ``databricks``
(the workspace's MLflow registry, ``models:/<name>@<alias>``). The Airflow side needs no MLflow and
holds the connection's host and token only inside the hook (its requests' headers), never in an
environment variable, a file or the job:

- an alias is pinned with the registry's own API (Unity Catalog's ``ModelVersionsAPI.get_by_alias``,
  MLflow's ``registered-models/alias``) to the version the job then loads;
- the model's ``MLmodel``, ``requirements.txt`` and ``python_env.yaml`` are read for the pre-flight
  checks and the run's libraries: a Unity Catalog version through the Files API
  (``/Models/<catalog>/<schema>/<model>/<version>/...``), a workspace registry version or a run's
  model through DBFS (``dbfs/read`` of its ``dbfs:/databricks/...`` artifact location), a model
  directory on a volume through the Files API.

What travels to the job is the reference, the pinned version and the registry URI
(``databricks-uc`` or ``databricks``), none of them a credential: the job's driver downloads the
version with the identity Databricks gives every job run, as any Databricks job reads MLflow, and
ships it to the nodes (:mod:`spark_jobs.model_files`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from airflow_spark_triton.hooks.databricks_gpu import volume_of
from spark_jobs.models.mlflow_pyfunc import MlflowReference

if TYPE_CHECKING:
    from airflow_spark_triton.hooks.databricks_gpu import DatabricksGpuHook

UC_REGISTRY = "databricks-uc"
WORKSPACE_REGISTRY = "databricks"
REGISTRY_URIS = (UC_REGISTRY, WORKSPACE_REGISTRY)
#: The connection extra that picks the registry.
REGISTRY_EXTRA = "mlflow_registry_uri"


class DatabricksModelRegistry:
    """A :class:`~spark_jobs.models.mlflow_registry.ModelRegistry` of one workspace, through its hook."""

    def __init__(self, hook: DatabricksGpuHook, registry_uri: str | None = None) -> None:
        self.hook = hook
        self.registry_uri = registry_uri or UC_REGISTRY
        if self.registry_uri not in REGISTRY_URIS:
            raise ValueError(
                f"Databricks connection extra {REGISTRY_EXTRA!r} is {self.registry_uri!r}; it is "
                f"{UC_REGISTRY!r} (Unity Catalog models) or {WORKSPACE_REGISTRY!r} (the workspace registry)"
            )

    @property
    def is_unity_catalog(self) -> bool:
        return self.registry_uri == UC_REGISTRY

    def _uc_name(self, reference: MlflowReference) -> str:
        name = str(reference.name)
        if len(name.split(".")) != 3:
            raise ValueError(
                f"model reference {reference.reference!r}: a Unity Catalog model is named "
                "<catalog>.<schema>.<model> (this connection's registry is databricks-uc; set its "
                f"extra {REGISTRY_EXTRA!r} to 'databricks' for the workspace registry)"
            )
        return name

    def pin(self, reference: MlflowReference) -> MlflowReference:
        if not reference.is_registered:
            return reference
        name = self._uc_name(reference) if self.is_unity_catalog else str(reference.name)
        alias = reference.alias if reference.alias != "latest" else None
        if self.is_unity_catalog:
            if reference.alias == "latest":
                versions = self.hook.list_uc_model_versions(name)
                found = max(versions, key=lambda v: int(v["version"]), default=None)
            else:
                found = self.hook.get_uc_model_version(name, reference.version, alias)
        elif reference.alias == "latest":
            found = self.hook.get_workspace_latest_version(name)
        else:
            found = self.hook.get_workspace_model_version(name, reference.version, alias)
        if found is None:
            what = f"alias {reference.alias!r}" if reference.alias else f"version {reference.version}"
            registry = "Unity Catalog" if self.is_unity_catalog else "the workspace model registry"
            raise ValueError(
                f"model reference {reference.reference!r}: {registry} has no {what} of model {name!r}, "
                "or this connection's identity cannot see it"
                + (
                    " (it needs EXECUTE on the model and USE on its catalog and schema)"
                    if self.is_unity_catalog
                    else ""
                )
            )
        return reference.pinned(str(found["version"]))

    def reader(self, reference: MlflowReference) -> Callable[[str], bytes | None] | None:
        if reference.directory is not None:
            directory = reference.directory.rstrip("/")
            if volume_of(directory) is not None:
                return lambda name: self.hook.read_file(f"{directory}/{name}")
            if directory.startswith(("dbfs:", "/dbfs/")):
                root = directory.removeprefix("/dbfs")
                return lambda name: self.hook.read_dbfs_file(f"{root}/{name}")
            return None  # a node's own disk, the workspace: the job checks it
        if reference.run_id is not None:
            run = self.hook.get_mlflow_run(reference.run_id)
            if run is None:
                raise ValueError(
                    f"model reference {reference.reference!r}: no MLflow run {reference.run_id!r}"
                )
            root = f"{run['info']['artifact_uri'].rstrip('/')}/{reference.path}"
        elif self.is_unity_catalog:
            base = f"/Models/{self._uc_name(reference).replace('.', '/')}/{reference.version}"
            return lambda name: self.hook.read_file(f"{base}/{name}")
        else:
            root = self.hook.get_model_version_download_uri(str(reference.name), str(reference.version)) or ""
        if not root.startswith("dbfs:"):
            return None  # artifacts outside DBFS (a cloud bucket of the user's): the job reads them
        return lambda name: self.hook.read_dbfs_file(f"{root}/{name}")
