#!/usr/bin/env bash
# The common part of slurm_train.sh and slurm_test.sh: srun tools/SCRIPT with
# --launcher=slurm on a Slurm partition.
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] [PORT=... | MASTER_PORT=...] \
#     bash tools/_srun.sh PARTITION JOB_NAME SCRIPT [SCRIPT args]
# MASTER_PORT (or PORT) picks the rendezvous port. By default it is derived from the Slurm
# job id (or this shell's pid), so two jobs sharing a node do not both take torch's 29500.
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
SCRIPT=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
# Exported before srun so every task (srun passes the environment on) agrees on one port;
# left unset, mmengine's slurm launcher would fall back to 29500 or a per-node free port.
MASTER_PORT=${MASTER_PORT:-${PORT:-$((20000 + ${SLURM_JOB_ID:-$$} % 20000))}}
export MASTER_PORT
source "$(dirname "$0")/_python.sh"
# shellcheck disable=SC2086
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "$PYTHON" -u "$(dirname "$0")/$SCRIPT" --launcher=slurm "${@:4}"
