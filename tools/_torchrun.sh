#!/usr/bin/env bash
# The common part of dist_train.sh and dist_test.sh: torchrun GPUS processes of tools/SCRIPT
# with --launcher pytorch.
#   bash tools/_torchrun.sh GPUS SCRIPT [SCRIPT args]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT. Without a GPU, GPUS CPU processes run
# DDP over gloo (handy for debugging and CI).
set -euo pipefail
GPUS=$1
SCRIPT=$2
: "${NNODES:=1}" "${NODE_RANK:=0}" "${PORT:=29500}" "${MASTER_ADDR:=127.0.0.1}"  # defaults
source "$(dirname "$0")/_python.sh"
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/$SCRIPT" \
    --launcher pytorch "${@:3}"
