#!/usr/bin/env bash
# Distributed evaluation with torchrun (environment as tools/dist_train.sh):
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]
set -euo pipefail
if [ $# -lt 3 ]; then echo "usage: $0 CONFIG CHECKPOINT GPUS [args]" >&2; exit 2; fi
exec bash "$(dirname "$0")/_torchrun.sh" "$3" test.py "$1" "$2" "${@:4}"
