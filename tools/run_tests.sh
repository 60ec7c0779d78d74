#!/usr/bin/env bash
# The test command of the README: set up whatever is missing in both supported stacks, run
# the full suite on the pinned stack (.venv/), then the compatibility subset (pytest -m
# compat) on the oldest supported stack (.venv-oldest/: torch 2.1.2 + mmcv 2.1.0, the last
# official OpenMMLab wheel set). Each run names the other stack's interpreter
# (PVT_MM_CROSS_PYTHON), so checkpoints trained on one are evaluated on the other.
# Extra arguments go to both pytest runs, e.g. `bash tools/run_tests.sh -k checkpoint`;
# PVT_MM_STACKS=pinned (or oldest) runs one stack only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACKS="${PVT_MM_STACKS:-pinned oldest}"
for stack in $STACKS; do
  case "$stack" in pinned|oldest) ;; *) echo "PVT_MM_STACKS: unknown stack '$stack' (pinned, oldest)" >&2; exit 2;; esac
  PVT_MM_STACK=$stack bash "$ROOT/tools/setup_env.sh"
done
cd "$ROOT"
PINNED="$ROOT/.venv/bin/python"
OLDEST="$ROOT/.venv-oldest/bin/python"
status=0
if [[ " $STACKS " == *" pinned "* ]]; then
  echo "== pinned stack ($("$PINNED" -c 'import torch; print("torch", torch.__version__)')): full suite"
  cross=""; [[ " $STACKS " == *" oldest "* ]] && cross="$OLDEST"
  PVT_MM_CROSS_PYTHON="$cross" "$PINNED" -m pytest tests "$@" || status=$?
fi
if [[ " $STACKS " == *" oldest "* ]]; then
  echo "== oldest stack ($("$OLDEST" -c 'import torch; print("torch", torch.__version__)')): compatibility subset"
  cross=""; [[ " $STACKS " == *" pinned "* ]] && cross="$PINNED"
  PVT_MM_CROSS_PYTHON="$cross" "$OLDEST" -m pytest tests -m compat "$@" || status=$?
fi
exit $status
