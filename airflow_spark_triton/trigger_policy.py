"""What a DAG run's conf may set: trigger params are data, never code, unless the deployment says so.

In Airflow, "may trigger a DAG with a conf" is a much weaker permission than "may deploy code". Yet
the settings of this package's operators reach code: a ``model`` reference is imported on the
worker and on every node, an ``init_script`` is read on the worker, uploaded and run on every node,
Spark settings such as ``spark.driver.extraJavaOptions`` or ``spark.jars`` load code into the JVMs,
environment variables such as ``PYTHONPATH`` or ``LD_PRELOAD`` into every process, and a
``conn_id`` picks any connection of the deployment (its credentials, its workspace).

So a setting that comes from the trigger (see :mod:`airflow_spark_triton.operators.trigger_params`,
which finds them: what the DAG author wrote in code, with the DAG's own param defaults, is never
restricted) must match an allow-list of the ``[spark_triton]`` section of Airflow's config, which
only whoever deploys Airflow can change:

=============================  ===========================================================  ===========
option                         what a trigger param may set                                  default
=============================  ===========================================================  ===========
``allowed_models``             model references (globs; ``hf:`` and MLflow ones too)         the package's
                                                                                             models (no
                                                                                             ``hf:``)
``allowed_init_script_dirs``   directories an ``init_script`` may come from                  none (the
                                                                                             package's own
                                                                                             scripts only)
``allowed_spark_conf``         Spark setting keys (globs)                                    tuning keys
``allowed_spark_env_vars``     environment variable names (globs)                            none
``allowed_conn_ids``           connection ids (globs)                                        none
``allowed_cluster_settings``   other cluster settings, by name (globs)                       size, node
                                                                                             type, compute
``allowed_model_options``      ``model_options`` keys (globs)                                ``*``
=============================  ===========================================================  ===========

Keys that carry code (JVM options, class paths, jars, Python paths, plugin and listener classes,
``PYTHON*``/``LD_*`` variables, ``trust_remote_code``, option keys naming a path, file, module or
class) and model references whose path climbs out with ``..`` are refused even where a wildcard
would match them: only an allow-list entry that names the
exact key admits one. Every check is on the value as text, before anything is imported, read,
created or sent, and a refusal names the setting, the conf keys that set it and the config option
that would allow it. This module has no Airflow import at the top: its defaults also feed the
provider's config registration (:mod:`airflow_spark_triton.provider_info`).

Not guarded here: the inference operator's output settings, which choose among fixed behaviours of
the job. Its ``where`` is the one that is an expression; the job checks it where it is used, on Spark's
own parse tree, to be a predicate over the input's columns with built-in data functions only (no
subqueries, reflection, file functions or UDFs: :mod:`spark_jobs.row_filter`), so a trigger can only
narrow the rows of an input the DAG already reads.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from airflow_spark_triton.config_section import CONFIG_SECTION

PACKAGE_INIT_SCRIPTS = Path(__file__).resolve().parent / "init_scripts"

# What a trigger may set when the deployment says nothing: data, never code.
DEFAULTS: dict[str, str] = {
    "allowed_models": "spark_jobs.models.*",
    "allowed_init_script_dirs": "",
    "allowed_spark_conf": ",".join(
        (
            "spark.sql.shuffle.partitions",
            "spark.sql.adaptive.*",
            "spark.sql.files.maxPartitionBytes",
            "spark.sql.files.openCostInBytes",
            "spark.sql.execution.arrow.maxRecordsPerBatch",
            "spark.default.parallelism",
            "spark.task.maxFailures",
            "spark.executor.memory",
            "spark.executor.memoryOverhead",
            "spark.driver.memory",
            "spark.driver.maxResultSize",
            "spark.network.timeout",
        )
    ),
    "allowed_spark_env_vars": "",
    "allowed_conn_ids": "",
    "allowed_cluster_settings": ",".join(
        (
            "num_workers",
            "executor_cores",
            "gpus_per_executor",
            "tasks_per_gpu",
            "worker_memory",
            "node_type_id",
            "driver_node_type_id",
            "spark_version",
            "autotermination_minutes",
            "autoscale",
            "cluster_name",
            "ready_timeout_s",
            "compute",
        )
    ),
    "allowed_model_options": "*",
}

DESCRIPTIONS: dict[str, str] = {
    "allowed_models": "Model references a DAG run's conf may name (comma-separated globs, matched "
    "against the whole reference, e.g. 'spark_jobs.models.*', 'hf:text2text-generation:/Volumes/ml/"
    "models/*' or 'models:/team_*' for MLflow registry models; hf: and MLflow references (models:/, "
    "runs:/, a model directory) need an entry, and one with a '..' path component an exact one). The "
    "DAG's own default is always allowed.",
    "allowed_init_script_dirs": "Directories a DAG run's conf may take a cluster 'init_script' from "
    "(comma-separated; local directories or remote prefixes such as /Volumes/main/ops/scripts). The "
    "package's own init scripts are always allowed.",
    "allowed_spark_conf": "Spark setting keys a DAG run's conf may set (comma-separated globs). Keys "
    "that carry code (extraJavaOptions, class paths, jars, files, Python settings, plugins, listeners, "
    "extensions, class names) need an entry naming the exact key.",
    "allowed_spark_env_vars": "Environment variable names a DAG run's conf may set on the cluster "
    "(comma-separated globs). PYTHON*, LD_*, JAVA/JDK options, CLASSPATH, PATH and SPARK_*_OPTS need an "
    "entry naming the exact variable.",
    "allowed_conn_ids": "Connection ids a DAG run's conf may pick (comma-separated globs). The DAG's own "
    "default connection is always allowed.",
    "allowed_cluster_settings": "Other cluster settings (GpuClusterSpec field names, comma-separated "
    "globs) a DAG run's conf may set; e.g. add policy_id or instance_pool_id. spark_conf, "
    "spark_env_vars, init_script and model have their own options.",
    "allowed_model_options": "model_options keys a DAG run's conf may set (comma-separated globs). "
    "trust_remote_code, credentials (token, *_token) and keys naming a path, file, directory, module, "
    "class, URL or URI need an entry naming the exact key.",
}

# Setting keys that put code into a process; a glob never admits them, an exact entry does.
CODE_SPARK_CONF = (
    "*extraJavaOptions*",
    "*defaultJavaOptions*",
    "*extraClassPath*",
    "*extraLibraryPath*",
    "*ClassPath*",
    "*classpath*",
    "*class*",
    "*Class*",
    "spark.jars*",
    "*.jars",
    "*.jars.*",
    "spark.files*",
    "spark.archives*",
    "spark.submit.*",
    "spark.pyspark.*",
    "spark.python.*",
    "spark.plugins*",
    "*.plugins",
    "spark.extraListeners",
    "*Listeners",
    "spark.sql.extensions",
    "spark.sql.catalog.*",
    "spark.executorEnv.*",
    "spark.yarn.appMasterEnv.*",
    "spark.kubernetes.*",
    "spark.redaction.*",
    "spark.*.log.*",
)
CODE_ENV_VARS = (
    "PYTHON*",
    "PYSPARK_*",
    "LD_*",
    "DYLD_*",
    "JAVA_*",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "SPARK_*",
    "PATH",
    "BASH_ENV",
    "ENV",
    "PERL5*",
    "HOME",
    "HADOOP_*",
    "TMPDIR",
)
CODE_MODEL_OPTIONS = (
    "trust_remote_code",
    # credentials (token, hf_token, use_auth_token); not generation options (max_new_tokens,
    # clean_up_tokenization_spaces), which a text model's conf sets as data
    "token",
    "*_token",
    "*path*",
    "*_dir",
    "*dirs",
    "*file*",
    "*module*",
    "*class*",
    "*url*",
    "*uri*",
)
# Model references that leave the directory a glob names (``hf:<task>:/models/../home``): only an
# entry naming the whole reference admits one.
CODE_MODEL_REFERENCES = ("*/../*", "*/..", "*:../*", "*:..")
# Cluster settings with checks of their own (the rest go through allowed_cluster_settings).
OWN_CHECK = ("model", "init_script", "spark_conf", "spark_env_vars")


class TriggerParamRefused(ValueError):
    """A trigger param set something the deployment does not allow; the message names it."""


def _split(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.replace("\n", ",").split(",") if item.strip())


def _matches(value: str, patterns: Iterable[str], code_patterns: Iterable[str] = ()) -> bool:
    """``value`` matches an allow-list entry; a code-bearing value only an entry naming it exactly."""
    patterns = tuple(patterns)
    if value in patterns:
        return True
    if any(fnmatchcase(value, code) for code in code_patterns):
        return False
    return any(fnmatchcase(value, pattern) for pattern in patterns)


def _carries_code(value: str, code_patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(value, code) for code in code_patterns)


@dataclass(frozen=True)
class Refusal:
    """One setting a trigger may not set: what, which value, and which config option would allow it."""

    setting: str
    value: Any
    option: str
    allowed: tuple[str, ...]
    carries_code: bool = False
    path: tuple[str, ...] = ()  # where in the operator field's value (dict keys), for finding who set it

    def describe(self) -> str:
        env_name = f"AIRFLOW__{CONFIG_SECTION.upper()}__{self.option.upper()}"
        allowed = ", ".join(self.allowed) or "nothing"
        how = (
            f"it carries code, so only an entry naming it exactly in [{CONFIG_SECTION}] {self.option} allows it"
            if self.carries_code
            else f"[{CONFIG_SECTION}] {self.option} does not allow it"
        )
        return f"{self.setting} = {self.value!r}: {how} ({env_name}; allowed now: {allowed})"


@dataclass(frozen=True)
class TriggerPolicy:
    """The allow-lists, read once per check from the ``[spark_triton]`` config section."""

    allowed_models: tuple[str, ...]
    allowed_init_script_dirs: tuple[str, ...]
    allowed_spark_conf: tuple[str, ...]
    allowed_spark_env_vars: tuple[str, ...]
    allowed_conn_ids: tuple[str, ...]
    allowed_cluster_settings: tuple[str, ...]
    allowed_model_options: tuple[str, ...]

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> TriggerPolicy:
        return cls(**{name: _split(options.get(name, DEFAULTS[name])) for name in DEFAULTS})

    @classmethod
    def from_airflow_config(cls) -> TriggerPolicy:
        """The deployment's allow-lists (``[spark_triton]`` in airflow.cfg or ``AIRFLOW__SPARK_TRITON__*``)."""
        from airflow.sdk.configuration import conf

        return cls.from_options(
            {name: conf.get(CONFIG_SECTION, name, fallback=DEFAULTS[name]) for name in DEFAULTS}
        )

    # -- one check per kind of setting ------------------------------------------------------------

    def check_model(self, setting: str, reference: Any) -> list[Refusal]:
        """A Python reference imports a module; an ``hf:`` one loads weights from the Hub (a hub id) or
        reads a directory on the nodes (a path); an MLflow one (``models:/``, ``runs:/``, a model
        directory) unpickles the model's Python on every node: none matches the default, so each
        needs an entry (``hf:text2text-generation:/Volumes/ml/models/*``, ``hf:*:my-org/*``,
        ``models:/team_*``, ``models:/main.ml.*@champion``)."""
        if _matches(str(reference), self.allowed_models, CODE_MODEL_REFERENCES):
            return []
        escapes = _carries_code(str(reference), CODE_MODEL_REFERENCES)
        return [Refusal(setting, reference, "allowed_models", self.allowed_models, escapes)]

    def check_conn_id(self, setting: str, conn_id: Any) -> list[Refusal]:
        if _matches(str(conn_id), self.allowed_conn_ids):
            return []
        return [Refusal(setting, conn_id, "allowed_conn_ids", self.allowed_conn_ids)]

    def check_model_options(
        self, setting: str, keys: Iterable[str], values: Mapping[str, Any]
    ) -> list[Refusal]:
        return [
            Refusal(
                f"{setting}[{key!r}]",
                values.get(key),
                "allowed_model_options",
                self.allowed_model_options,
                _carries_code(key, CODE_MODEL_OPTIONS),
                (key,),
            )
            for key in keys
            if not _matches(key, self.allowed_model_options, CODE_MODEL_OPTIONS)
        ]

    def check_init_script(self, setting: str, path: Any) -> list[Refusal]:
        if path in (None, ""):
            return []
        dirs = (str(PACKAGE_INIT_SCRIPTS), *self.allowed_init_script_dirs)
        if any(_under(str(path), directory) for directory in dirs):
            return []
        return [Refusal(setting, path, "allowed_init_script_dirs", self.allowed_init_script_dirs)]

    def check_cluster_spec(
        self, setting: str, spec: Mapping[str, Any], authored: Mapping[str, Any]
    ) -> list[Refusal]:
        """Each cluster setting whose value differs from the DAG author's, by its own check."""
        refusals: list[Refusal] = []
        for key in changed_keys(spec, authored):
            name, value = f"{setting}[{key!r}]", spec.get(key)
            if key == "model":
                found = self.check_model(name, value) if value else []
            elif key == "init_script":
                found = self.check_init_script(name, value)
            elif key in ("spark_conf", "spark_env_vars"):
                found = self._check_keys(name, key, _mapping(value), _mapping(authored.get(key)))
            elif not _matches(key, self.allowed_cluster_settings):
                found = [Refusal(name, value, "allowed_cluster_settings", self.allowed_cluster_settings)]
            else:
                found = []
            refusals += [dataclasses.replace(refusal, path=(key, *refusal.path)) for refusal in found]
        return refusals

    def _check_keys(
        self, setting: str, kind: str, values: Mapping[str, Any], authored: Mapping[str, Any]
    ) -> list[Refusal]:
        option, code = (
            ("allowed_spark_conf", CODE_SPARK_CONF)
            if kind == "spark_conf"
            else ("allowed_spark_env_vars", CODE_ENV_VARS)
        )
        allowed: tuple[str, ...] = getattr(self, option)
        return [
            Refusal(f"{setting}[{key!r}]", values.get(key), option, allowed, _carries_code(key, code), (key,))
            for key in changed_keys(values, authored)
            if key in values and not _matches(key, allowed, code)
        ]


def changed_keys(values: Mapping[str, Any], authored: Mapping[str, Any]) -> list[str]:
    """Keys whose value differs between the run's rendering and the DAG author's (added ones too)."""
    missing = object()
    return sorted(
        str(key)
        for key in set(values) | set(authored)
        if values.get(key, missing) != authored.get(key, missing)
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _under(path: str, directory: str) -> bool:
    """``path`` lies inside ``directory``, decided on the names alone (nothing is opened or read).

    Local paths are resolved first (``..`` and symlinks cannot leave the directory); remote ones
    (``/Volumes/...``, ``s3://...``) are normalised and may not contain ``..``.
    """
    if "://" in path or "://" in directory:
        scheme, _, rest = path.partition("://")
        dir_scheme, _, dir_rest = directory.partition("://")
        if scheme != dir_scheme or ".." in rest.split("/"):
            return False
        return posixpath.normpath(rest).startswith(posixpath.normpath(dir_rest).rstrip("/") + "/")
    if path.startswith(("/Volumes/", "/Workspace/", "dbfs:")) or directory.startswith(
        ("/Volumes/", "/Workspace/")
    ):
        if ".." in path.split("/"):
            return False
        return posixpath.normpath(path).startswith(posixpath.normpath(directory).rstrip("/") + "/")
    resolved, root = (
        os.path.realpath(os.path.expanduser(path)),
        os.path.realpath(os.path.expanduser(directory)),
    )
    return os.path.commonpath([resolved, root]) == root and resolved != root
