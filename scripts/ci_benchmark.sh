#!/usr/bin/env bash
# The nightly benchmark job: a small embedded grid (configs/ci.yaml: current events, base / RAG /
# FT-reg / FT-par / FT-reg+RAG, 20 questions, ~5 min on 2 CPU cores), its report, and a check of its
# key numbers against benchmarks/expectations/ci.json.
#   bash scripts/ci_benchmark.sh [--tolerance 0.05]
# Same seed on the same machine kind gives the same numbers: the committed tolerance is 0. Other
# hardware (another CPU, a GPU, other BLAS) may move a log-likelihood across a tie: pass --tolerance.
# After an intended change of the numbers, refresh the file with
#   .venv/bin/kinject report runs/ci --write-expectations benchmarks/expectations/ci.json
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
start=$(date +%s)
.venv/bin/kinject grid configs/ci.yaml --out runs/ci
.venv/bin/kinject report runs/ci --out runs/ci/report --expect benchmarks/expectations/ci.json "$@"
echo "ci benchmark: $(( $(date +%s) - start )) s; report in runs/ci/report/report.md"
