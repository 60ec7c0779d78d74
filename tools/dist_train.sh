#!/usr/bin/env bash
# Distributed training with torchrun, as mmdet's tools/dist_train.sh:
#   bash tools/dist_train.sh CONFIG GPUS [train.py args]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT. Without a GPU, GPUS CPU processes run
# DDP over gloo (handy for debugging and CI).
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 CONFIG GPUS [args]" >&2; exit 2; fi
exec bash "$(dirname "$0")/_torchrun.sh" "$2" train.py "$1" "${@:3}"
