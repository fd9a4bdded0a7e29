"""``kinject-rag-vllm``: lm-eval's ``vllm`` model plus retrieval (:mod:`lm_eval_kinject.rag`).

Every argument of lm-eval's ``vllm`` model works as there (``tensor_parallel_size``,
``data_parallel_size``, ``gpu_memory_utilization``, ``max_model_len``, ``lora_local_path`` for a
LoRA fine-tuned arm, ...), plus the RAG arguments every kinject model takes (``kb``, ``k``,
``retriever``, ``template``, ``retrieval_log``, ...). ``pretrained`` may be a preset name, as in
``kinject-rag``. An unknown argument is an error naming it (vLLM engine arguments are known when
vLLM is installed).
"""
from __future__ import annotations

import logging
import os

from lm_eval_kinject.backends import import_from
from lm_eval_kinject.errors import ConfigError
from lm_eval_kinject.presets import DEFAULT_MODEL, get_preset, resolve_pretrained
from lm_eval_kinject.rag import (LM_EVAL_CLI_ARGS, RAG_ARGS, RAGConfig, RAGModelMixin, check_model_args,
                                 follow_lm_eval_logging, init_parameters)

VLLM = import_from("vllm", "lm_eval.models.vllm_causallms", "VLLM")  # needs vLLM: a clear error without it

logger = logging.getLogger(__name__)

__all__ = ["KinjectRAGVLLM", "valid_model_args"]


def _engine_args() -> set[str]:
    """vLLM's engine arguments (lm-eval forwards extra model_args to ``vllm.LLM``)."""
    from dataclasses import fields

    from vllm.engine.arg_utils import EngineArgs

    return {f.name for f in fields(EngineArgs)}


def _check_parallel(kwargs: dict) -> None:
    """``tensor_parallel_size`` x ``data_parallel_size`` must fit the devices vLLM would use (GPUs, or CPU cores
    on vLLM's CPU backend): one line here rather than a hang or a traceback from the engine's workers."""
    sizes = {}
    for key in ("tensor_parallel_size", "data_parallel_size"):
        value = kwargs.get(key, 1)
        try:
            sizes[key] = int(str(value).strip())  # 2 or "2"; not 1.5, not "two"
        except ValueError:
            sizes[key] = 0
        if sizes[key] < 1:
            raise ConfigError(f"kinject-rag-vllm: {key}={value!r}: expected a positive integer")
    needed = sizes["tensor_parallel_size"] * sizes["data_parallel_size"]
    if needed == 1:
        return
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        what = "CPU cores (vLLM's CPU backend)"
    else:
        import torch

        available, what = torch.cuda.device_count(), f"{current_platform.device_name or 'GPU'} devices"
    if needed > available:
        raise ConfigError(f"kinject-rag-vllm: tensor_parallel_size={sizes['tensor_parallel_size']} x "
                          f"data_parallel_size={sizes['data_parallel_size']} needs {needed} devices; this machine "
                          f"has {available} {what}")


def valid_model_args() -> list[str]:
    return sorted(set(init_parameters(VLLM)) | _engine_args() | set(RAG_ARGS) | set(LM_EVAL_CLI_ARGS))


class KinjectRAGVLLM(RAGModelMixin, VLLM):
    """lm-eval model ``kinject-rag-vllm`` (see the module docstring)."""

    kinject_model = "kinject-rag-vllm"
    valid_model_args = staticmethod(valid_model_args)

    def __init__(self, pretrained: str | None = None, **kwargs) -> None:
        follow_lm_eval_logging()
        check_model_args(self.kinject_model, {"pretrained": pretrained, **kwargs}, valid_model_args())
        if pretrained is not None and not isinstance(pretrained, str):
            raise ConfigError("kinject-rag-vllm: pretrained must be a preset name, a folder or a Hub id")
        config, kwargs = RAGConfig.from_model_args(kwargs, self.kinject_model)
        self._init_rag(config)  # before the engine starts: bad KBs fail fast
        self._kinject_preset = (pretrained or DEFAULT_MODEL) if get_preset(pretrained or DEFAULT_MODEL) else None
        resolved = resolve_pretrained(pretrained)
        if "gguf_file" in resolved:
            raise ConfigError("kinject-rag-vllm: give vLLM a model folder, not a GGUF file")
        _check_parallel(kwargs)
        logger.info("kinject-rag-vllm: pretrained=%s -> %s", pretrained or DEFAULT_MODEL, resolved["pretrained"])
        super().__init__(**{**resolved, **kwargs})

    def kinject_info(self) -> dict:
        return {**super().kinject_info(), "preset": self._kinject_preset}
