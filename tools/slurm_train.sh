#!/usr/bin/env bash
# Usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] tools/slurm_train.sh \
#            PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args...]
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=${4:-}
[ $# -ge 4 ] && shift 4 || shift 3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
DIR="$(cd "$(dirname "$0")" && pwd)"
# glibc malloc thresholds (oaml_mm/utils/malloc_tuning.py): freed activations stay in
# the heap instead of being unmapped and page-faulted in again every step. Values the
# caller set are kept; OAML_MALLOC_TUNING=0 leaves them unset.
if [ "${OAML_MALLOC_TUNING:-1}" != 0 ]; then
    export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-1073741824}
    export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-1073741824}
fi
# The interpreter: $PYTHON if set, else the repository's .venv (make install), else
# python3; no activated venv needed. srun replaces this shell (exec), so killing the
# script is killing srun, which ends the job's tasks.
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$DIR/../.venv/bin/python" ]; then
        PYTHON="$DIR/../.venv/bin/python"
    else
        PYTHON=python3
    fi
fi
WORK_ARGS=()
[ -n "$WORK_DIR" ] && WORK_ARGS=(--work-dir "$WORK_DIR")
PYTHONPATH="$DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$DIR/train.py" "$CONFIG" "${WORK_ARGS[@]}" --launcher slurm "$@"
