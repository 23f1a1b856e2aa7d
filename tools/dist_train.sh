#!/usr/bin/env bash
# Train on GPUS processes of this node (one per GPU) with torchrun.
#   tools/dist_train.sh CONFIG GPUS [train.py arguments ...]
# Several nodes: run it on every node with the same NNODES, MASTER_ADDR
# (node 0's address) and PORT, and NODE_RANK 0 .. NNODES-1; RDZV_BACKEND=c10d
# for torchrun's rendezvous (tools/dist_env.sh lists the variables).
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [train.py arguments ...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/dist_env.sh
source "$TOOLS_DIR/dist_env.sh" "$GPUS"

PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run "${TORCHRUN_ARGS[@]}" \
    "$TOOLS_DIR/train.py" "$CONFIG" --launcher pytorch "$@"
