#!/bin/bash
# Cluster-scoped init script of airflow-spark-triton: runs on the driver and every worker before
# Spark starts, so the job file, the executors and each node's Triton server import the same code.
#
# Installs the package wheel without its dependencies (they include Airflow, which a cluster must
# not get; the ML GPU runtime already has torch, pandas, pyarrow) and the pinned Triton
# prerequisites. The wheel path comes from the cluster's spark_env_vars (SPARK_TRITON_WHEEL),
# content-addressed, so a node can never install another version than the cluster was created for.
#
# Any failure exits non-zero with one "SPARK_TRITON_INIT_ERROR:" line on stderr; Databricks then
# terminates the cluster with INIT_SCRIPT_FAILURE and shows that stderr in the cluster events.
set -euo pipefail

LOG="${SPARK_TRITON_INIT_LOG:-/tmp/spark_triton_init.log}"
PYTRITON_VERSION="0.7.0"
PIP="${SPARK_TRITON_PIP:-/databricks/python/bin/pip}"
PYTHON="${SPARK_TRITON_PYTHON:-/databricks/python/bin/python}"

MESSAGE=""
LINE=""
fail() {
  MESSAGE="$*"
  exit 1
}

# Keep the original stderr for the one-line reason; everything else goes to the log.
exec 3>&2
exec >>"$LOG" 2>&1
trap 'LINE=$LINENO' ERR
trap 'rc=$?; if [ "$rc" -ne 0 ]; then
  REASON="SPARK_TRITON_INIT_ERROR: ${MESSAGE:-command on line ${LINE:-?} exited with $rc} (host $(hostname), log $LOG)"
  echo "$REASON"; echo "$REASON" >&3
  echo "last log lines:" >&3; tail -n 20 "$LOG" >&3
fi' EXIT

echo "$(date -u +%FT%TZ) spark-triton init on $(hostname) (driver: ${DB_IS_DRIVER:-unknown})"

if [ -z "${SPARK_TRITON_WHEEL:-}" ]; then
  fail "SPARK_TRITON_WHEEL is not set: the cluster's spark_env_vars must name the uploaded wheel"
fi
if [ ! -f "$SPARK_TRITON_WHEEL" ]; then
  fail "wheel $SPARK_TRITON_WHEEL is not readable from this node: was it uploaded, and may the cluster's user read the volume?"
fi
if [ ! -x "$PIP" ]; then
  fail "pip not found at $PIP: not a Databricks runtime with /databricks/python?"
fi
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L; then
  fail "no NVIDIA GPU on this node: use a GPU node type and a -gpu-ml- runtime for driver and workers"
fi

# PyTriton's Python backend stub loads libpython from the interpreter's LIBDIR.
LIBDIR="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')"
LDLIB="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LDLIBRARY") or "")')"
if [ -n "$LDLIB" ] && [ ! -e "$LIBDIR/$LDLIB" ] && ! ldconfig -p | grep -q "$LDLIB"; then
  fail "$LDLIB (needed by PyTriton's Python backend) is missing in $LIBDIR and the linker path"
fi

"$PIP" install --disable-pip-version-check --no-input --no-deps "$SPARK_TRITON_WHEEL" \
  || fail "pip could not install $SPARK_TRITON_WHEEL"
"$PIP" install --disable-pip-version-check --no-input "nvidia-pytriton==${PYTRITON_VERSION}" \
  || fail "pip could not install nvidia-pytriton==${PYTRITON_VERSION} (no PyPI access? mirror it or pre-install)"
"$PYTHON" -c 'import pytriton, spark_jobs.batch_inference' \
  || fail "the installed packages do not import; see $LOG"

mkdir -p "${SPARK_TRITON_STATE_DIR:-/local_disk0/spark_triton}"
echo "$(date -u +%FT%TZ) spark-triton init done"
