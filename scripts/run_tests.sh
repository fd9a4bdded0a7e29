#!/usr/bin/env bash
# Set up .venv (see setup_env.sh) and run the test suite against the installed package, offline.
#   bash scripts/run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
# vLLM in its own environment (.venv-vllm) for the vllm and api backend tests; KINJECT_SKIP_VLLM=1 skips
# them (they are then reported as skipped, with the reason). Both environments are set up at once: on a
# fresh machine most of the time is downloads, which overlap.
if [ "${KINJECT_SKIP_VLLM:-0}" = "0" ]; then
  vllm_log=$(mktemp)
  bash scripts/setup_vllm_env.sh >"$vllm_log" 2>&1 &
  vllm_setup=$!
fi
bash scripts/setup_env.sh
if [ -n "${vllm_setup:-}" ]; then
  if ! wait "$vllm_setup"; then
    cat "$vllm_log" >&2
    echo "scripts/setup_vllm_env.sh failed (log above); KINJECT_SKIP_VLLM=1 runs the tests without vLLM" >&2
    exit 1
  fi
  tail -n 1 "$vllm_log"
  rm -f "$vllm_log"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
# The console script, not `python -m pytest`: the latter puts the source tree first on sys.path,
# and the tests are meant to exercise the installed wheel (its task YAMLs and presets).
exec .venv/bin/pytest "$@"
