"""The emulator's model registries: Unity Catalog models, the workspace's MLflow registry and runs, DBFS.

What the Databricks backend's Airflow side calls to pin a ``models:/`` alias and read a model's files
(``airflow_spark_triton.backends.databricks.model_registry``):

- Unity Catalog (databricks-sdk ``catalog.ModelVersionsAPI``): ``GET /api/2.1/unity-catalog/models/
  {full_name}/aliases/{alias}``, ``.../versions/{version}``, ``.../versions``; a version's files
  through the Files API at ``/Models/<catalog>/<schema>/<model>/<version>/...``;
- the workspace registry and tracking (MLflow's REST API; databricks-sdk ``ml.ModelRegistryAPI`` /
  ``ml.ExperimentsAPI`` where they have the call): ``registered-models/alias``,
  ``model-versions/get``, ``registered-models/get-latest-versions``,
  ``model-versions/get-download-uri``, ``runs/get``; files through ``dbfs/read``
  (databricks-sdk ``files.DbfsAPI.read``).

Answers are shaped as those classes read them (``catalog.ModelVersionInfo``, ``ml.ModelVersion``,
``ml.Run``); a missing model, version, alias or file answers 404 ``RESOURCE_DOES_NOT_EXIST``.
"""

from __future__ import annotations

import base64
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from databricks.sdk.service import catalog, files, ml

from tests.databricks_emulator import validation
from tests.databricks_emulator.errors import ApiError

UC_MODELS = "2.1/unity-catalog/models/"


def _missing(what: str) -> ApiError:
    return ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"{what} does not exist.")


@dataclass
class _Model:
    versions: dict[int, dict[str, bytes]] = field(default_factory=dict)  # version -> {file: bytes}
    aliases: dict[str, int] = field(default_factory=dict)
    created: dict[int, int] = field(default_factory=dict)


class Registries:
    """Both registries' models, and the DBFS files their artifacts live in."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.uc: dict[str, _Model] = {}
        self.workspace: dict[str, _Model] = {}
        self.runs: dict[str, str] = {}  # run id -> artifact_uri (dbfs:/...)
        self.dbfs: dict[str, bytes] = {}

    # -- seeding (tests) ---------------------------------------------------------------------------

    def add_version(self, registry: str, name: str, version: int, model_files: dict[str, bytes]) -> None:
        with self.lock:
            models = self.uc if registry == "databricks-uc" else self.workspace
            model = models.setdefault(name, _Model())
            model.versions[version] = dict(model_files)
            model.created[version] = int(time.time() * 1000)
            if registry != "databricks-uc":  # the workspace registry keeps a version's files in DBFS
                for file, data in model_files.items():
                    self.dbfs[f"{self._ws_root(name, version)}/{file}"] = data

    def set_alias(self, registry: str, name: str, alias: str, version: int) -> None:
        with self.lock:
            (self.uc if registry == "databricks-uc" else self.workspace)[name].aliases[alias] = version

    def add_run(self, run_id: str, path: str, model_files: dict[str, bytes]) -> None:
        with self.lock:
            root = f"/databricks/mlflow-tracking/1/{run_id}/artifacts"
            self.runs[run_id] = f"dbfs:{root}"
            for file, data in model_files.items():
                self.dbfs[f"{root}/{path}/{file}"] = data

    @staticmethod
    def _ws_root(name: str, version: int) -> str:
        return f"/databricks/mlflow-registry/{zlib.crc32(f'{name}/{version}'.encode())}/models/{name}"

    # -- answers -----------------------------------------------------------------------------------

    def _uc_info(self, full_name: str, version: int) -> dict[str, Any]:
        model = self.uc[full_name]
        info = {
            "model_name": full_name.rsplit(".", 1)[-1],
            "catalog_name": full_name.split(".")[0],
            "schema_name": full_name.split(".")[1],
            "version": version,
            "status": "READY",
            "storage_location": f"s3://uc-bucket/models/{full_name}/{version}",
            "created_at": model.created[version],
            "aliases": [
                {"alias_name": a, "version_num": v} for a, v in model.aliases.items() if v == version
            ],
        }
        validation.check_object(info, catalog.ModelVersionInfo, "response")
        return info

    def uc_call(self, endpoint: str, query: dict[str, list[str]]) -> dict[str, Any]:
        """``GET 2.1/unity-catalog/models/{full_name}/(aliases/{alias} | versions[/{version}])``."""
        rest = endpoint.removeprefix(UC_MODELS)
        full_name, _, tail = rest.partition("/")
        full_name = unquote(full_name)
        kind, _, value = tail.partition("/")
        with self.lock:
            model = self.uc.get(full_name)
            if model is None:
                raise _missing(f"Registered model '{full_name}'")
            if kind == "aliases" and value:
                body = {
                    "full_name": full_name,
                    "alias": unquote(value),
                    **validation.query_to_body(catalog.ModelVersionsAPI.get_by_alias, query),
                }
                validation.check_call(catalog.ModelVersionsAPI.get_by_alias, body)
                if body["alias"] not in model.aliases:
                    raise _missing(f"Alias '{body['alias']}' of model '{full_name}'")
                return self._uc_info(full_name, model.aliases[body["alias"]])
            if kind == "versions" and value:
                body = {
                    "full_name": full_name,
                    "version": int(value),
                    **validation.query_to_body(catalog.ModelVersionsAPI.get, query),
                }
                validation.check_call(catalog.ModelVersionsAPI.get, body)
                if body["version"] not in model.versions:
                    raise _missing(f"Version {value} of model '{full_name}'")
                return self._uc_info(full_name, body["version"])
            if kind == "versions":
                validation.query_to_body(catalog.ModelVersionsAPI.list, query)
                return {"model_versions": [self._uc_info(full_name, v) for v in sorted(model.versions)]}
        raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for 'GET /api/{endpoint}'")

    def model_file(self, remote: str) -> bytes:
        """The Files API's ``/Models/<catalog>/<schema>/<model>/<version>/<file>``."""
        parts = [p for p in remote.split("/") if p]
        if len(parts) < 6 or parts[0] != "Models" or not parts[4].isdigit() or ".." in parts:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid path {remote!r}")
        full_name, version, name = ".".join(parts[1:4]), int(parts[4]), "/".join(parts[5:])
        with self.lock:
            model = self.uc.get(full_name)
            found = None if model is None else model.versions.get(version, {}).get(name)
        if found is None:
            raise ApiError(404, "NOT_FOUND", f"The file being accessed is not found: {remote}")
        return found

    def _ws_version(self, name: str, version: int) -> dict[str, Any]:
        model = self.workspace[name]
        info = {
            "name": name,
            "version": str(version),
            "status": "READY",
            "current_stage": "None",
            "creation_timestamp": model.created[version],
            "source": f"dbfs:{self._ws_root(name, version)}",
        }
        validation.check_object(info, ml.ModelVersion, "response")
        return {**info, "aliases": [a for a, v in model.aliases.items() if v == version]}

    def mlflow_call(
        self, method: str, endpoint: str, query: dict[str, list[str]], body: dict[str, Any]
    ) -> dict[str, Any]:
        """The workspace registry's and tracking's calls (MLflow REST)."""
        params = {k: v[-1] for k, v in query.items()} if method == "GET" else body
        with self.lock:
            if endpoint == "2.0/mlflow/runs/get":
                validation.check_call(ml.ExperimentsAPI.get_run, params)
                if params["run_id"] not in self.runs:
                    raise _missing(f"Run '{params['run_id']}'")
                run = {
                    "info": {
                        "run_id": params["run_id"],
                        "artifact_uri": self.runs[params["run_id"]],
                        "status": "FINISHED",
                    }
                }
                validation.check_object(run, ml.Run, "response")
                return {"run": run}
            name = params.get("name")
            if not isinstance(name, str) or not name:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'name'.")
            model = self.workspace.get(name)
            if model is None:
                raise _missing(f"Registered Model with name={name}")
            if endpoint == "2.0/mlflow/registered-models/alias":
                alias = params.get("alias")
                if not alias:
                    raise ApiError(
                        400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'alias'."
                    )
                if alias not in model.aliases:
                    raise _missing(f"Registered model alias {alias}")
                return {"model_version": self._ws_version(name, model.aliases[alias])}
            if endpoint == "2.0/mlflow/registered-models/get-latest-versions":
                validation.check_call(ml.ModelRegistryAPI.get_latest_versions, params)
                return {"model_versions": [self._ws_version(name, max(model.versions))]}
            version = str(params.get("version") or "")
            if not version.isdigit():
                raise ApiError(
                    400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'version'."
                )
            if int(version) not in model.versions:
                raise _missing(f"Model Version (name={name}, version={version})")
            if endpoint == "2.0/mlflow/model-versions/get":
                validation.check_call(ml.ModelRegistryAPI.get_model_version, params)
                return {"model_version": self._ws_version(name, int(version))}
            if endpoint == "2.0/mlflow/model-versions/get-download-uri":
                validation.check_call(ml.ModelRegistryAPI.get_model_version_download_uri, params)
                return {"artifact_uri": f"dbfs:{self._ws_root(name, int(version))}"}
        raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} /api/{endpoint}'")

    def dbfs_read(self, query: dict[str, list[str]]) -> dict[str, Any]:
        body = validation.query_to_body(files.DbfsAPI.read, query)
        validation.check_call(files.DbfsAPI.read, body)
        with self.lock:
            data = self.dbfs.get(body["path"])
        if data is None:
            raise _missing(f"No file or directory exists on path {body['path']}.")
        offset, length = int(body.get("offset") or 0), int(body.get("length") or 512 * 1024)
        if length > 1024 * 1024:
            raise ApiError(400, "MAX_READ_SIZE_EXCEEDED", "Cannot read more than 1MB per call.")
        chunk = data[offset : offset + length]
        return {"bytes_read": len(chunk), "data": base64.b64encode(chunk).decode()}


MLFLOW_ENDPOINTS = {
    ("GET", "2.0/mlflow/registered-models/alias"),
    ("GET", "2.0/mlflow/model-versions/get"),
    ("POST", "2.0/mlflow/registered-models/get-latest-versions"),
    ("GET", "2.0/mlflow/model-versions/get-download-uri"),
    ("GET", "2.0/mlflow/runs/get"),
}
