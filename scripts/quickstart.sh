#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded defaults (SmolLM2-135M-Instruct and all-MiniLM-L6-v2,
# offline, nothing downloaded): `kinject demo`, the paper's six arms on a generated fictional world.
#   bash scripts/quickstart.sh [kinject demo options]     e.g. --quick (~3 min) or --n-paraphrases 0,1,2,5,10
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1
.venv/bin/kinject demo --work runs/demo "$@"
