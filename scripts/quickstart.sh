#!/usr/bin/env bash
# Set up .venv and run the main job on the embedded defaults (SmolLM2-135M-Instruct, offline):
# the base model on the cloze current-events task, through the stock `lm_eval` CLI.
#   bash scripts/quickstart.sh [CURRENT_EVENTS_DIR]     (default: ../shared/data/current_events_sample)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/current_events_sample}
if [ ! -f "$DATA/questions.jsonl" ]; then
  echo "quickstart: $DATA has no questions.jsonl; pass a current-events data folder as the first argument" >&2
  exit 2
fi
DATA=$(cd "$DATA" && pwd)
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1
.venv/bin/lm_eval --model kinject-rag --tasks current_events_cloze,current_events \
  --metadata "{\"current_events_dir\": \"$DATA\"}" --batch_size 8
