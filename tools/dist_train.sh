#!/usr/bin/env bash
# Distributed training with torchrun, as mmdet's tools/dist_train.sh:
#   bash tools/dist_train.sh CONFIG GPUS [train.py args]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT. Without a GPU, GPUS CPU processes run
# DDP over gloo (handy for debugging and CI).
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 CONFIG GPUS [args]" >&2; exit 2; fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
source "$(dirname "$0")/_python.sh"
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
