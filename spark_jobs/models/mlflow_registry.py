"""Reaching MLflow models through the MLflow client: pin an alias, read a model's files, download it.

The tracking and registry URIs are MLflow's own: ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``
(a ``sqlite:///`` store, a tracking server), or those given here. Used where MLflow is installed: on
the Airflow side of the local and spark-submit backends (pin and pre-flight read), and on the job's
driver, which downloads the pinned model once for every node. (The Databricks backend's Airflow side
reaches its workspace's registries through its hook instead, with no MLflow installed:
``airflow_spark_triton.backends.databricks.model_registry``.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from spark_jobs.models.mlflow_pyfunc import MlflowReference, directory_reader, parse_reference

log = logging.getLogger(__name__)
# MLflow draws a progress bar per download, which would redraw into task and driver logs.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class ModelRegistry(Protocol):
    """Where the Airflow side pins ``models:/`` references and reads a model's files before a cluster."""

    def pin(self, reference: MlflowReference) -> MlflowReference:
        """The reference with its version set: an alias (or ``latest``) resolved now, a version checked."""

    def reader(self, reference: MlflowReference) -> Callable[[str], bytes | None] | None:
        """``read(name)`` of the model's files (None where absent); None when they cannot be read here."""


def _client(registry_uri: str | None = None, tracking_uri: str | None = None):
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise ValueError(
            "MLflow model references need the mlflow package where they are resolved: "
            "pip install 'airflow-spark-triton[mlflow]'"
        ) from exc
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


class MlflowClientRegistry:
    """The :class:`ModelRegistry` of the MLflow client (``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``)."""

    def __init__(self, registry_uri: str | None = None, tracking_uri: str | None = None) -> None:
        self.registry_uri, self.tracking_uri = registry_uri, tracking_uri

    def pin(self, reference: MlflowReference) -> MlflowReference:
        if not reference.is_registered:
            return reference
        from mlflow.exceptions import MlflowException

        client = _client(self.registry_uri, self.tracking_uri)
        try:
            if reference.alias == "latest":
                versions = client.search_model_versions(f"name='{reference.name}'")
                if not versions:
                    raise ValueError(f"model reference {reference.reference!r}: the model has no versions")
                return reference.pinned(str(max(int(v.version) for v in versions)))
            if reference.alias is not None:
                found = client.get_model_version_by_alias(reference.name, reference.alias)
            else:
                found = client.get_model_version(reference.name, str(reference.version))
        except MlflowException as exc:
            raise ValueError(f"model reference {reference.reference!r}: {exc.message}") from exc
        return reference.pinned(str(found.version))

    def reader(self, reference: MlflowReference) -> Callable[[str], bytes | None]:
        if reference.directory is not None:
            return directory_reader(reference.directory)
        from mlflow.exceptions import MlflowException
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        with _tracking(self.registry_uri, self.tracking_uri):
            repository = get_artifact_repository(reference.uri)

        def read(name: str) -> bytes | None:
            with tempfile.TemporaryDirectory(prefix="spark-triton-mlflow-") as tmp:
                try:
                    with _tracking(self.registry_uri, self.tracking_uri):
                        local = repository.download_artifacts(name, dst_path=tmp)
                except (MlflowException, OSError):
                    return None
                path = Path(local)
                return path.read_bytes() if path.is_file() else None

        return read


@contextlib.contextmanager
def _tracking(registry_uri: str | None, tracking_uri: str | None) -> Iterator[None]:
    """The MLflow client's process-wide URIs set for one call, where given (the artifact
    repositories read them, not a client's)."""
    import mlflow

    before = (mlflow.get_registry_uri(), mlflow.get_tracking_uri())
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    if registry_uri:
        mlflow.set_registry_uri(registry_uri)
    try:
        yield
    finally:
        if registry_uri:
            mlflow.set_registry_uri(before[0])
        if tracking_uri:
            mlflow.set_tracking_uri(before[1])


def download_model(reference: str, destination: Path, registry_uri: str | None = None) -> Path:
    """The whole model of a (pinned) reference, downloaded under ``destination``: the driver does this
    once per run and ships the directory to every node. A directory reference is used where it is."""
    parsed = parse_reference(reference)
    if parsed.directory is not None:
        return Path(parsed.directory).expanduser()
    import mlflow

    destination.mkdir(parents=True, exist_ok=True)
    with _tracking(registry_uri, None):
        local = mlflow.artifacts.download_artifacts(artifact_uri=parsed.uri, dst_path=str(destination))
    log.info("Downloaded model %s to %s", parsed.uri, local)
    return Path(local)
