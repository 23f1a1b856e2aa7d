#!/usr/bin/env bash
# Sourced by tools/slurm_train.sh and tools/slurm_test.sh: the srun
# arguments of the job from the environment, in the array SRUN_NODE_ARGS,
# with the same variables as tools/dist_train.sh where Slurm needs them.
#   NNODES         nodes (default: as many as GPUS needs at GPUS_PER_NODE)
#   GPUS_PER_NODE  processes (GPUs) per node (default min(GPUS, 8), or 8
#                  with NNODES)
#   GPUS           processes in all (default 8, or NNODES x GPUS_PER_NODE)
#   PORT           the rendezvous port on the first node (MASTER_PORT;
#                  default 29500); MASTER_ADDR, when set, replaces the
#                  first node's address
#   CPUS_PER_TASK  default 5
#   PYTHON         the interpreter (default: python, else python3, on PATH)
if [ -n "${NNODES:-}" ]; then
    GPUS_PER_NODE=${GPUS_PER_NODE:-8}
    GPUS=${GPUS:-$((NNODES * GPUS_PER_NODE))}
    if [ "$GPUS" -ne $((NNODES * GPUS_PER_NODE)) ]; then
        echo "GPUS=$GPUS is not NNODES x GPUS_PER_NODE" \
            "($NNODES x $GPUS_PER_NODE): set two of them" >&2
        exit 2
    fi
else
    GPUS=${GPUS:-8}
    GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
fi
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
export MASTER_PORT=${PORT:-${MASTER_PORT:-29500}}
SRUN_NODE_ARGS=(--gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS"
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK")
if [ -n "${NNODES:-}" ]; then
    SRUN_NODE_ARGS+=(--nodes="$NNODES")
fi
PYTHON=${PYTHON:-$(command -v python || command -v python3 || echo python)}
