#!/usr/bin/env bash
# Sourced by tools/dist_train.sh and tools/dist_test.sh: the torchrun
# arguments of one node from the environment, in the array TORCHRUN_ARGS.
#   NNODES        nodes in the job (default 1)
#   NODE_RANK     this node's rank, 0 .. NNODES-1 (default 0)
#   MASTER_ADDR   address of node 0 (default 127.0.0.1; required when
#                 NNODES > 1)
#   PORT          a free port on node 0, the same on every node (default 29500)
#   RDZV_BACKEND  static (default: node ranks are NODE_RANK, node 0 listens
#                 on MASTER_ADDR:PORT) or c10d (torchrun's rendezvous at
#                 MASTER_ADDR:PORT; node ranks follow the order of arrival)
#   RDZV_ID       job id of a c10d rendezvous (default decq)
#   PYTHON        the interpreter (default: python, else python3, on PATH)
# $1 is the number of processes (GPUs) of this node.
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
RDZV_BACKEND=${RDZV_BACKEND:-static}
if [ "$NNODES" -gt 1 ] && [ -z "${MASTER_ADDR:-}" ]; then
    echo "NNODES=$NNODES: set MASTER_ADDR to the address of node 0 (the" \
        "same on every node, with the same PORT)" >&2
    exit 2
fi
if [ "$NODE_RANK" -ge "$NNODES" ] || [ "$NODE_RANK" -lt 0 ]; then
    echo "NODE_RANK=$NODE_RANK: must be 0 .. NNODES-1 (NNODES=$NNODES)" >&2
    exit 2
fi
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
TORCHRUN_ARGS=(--nnodes="$NNODES" --nproc-per-node="$1")
case "$RDZV_BACKEND" in
    static)
        TORCHRUN_ARGS+=(--node-rank="$NODE_RANK" --master-addr="$MASTER_ADDR"
            --master-port="$PORT") ;;
    c10d)
        TORCHRUN_ARGS+=(--node-rank="$NODE_RANK" --rdzv-backend=c10d
            --rdzv-endpoint="$MASTER_ADDR:$PORT"
            --rdzv-id="${RDZV_ID:-decq}") ;;
    *)
        echo "RDZV_BACKEND=$RDZV_BACKEND: use static or c10d" >&2
        exit 2 ;;
esac
PYTHON=${PYTHON:-$(command -v python || command -v python3 || echo python)}
