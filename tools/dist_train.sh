#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG NUM_PROCS [train.py args...]
# One process per GPU with NCCL; on a machine without CUDA, NUM_PROCS CPU processes
# with gloo (OAMLRunner creates the process group).
set -euo pipefail
CONFIG=$1
NPROCS=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
DIR="$(cd "$(dirname "$0")" && pwd)"
# glibc malloc thresholds (oaml_mm/utils/malloc_tuning.py): freed activations stay in
# the heap instead of being unmapped and page-faulted in again every step. Values the
# caller set are kept; OAML_MALLOC_TUNING=0 leaves them unset.
if [ "${OAML_MALLOC_TUNING:-1}" != 0 ]; then
    export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-1073741824}
    export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-1073741824}
fi
# The interpreter: $PYTHON if set, else the repository's .venv (make install), else
# python3; no activated venv needed. Killing this script (even with kill -9) stops the
# ranks: torchrun replaces this shell (exec) and each rank asks the kernel to end it
# when torchrun dies (oaml_mm.utils.exit_with_launcher).
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$DIR/../.venv/bin/python" ]; then
        PYTHON="$DIR/../.venv/bin/python"
    else
        PYTHON=python3
    fi
fi
PYTHONPATH="$DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROCS" \
    --master_port="$PORT" \
    "$DIR/train.py" "$CONFIG" --launcher pytorch "$@"
