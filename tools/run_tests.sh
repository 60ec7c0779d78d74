#!/usr/bin/env bash
# The test command of the README: set up whatever is missing in .venv/, then run the suite.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -k checkpoint`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest tests "$@"
