"""A ``ServedModel`` of the user's own code reaches every Databricks node: no hand-built wheel.

A ``module:attribute`` model reference whose module is the user's (a file in the DAGs folder, a
package of theirs, installed or not) is imported on the Airflow worker, and must be importable on
the cluster too: on the driver (the job resolves the model) and in every node's Triton server. So
the backend packs the module's top-level package (or the single module file) into a wheel of its
own, built here without pip or setuptools, byte-reproducible (fixed zip times, sorted entries), and
named after its content: ``spark_triton_user_<package>-0+<digest>-py3-none-any.whl``. It is
uploaded content-addressed like the model's declared wheels (an unchanged module is uploaded once;
a changed one never overwrites a file a running cluster reads) and installed with them as a run
(and all-purpose cluster) library, so Databricks puts it on every node's ``sys.path``.

What is not shipped: this package's own modules (in the package wheel already), the standard
library, and compiled extension modules (declare those as the model's ``wheels``). The user code's
own dependencies are the model's ``requirements``, as for any model.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import re
import sys
import tempfile
import zipfile
from pathlib import Path

from airflow_spark_triton.errors import BackendConfigError

SHIPPED_WITH_THE_PACKAGE = ("airflow_spark_triton", "spark_jobs")
PREFIX = "spark_triton_user_"
MAX_BYTES = 64 * 1024 * 1024
WHEEL_CACHE = Path(tempfile.gettempdir()) / "airflow_spark_triton_wheels" / "user_code"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _files(top: str) -> list[tuple[str, Path]] | None:
    """``(path in the wheel, file)`` of the top-level module or package ``top``; None: not the user's."""
    if top in SHIPPED_WITH_THE_PACKAGE or top in sys.stdlib_module_names:
        return None
    spec = importlib.util.find_spec(top)
    if spec is None:
        return None
    if spec.submodule_search_locations:  # a package (a namespace package may have several roots)
        files = []
        for root in map(Path, spec.submodule_search_locations):
            files += [
                (f"{top}/{path.relative_to(root).as_posix()}", path)
                for path in sorted(root.rglob("*"))
                if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")
            ]
        return files
    origin = Path(spec.origin or "")
    if origin.suffix != ".py":
        return None  # built in, frozen or compiled: not source this backend can ship
    return [(origin.name, origin)]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def user_code_wheel(reference: str) -> Path | None:
    """The wheel that carries the user module of ``module:attribute`` ``reference``, built (once per
    content) under :data:`WHEEL_CACHE`; None when the module is not user code (see the module doc)."""
    module = reference.partition(":")[0]
    top = module.split(".")[0]
    files = _files(top)
    if not files:
        return None
    contents = [(name, path.read_bytes()) for name, path in files]
    size = sum(len(data) for _, data in contents)
    if size > MAX_BYTES:
        raise BackendConfigError(
            f"model {reference!r}: its package {top} holds {size // (1024 * 1024)} MB of files, too much "
            "to ship with every run; install it on the cluster (a wheel in the model's 'wheels')"
        )
    digest = hashlib.sha256()
    for name, data in contents:
        digest.update(name.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    version = f"0+{digest.hexdigest()[:16]}"
    distribution = PREFIX + re.sub(r"[^A-Za-z0-9]+", "_", top).lower()
    dist_info = f"{distribution}-{version}.dist-info"
    metadata = {
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
            f"Summary: {top}, shipped by airflow-spark-triton for model {reference}\n"
        ).encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: airflow-spark-triton\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    entries = [*contents, *metadata.items()]
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries)
    entries.append((f"{dist_info}/RECORD", (record + f"{dist_info}/RECORD,,\n").encode()))
    target = WHEEL_CACHE / digest.hexdigest()[:16] / f"{distribution}-{version}-py3-none-any.whl"
    if target.is_file():
        return target
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in entries:
            info = zipfile.ZipInfo(name, _ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    partial.write_bytes(buffer.getvalue())
    partial.replace(target)
    return target
