#!/usr/bin/env bash
# GPU readiness check: OAML IR-50 fp16 AMP training (batch 128), a one-process NCCL
# DDP run through tools/dist_train.sh, the QAConv matcher against its reference
# evaluator and the IJB-C-scale QAConv row; results in OUT/gpu_check.{md,json}.
# Usage:
#   tools/misc/gpu_check.sh [--out work_dirs/gpu_check] [--iters 50] [--steps ...]
#   tools/misc/gpu_check.sh --dry-run --out /tmp/gpu_check   # CPU, tiny sizes (CI)
# What each figure means: docs/benchmarks.md, "GPU check".
set -euo pipefail
DIR="$(cd "$(dirname "$0")" && pwd)"
PYTHON=${PYTHON:-python}
PYTHONPATH="$DIR/../..${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" "$DIR/gpu_check.py" "$@"
