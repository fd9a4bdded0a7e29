"""Session set-up and fixtures: the real embedded model, loaded once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from kinject_testing import MMLU_DIR, REPO, SHARED_DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# vLLM's CPU backend keeps one core for its scheduler by default: on a 2-core CI machine that halves the speed of
# every vLLM test (measured: 123 vs 252 prompt tokens/s). The tests' vLLM processes inherit this.
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def pytest_configure(config):
    import lm_eval_kinject

    if Path(lm_eval_kinject.__file__).resolve().is_relative_to(REPO / "lm_eval_kinject"):
        raise pytest.UsageError("tests run against the installed package: use scripts/run_tests.sh "
                                "(or .venv/bin/pytest), not `python -m pytest` from the source tree")
    if not MMLU_DIR.is_dir():
        raise pytest.UsageError(f"shared data not found at {SHARED_DATA}; set KINJECT_SHARED_DATA")


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The plain safetensors folder of the embedded SmolLM2-135M (converted once, cached)."""
    from lm_eval_kinject.presets import resolve_pretrained

    return Path(resolve_pretrained("smollm2-135m")["pretrained"])


@pytest.fixture(scope="session")
def kinject_lm(embedded_dir):
    """``kinject-rag`` on the embedded defaults, loaded once for the whole session."""
    from lm_eval_kinject.rag_lm import KinjectRAGLM

    return KinjectRAGLM(device="cpu", batch_size=8)


@pytest.fixture(scope="session")
def ce_kb(tmp_path_factory):
    """A real KB over the current-events sample's 388 chunks (default settings), built once."""
    from kinject_testing import CURRENT_EVENTS_DIR

    from lm_eval_kinject.corpus import read_source
    from lm_eval_kinject.kb import build_kb

    out = tmp_path_factory.mktemp("kb") / "current_events"
    source = CURRENT_EVENTS_DIR / "chunks.jsonl"
    return build_kb(read_source(source), out, sources=[str(source)], show_progress=False)


@pytest.fixture(scope="session")
def rag_lm_session(ce_kb):
    """``kinject-rag`` over the current-events KB (BM25, k=2), loaded once."""
    from lm_eval_kinject.rag_lm import KinjectRAGLM

    return KinjectRAGLM(device="cpu", batch_size=8, kb=str(ce_kb.path), k=2, retriever="bm25")


@pytest.fixture
def rag_lm(rag_lm_session):
    """A fresh view of the session RAG model: same weights and KB, its own memo, records and settings."""
    import copy

    lm = copy.copy(rag_lm_session)
    lm.set_retrieval(rag_lm_session.kb, k=2, retriever="bm25")
    return lm
