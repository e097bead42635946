"""OpenLineage datasets of an inference run: the input table in, the output and rejects tables out.

Uses the OpenLineage provider's classes when ``apache-airflow-providers-openlineage`` is installed;
otherwise returns the same shape (``inputs``/``outputs`` of ``namespace``/``name`` datasets) from
small local dataclasses, so the operator works, and can be tested, without it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow_spark_triton.assets import DATABRICKS_SCHEME, table_uri, unity_catalog_name
from airflow_spark_triton.assets import workspace_host as host_of


@dataclass(frozen=True)
class Dataset:
    namespace: str
    name: str
    facets: dict[str, Any] = field(default_factory=dict)


@dataclass
class OperatorLineage:
    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    run_facets: dict[str, Any] = field(default_factory=dict)
    job_facets: dict[str, Any] = field(default_factory=dict)


def openlineage_available() -> bool:
    try:
        import openlineage.client  # noqa: F401
        from airflow.providers.openlineage.extractors import OperatorLineage  # noqa: F401
    except ImportError:
        return False
    return True


def dataset_name(table: str, workspace_host: str | None = None) -> tuple[str, str]:
    """OpenLineage naming: ``file`` + absolute path locally; ``scheme://authority`` + path otherwise.

    A Unity Catalog name is named as the Databricks provider names it: namespace
    ``databricks://<workspace host>`` (plain ``databricks`` when the host is unknown, as the provider
    does too) and name ``catalog.schema.table``.
    """
    uc = unity_catalog_name(table)
    if uc is not None:
        host = host_of(workspace_host) if workspace_host else ""
        return (f"{DATABRICKS_SCHEME}://{host}" if host else DATABRICKS_SCHEME), ".".join(uc)
    parts = urlsplit(table_uri(table))
    if parts.scheme == "file":
        return "file", unquote(parts.path)
    if parts.netloc:
        return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/") or "/"
    return parts.scheme, parts.path


#: The run facet naming the model a run served and its registry version (``model_version``).
MODEL_FACET = "spark_triton_model"


def _model_facet(model: str, model_version: str | None) -> Any:
    """The :data:`MODEL_FACET` run facet: OpenLineage's ``RunFacet`` when installed, else a dict."""
    if not openlineage_available():
        return {"model": model, "model_version": model_version}
    import attr
    from openlineage.client.facet_v2 import RunFacet

    @attr.define
    class SparkTritonModelRunFacet(RunFacet):
        model: str
        model_version: str | None = None

    return SparkTritonModelRunFacet(model=model, model_version=model_version)


def inference_lineage(
    input_table: str,
    output_tables: list[str],
    workspace_host: str | None = None,
    *,
    model: str | None = None,
    model_version: str | None = None,
) -> Any:
    """An ``OperatorLineage`` (the provider's when installed) for one run; ``workspace_host`` names
    the Databricks workspace of Unity Catalog tables; ``model`` and its registry ``model_version``
    are the :data:`MODEL_FACET` run facet."""
    run_facets = {MODEL_FACET: _model_facet(model, model_version)} if model else {}
    if openlineage_available():
        from airflow.providers.common.compat.openlineage.facet import Dataset as OLDataset
        from airflow.providers.openlineage.extractors import OperatorLineage as OLOperatorLineage

        dataset_cls: Any = OLDataset
        lineage_cls: Any = OLOperatorLineage
    else:
        dataset_cls, lineage_cls = Dataset, OperatorLineage
    make = lambda table: dataset_cls(*dataset_name(table, workspace_host))  # noqa: E731
    with contextlib.suppress(TypeError):
        return lineage_cls(
            inputs=[make(input_table)], outputs=[make(t) for t in output_tables], run_facets=run_facets
        )
    return OperatorLineage(inputs=[Dataset(*dataset_name(input_table, workspace_host))],
                           outputs=[Dataset(*dataset_name(t, workspace_host)) for t in output_tables],
                           run_facets=run_facets)  # fmt: skip
