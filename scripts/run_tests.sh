#!/usr/bin/env bash
# Set up .venv (see setup_env.sh) and run the test suite against the installed package, offline.
#   bash scripts/run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
# The console script, not `python -m pytest`: the latter puts the source tree first on sys.path,
# and the tests are meant to exercise the installed wheel (its task YAMLs and presets).
exec .venv/bin/pytest "$@"
