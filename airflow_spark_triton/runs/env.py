"""The environment of every process the local and spark-submit backends start: an allow-list, not a copy.

An Airflow worker's environment holds secrets: connections and variables (``AIRFLOW_CONN_*``,
``AIRFLOW_VAR_*``), its own configuration (``AIRFLOW__*__SECRET_KEY``, ``*_CMD``, ``SQL_ALCHEMY_CONN``,
``FERNET_KEY``), cloud and API tokens. A Spark daemon, a driver or a run supervisor needs none of
them, and whatever it gets is readable in ``/proc/<pid>/environ``, inherited by every executor and
Triton server, and, for a run, recorded in ``command.json``. So every such process starts from
:func:`run_environment`:

- only variables on the allow-list below pass (system basics, Python, Java, Spark, Hugging Face /
  torch / BLAS, CUDA, Hadoop/YARN/Kubernetes client settings, MLflow's tracking and registry URIs,
  this provider's own ``SPARK_TRITON_*``);
- of those, any whose name or value looks like a secret is dropped all the same (:func:`looks_secret`);
- ``additions`` (paths and settings the backend computes, the cluster spec's ``spark_env_vars``)
  are added last and unfiltered: whoever writes them into a spec asked for them on the cluster.

A job that needs a credential on its executors (e.g. ``HF_TOKEN`` for a gated model) therefore gets
it only through the cluster spec's ``spark_env_vars``, never by accident.

Imports nothing beyond the standard library.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

# Exact names that pass.
ALLOWED_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "TMPDIR",
        "TEMP",
        "TMP",
        "HOSTNAME",
        "LD_LIBRARY_PATH",
        "VIRTUAL_ENV",
        "CONDA_PREFIX",
        "CONDA_DEFAULT_ENV",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_RUNTIME_DIR",
        "JAVA_HOME",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "KUBECONFIG",
        "KRB5_CONFIG",
        "KRB5CCNAME",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "TOKENIZERS_PARALLELISM",
        "SENTENCE_TRANSFORMERS_HOME",
        "COVERAGE_PROCESS_START",
        # The Airflow installation (paths only): the spark-submit runner imports Airflow.
        "AIRFLOW_HOME",
        "AIRFLOW_CONFIG",
        "AIRFLOW_SPARK_TRITON_HOME",
        # MLflow's own settings of where models:/ references live (the job's driver downloads the
        # pinned version); a URI with credentials in it is dropped like any other (looks_secret).
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
    }
)

# Name prefixes that pass (subject to the secret check).
ALLOWED_PREFIXES = (
    "LC_",
    "PYTHON",  # PYTHONPATH, PYTHONHOME, PYTHONUNBUFFERED, ...
    "SPARK_",  # SPARK_HOME, SPARK_CONF_DIR, ... and this provider's SPARK_TRITON_*
    "PYSPARK_",
    "HADOOP_",
    "YARN_",
    "HF_",
    "HUGGINGFACE_",
    "TRANSFORMERS_",
    "TORCH",  # TORCH_HOME, TORCHINDUCTOR_*, ...
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "NUMEXPR_",
    "CUDA_",
    "NVIDIA_",
    "NCCL_",
    "TRITON_",
    "PYTRITON_",
)

# With ``airflow_config=True`` (a process that imports Airflow), the non-secret part of its configuration.
AIRFLOW_CONFIG_PREFIX = "AIRFLOW__"

# A name is secret-looking if one of its ``_``-separated words (plural or not) is one of these...
SECRET_WORDS = frozenset(
    {
        "AUTH",
        "APIKEY",
        "CMD",  # Airflow's ``*_cmd`` options run a command that prints a secret
        "CONN",
        "CREDENTIAL",
        "KEY",
        "PASS",
        "PASSPHRASE",
        "PASSWD",
        "PASSWORD",
        "PAT",
        "PRIVATE",
        "SECRET",
        "TOKEN",
    }
)
# ...or it contains one of these anywhere (``DBPASSWORD``, ``MYSECRETS``).
SECRET_FRAGMENTS = ("PASSWORD", "PASSWD", "SECRET", "CREDENTIAL", "APIKEY", "ACCESSKEY", "PRIVATEKEY")
# Well-known names that match the words above but hold no secret.
NOT_SECRET = frozenset({"HF_HUB_DISABLE_IMPLICIT_TOKEN", "TOKENIZERS_PARALLELISM"})

# A value is secret-looking if it embeds credentials: ``scheme://user:password@host`` or ``password=...``.
_URL_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:[^/\s@]+@")
_ASSIGNED_SECRET = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key)\s*[=:]\s*\S")


def looks_secret(name: str, value: str = "") -> bool:
    """Whether a variable's name or value looks like it carries a credential."""
    if name in NOT_SECRET:
        return False
    upper = name.upper()
    words = [word for word in upper.split("_") if word]
    if any(word in SECRET_WORDS or word.removesuffix("S") in SECRET_WORDS for word in words):
        return True
    if any(fragment in upper for fragment in SECRET_FRAGMENTS):
        return True
    return bool(_URL_CREDENTIALS.search(value) or _ASSIGNED_SECRET.search(value))


def is_allowed(name: str, *, airflow_config: bool = False) -> bool:
    """Whether a variable's name is on the allow-list (the secret check still applies)."""
    if name in ALLOWED_NAMES or name.startswith(ALLOWED_PREFIXES):
        return True
    return airflow_config and name.startswith(AIRFLOW_CONFIG_PREFIX)


def run_environment(
    additions: Mapping[str, object] | None = None,
    *,
    airflow_config: bool = False,
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for a cluster or run process: allow-listed, non-secret variables of ``source``
    (default ``os.environ``), then ``additions``.

    :param airflow_config: also pass the non-secret ``AIRFLOW__*`` options, for a process that imports
        Airflow (the spark-submit runner). ``AIRFLOW_CONN_*`` and ``AIRFLOW_VAR_*`` never pass.
    """
    environ = os.environ if source is None else source
    env = {
        name: value
        for name, value in environ.items()
        if is_allowed(name, airflow_config=airflow_config) and not looks_secret(name, value)
    }
    env.update({str(name): str(value) for name, value in (additions or {}).items()})
    return env
