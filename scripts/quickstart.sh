#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded defaults (SmolLM2-135M-Instruct and all-MiniLM-L6-v2,
# offline, nothing downloaded): `kinject demo`, the paper's arms and mixed training on a generated fictional world.
#   bash scripts/quickstart.sh [kinject demo options]     e.g. --quick or --n-paraphrases 1,2,5,10
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1
# Forgetting is measured on MMLU anatomy when a local MMLU copy is at hand (the shared data beside the clone).
MMLU=${KINJECT_SHARED_DATA:-../shared/data}/mmlu
if [ -z "${KINJECT_MMLU_DIR:-}" ] && [ -d "$MMLU" ]; then export KINJECT_MMLU_DIR="$(cd "$MMLU" && pwd)"; fi
.venv/bin/kinject demo --out runs/demo "$@"
