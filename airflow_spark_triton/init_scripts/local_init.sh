#!/usr/bin/env bash
# Node check of the local backend, run before each Spark worker starts (as Databricks runs a
# cluster init script on every node). It fails cluster creation early, with one clear line,
# instead of letting the batch-inference job die later on an executor with an ImportError.
#
# Set by LocalSparkHook: SPARK_TRITON_CLUSTER_ID, SPARK_TRITON_WORKER_INDEX,
# SPARK_TRITON_WORKER_DIR, SPARK_TRITON_PYTHON, and SPARK_TRITON_SPARK_VERSION (the version of
# the Spark distribution the workers run, which the interpreter's pyspark must match); and, when
# the cluster spec names a served model, SPARK_TRITON_MODEL_REQUIREMENTS (a JSON list of its PEP 508
# requirements): each must be installed in the interpreter at a matching version, or the node fails
# with one line naming it. Nothing is installed here: the nodes share the Airflow worker's interpreter.
set -euo pipefail

fail() {
    echo "local_init.sh (cluster ${SPARK_TRITON_CLUSTER_ID:-?}, worker ${SPARK_TRITON_WORKER_INDEX:-?}): $*" >&2
    exit 1
}

for var in SPARK_TRITON_CLUSTER_ID SPARK_TRITON_WORKER_INDEX SPARK_TRITON_WORKER_DIR SPARK_TRITON_PYTHON; do
    [[ -n "${!var:-}" ]] || fail "environment variable $var is not set (run by LocalSparkHook only)"
done

PYTHON="$SPARK_TRITON_PYTHON"
command -v "$PYTHON" >/dev/null 2>&1 || fail "interpreter '$PYTHON' (connection extra 'python') not found"
mkdir -p "$SPARK_TRITON_WORKER_DIR" || fail "cannot create worker dir $SPARK_TRITON_WORKER_DIR"

# The served model's declared requirements (checked first: a missing one is the likelier failure
# and the cheaper check). importlib.metadata + packaging, as pip itself decides "satisfied".
if [[ -n "${SPARK_TRITON_MODEL_REQUIREMENTS:-}" ]]; then
    if ! problem="$("$PYTHON" - 2>&1 >/dev/null <<'PY'
import json
import os
import sys
from importlib import metadata

try:
    from packaging.requirements import InvalidRequirement, Requirement
except ImportError as exc:
    sys.exit(f"cannot check the model's requirements: packaging is not importable in {sys.executable} ({exc})")
try:
    declared = json.loads(os.environ["SPARK_TRITON_MODEL_REQUIREMENTS"])
except ValueError as exc:
    sys.exit(f"SPARK_TRITON_MODEL_REQUIREMENTS is not a JSON list of requirements: {exc}")
problems = []
for text in declared:
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        problems.append(f"{text!r} is not a valid PEP 508 requirement ({exc})")
        continue
    if requirement.marker is not None and not requirement.marker.evaluate():
        continue  # not for this interpreter or platform
    # MLflow writes mlflow==<version> into a model's requirements even when it was logged with
    # mlflow-skinny: either distribution satisfies it.
    canonical = requirement.name.lower().replace("_", "-")
    names = ("mlflow", "mlflow-skinny") if canonical in ("mlflow", "mlflow-skinny") else (requirement.name,)
    installed = {}
    for name in names:
        try:
            installed[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if not installed:
        problems.append(f"{text} is not installed")
        continue
    if not any(requirement.specifier.contains(v, prereleases=True) for v in installed.values()):
        found = ", ".join(f"{name} {version}" for name, version in installed.items())
        problems.append(f"{text} is not satisfied by the installed {found}")
if problems:
    sys.exit(f"model requirement not met in {sys.executable}: " + "; ".join(problems))
PY
)"; then
        fail "${problem//$'\n'/ }"
    fi
fi

# Prints "<pyspark version> <libpython path>" on success, one error line on stderr otherwise.
if ! report="$("$PYTHON" - <<'PY'
import importlib
import os
import sys
import sysconfig

missing = []
for name in ("pyspark", "pytriton", "pytriton.triton", "deltalake", "spark_jobs"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # any import failure makes the node unusable for the job
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
if missing:
    sys.exit(f"{sys.executable} cannot import: " + "; ".join(missing))

import pyspark

expected = os.environ.get("SPARK_TRITON_SPARK_VERSION")
if expected and pyspark.__version__ != expected:
    sys.exit(
        f"pyspark {pyspark.__version__} in {sys.executable} does not match the cluster's "
        f"Spark {expected}: executors would fail to talk to the JVM"
    )
libpython = os.path.join(sysconfig.get_config_var("LIBDIR") or "", sysconfig.get_config_var("LDLIBRARY") or "")
print(pyspark.__version__, libpython)
PY
)"; then
    fail "the job's interpreter is not usable (see the line above)"
fi

read -r pyspark_version libpython <<<"$report"
if [[ ! -e "$libpython" ]]; then
    # Not fatal: a static interpreter works for Spark, only PyTriton's Python backend needs it.
    echo "local_init.sh: warning: $libpython not found; PyTriton's Python backend stub may fail" >&2
fi

marker="$SPARK_TRITON_WORKER_DIR/spark_triton_init.ok"
{
    echo "cluster_id=$SPARK_TRITON_CLUSTER_ID"
    echo "worker_index=$SPARK_TRITON_WORKER_INDEX"
    echo "python=$PYTHON"
    echo "pyspark=$pyspark_version"
    echo "libpython=$libpython"
    echo "checked_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$marker.tmp"
mv "$marker.tmp" "$marker"
echo "local_init.sh: worker $SPARK_TRITON_WORKER_INDEX of $SPARK_TRITON_CLUSTER_ID ok (pyspark $pyspark_version)"
