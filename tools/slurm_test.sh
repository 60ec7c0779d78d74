#!/usr/bin/env bash
# Evaluation on a Slurm cluster (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS: see _srun.sh):
#   [GPUS=8] bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]
set -euo pipefail
if [ $# -lt 4 ]; then echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [args]" >&2; exit 2; fi
exec bash "$(dirname "$0")/_srun.sh" "$1" "$2" test.py "$3" "$4" "${@:5}"
