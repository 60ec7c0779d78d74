#!/usr/bin/env bash
# Training on a Slurm cluster (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS: see _srun.sh):
#   [GPUS=16] bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
set -euo pipefail
if [ $# -lt 4 ]; then echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [args]" >&2; exit 2; fi
exec bash "$(dirname "$0")/_srun.sh" "$1" "$2" train.py "$3" --work-dir="$4" "${@:5}"
