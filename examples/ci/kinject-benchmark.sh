#!/usr/bin/env bash
# The shell steps of examples/ci/kinject-benchmark.yml (a GitHub Actions workflow), one command each, so that they
# run, and are tested, outside Actions too (tests/test_compare.py):
#   bash examples/ci/kinject-benchmark.sh setup                     # .venv: the pinned CPU torch first, then kinject
#   bash examples/ci/kinject-benchmark.sh grid [CONFIG] [RUN]       # the nightly grid (configs/ci.yaml -> runs/nightly)
#   bash examples/ci/kinject-benchmark.sh fetch-baseline DIR        # the last successful main run's artifact (gh CLI)
#   bash examples/ci/kinject-benchmark.sh compare BASELINE RUN      # the gate: exit 1 on a significant drop
# compare appends its Markdown table to $GITHUB_STEP_SUMMARY (the job's summary page) when that is set. With no
# baseline yet (the first run, or an expired artifact) it passes and says so. The baseline is the report.json of
# `kinject report` (every cell's per-question results; a few kB), which the workflow uploads from main.
set -euo pipefail
cd "$(dirname "$0")/../.."
KINJECT=${KINJECT:-.venv/bin/kinject}
summary=${GITHUB_STEP_SUMMARY:-/dev/null}

step=${1:-}
shift || true
case "$step" in
  setup)
    bash scripts/setup_env.sh
    ;;
  grid)
    config=${1:-configs/ci.yaml}
    run=${2:-runs/nightly}
    export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}
    # cells already in RUN (the cached run folder) are reused when their inputs are unchanged: they are keyed by
    # content (model, data, settings, kinject version)
    "$KINJECT" grid "$config" --out "$run"
    "$KINJECT" report "$run" --out "$run/report"
    ;;
  fetch-baseline)
    dir=${1:?fetch-baseline DIR}
    mkdir -p "$dir"
    if ! command -v gh >/dev/null 2>&1 || [ -z "${GITHUB_REPOSITORY:-}" ]; then
      echo "fetch-baseline: no gh CLI or GITHUB_REPOSITORY; no baseline fetched"
      exit 0
    fi
    run_id=$(gh run list --repo "$GITHUB_REPOSITORY" --workflow kinject-benchmark.yml --branch main --status success \
             --limit 1 --json databaseId --jq '.[0].databaseId // empty')
    if [ -z "$run_id" ] || ! gh run download "$run_id" --repo "$GITHUB_REPOSITORY" --name kinject-baseline \
                                --dir "$dir"; then
      echo "fetch-baseline: no kinject-baseline artifact from a successful main run yet"
    fi
    ;;
  compare)
    baseline=${1:?compare BASELINE RUN}
    run=${2:?compare BASELINE RUN}
    [ -d "$baseline" ] && [ -f "$baseline/report.json" ] && baseline="$baseline/report.json"
    if [ ! -e "$baseline" ] || { [ -d "$baseline" ] && [ ! -f "$baseline/grid.json" ]; }; then
      printf '## kinject compare\n\nNo baseline yet (%s): this run becomes the first one.\n' "$baseline" | tee -a "$summary"
      exit 0
    fi
    set +e
    "$KINJECT" compare "$baseline" "$run" --summary "$summary" --json "$run/compare.json"
    code=$?
    set -e
    case $code in
      0) echo "kinject compare: no significant drop" ;;
      1) echo "kinject compare: a significant drop (the table above; $run/compare.json)" >&2 ;;
      *) echo "kinject compare: unusable input (exit $code)" >&2 ;;
    esac
    exit $code
    ;;
  *)
    echo "usage: $0 setup | grid [CONFIG] [RUN] | fetch-baseline DIR | compare BASELINE RUN" >&2
    exit 2
    ;;
esac
