#!/usr/bin/env bash
# Train on a Slurm cluster, one task per GPU.
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args ...]
# Environment: NNODES, GPUS_PER_NODE, GPUS (total, default 8), PORT,
# CPUS_PER_TASK (tools/slurm_env.sh), SRUN_ARGS (extra srun options,
# word-split).
set -euo pipefail

if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py args ...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
shift 4
SRUN_ARGS=${SRUN_ARGS:-}
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/slurm_env.sh
source "$TOOLS_DIR/slurm_env.sh"

# SRUN_ARGS is split into words on purpose.
# shellcheck disable=SC2086
PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    "${SRUN_NODE_ARGS[@]}" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "$PYTHON" -u "$TOOLS_DIR/train.py" "$CONFIG" --work-dir="$WORK_DIR" \
    --launcher=slurm "$@"
