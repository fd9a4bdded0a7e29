#!/usr/bin/env bash
# Set up .venv (see setup_env.sh) and run the test suite against the installed package, offline.
#   bash scripts/run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# vLLM in its own environment (.venv-vllm) for the vllm and api backend tests; KINJECT_SKIP_VLLM=1 skips
# them (they are then reported as skipped, with the reason).
if [ "${KINJECT_SKIP_VLLM:-0}" = "0" ]; then
  bash scripts/setup_vllm_env.sh
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
# The console script, not `python -m pytest`: the latter puts the source tree first on sys.path,
# and the tests are meant to exercise the installed wheel (its task YAMLs and presets).
exec .venv/bin/pytest "$@"
