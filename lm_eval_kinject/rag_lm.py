"""``kinject-rag``: lm-eval's ``HFLM`` plus retrieval from a knowledge base (the paper's RAG arm).

Without ``kb`` (or with ``k=0``) it is the *base* arm and scores exactly like ``--model hf`` with
the same arguments: nothing in the scoring path is touched. With ``kb=PATH`` every request's
context gets the top-``k`` chunks for its document's question (:mod:`lm_eval_kinject.rag`, the
layer shared with ``kinject-rag-vllm`` and ``kinject-rag-api``); then HFLM scores the options as
the task defines. lm-eval's ``--log_samples`` output shows the augmented prompts;
``retrieval_log=PATH`` also writes one JSONL record per document (chunk ids, scores, whether the
gold ``chunk_id`` was retrieved), kept in ``retrieval_records`` as well.

Scoring reuses the key/value cache of prompt prefixes shared by many requests (the few-shot block,
a question's context shared by its options; :mod:`lm_eval_kinject.prefix_cache`), with results
equal to the plain path; ``prefix_cache=False`` turns it off.

Other differences from ``hf``: ``pretrained`` may be a preset name (``models/*.yaml``; omitted, the
embedded SmolLM2-135M-Instruct), and an unknown ``model_args`` key is an error listing the valid
ones instead of being forwarded silently to ``from_pretrained``.
"""
from __future__ import annotations

import logging
from collections import Counter

from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from lm_eval_kinject.errors import ConfigError
from lm_eval_kinject.prefix_cache import score_requests, unsupported_reason
from lm_eval_kinject.presets import DEFAULT_MODEL, get_preset, resolve_pretrained
from lm_eval_kinject.rag import (RAG_ARGS, RAGConfig, RAGModelMixin, check_model_args, follow_lm_eval_logging,
                                 init_parameters)

logger = logging.getLogger(__name__)

__all__ = ["KinjectRAGLM", "valid_model_args"]

# ``from_pretrained`` options users of lm-eval's hf model commonly pass through HFLM's **kwargs.
FROM_PRETRAINED_ARGS = frozenset({
    "attn_implementation", "low_cpu_mem_usage", "device_map", "load_in_8bit", "load_in_4bit",
    "bnb_4bit_quant_type", "bnb_4bit_compute_dtype", "bnb_4bit_use_double_quant",
})
HF_RAG_ARGS = (*RAG_ARGS, "prefix_cache")


def valid_model_args() -> list[str]:
    """Every ``model_args`` key ``kinject-rag`` accepts."""
    return sorted(set(init_parameters(HFLM)) | FROM_PRETRAINED_ARGS | set(HF_RAG_ARGS))


class KinjectRAGLM(RAGModelMixin, HFLM):
    """lm-eval model ``kinject-rag`` (see the module docstring)."""

    kinject_model = "kinject-rag"
    valid_model_args = staticmethod(valid_model_args)

    def __init__(self, pretrained: str | None = None, prefix_cache: bool = True, **kwargs) -> None:
        follow_lm_eval_logging()
        check_model_args(self.kinject_model, {"pretrained": pretrained, **kwargs}, valid_model_args())
        if not isinstance(prefix_cache, bool):
            raise ConfigError(f"kinject-rag: prefix_cache={prefix_cache!r}: expected True or False")
        if pretrained is not None and not isinstance(pretrained, str):
            raise ConfigError("kinject-rag: pretrained must be a preset name, a folder or a Hub id")
        config, kwargs = RAGConfig.from_model_args(kwargs, self.kinject_model)
        self._init_rag(config)  # before the model: bad KBs fail fast
        self._kinject_preset = (pretrained or DEFAULT_MODEL) if get_preset(pretrained or DEFAULT_MODEL) else None
        resolved = resolve_pretrained(pretrained)
        logger.info("kinject-rag: pretrained=%s -> %s", pretrained or DEFAULT_MODEL, resolved["pretrained"])
        super().__init__(**{**resolved, **kwargs})
        self.prefix_cache = prefix_cache
        if not prefix_cache:
            logger.info("kinject-rag: prefix cache off (prefix_cache=False): every request is scored whole, as hf does")
        self.prefix_cache_stats: Counter = Counter()

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        if not self.prefix_cache or not requests or self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        longest = max(min(len(c) + len(x), self.max_length + 1) - 1 for _, c, x in requests)
        why = unsupported_reason(self.model, longest)
        if why:
            self.prefix_cache_stats["fallback_requests"] += len(requests)
            logger.info("kinject-rag: prefix cache off for %d requests: %s", len(requests), why)
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        batch_size = self.batch_size
        if batch_size == "auto":
            longest_request = max(range(len(requests)), key=lambda i: len(requests[i][1]) + len(requests[i][2]))
            batch_size = override_bs or self._detect_batch_size(requests, longest_request)
        before = Counter(self.prefix_cache_stats)
        with tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
                  desc="Running loglikelihood requests (prefix cache)") as progress:
            results = score_requests(self, requests, int(batch_size), self.prefix_cache_stats, progress=progress)
        now = self.prefix_cache_stats - before
        logger.info("kinject-rag: prefix cache: %d requests in %d questions (%d sharing a prefix in %d groups), "
                    "%d forward rows; %d of %d tokens computed (%.1fx fewer)", now["requests"], now["questions"],
                    now["questions_sharing"], now["groups"], now["rows"], now["tokens_computed"],
                    now["request_tokens"], now["request_tokens"] / max(now["tokens_computed"], 1))
        return results

    def kinject_info(self) -> dict:
        return {**super().kinject_info(), "preset": self._kinject_preset, "prefix_cache": self.prefix_cache}
