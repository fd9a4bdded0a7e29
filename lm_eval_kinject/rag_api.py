"""``kinject-rag-api``: lm-eval's ``local-completions`` model plus retrieval (:mod:`lm_eval_kinject.rag`).

For a model that is already served: any OpenAI-compatible ``/v1/completions`` endpoint that
returns prompt log-probabilities (``echo`` + ``logprobs``: vLLM, TGI, llama.cpp's server, ...).
Every argument of ``local-completions`` works as there (``model``, ``base_url``, ``tokenizer``,
``tokenizer_backend``, ``num_concurrent``, ``max_retries``, ``max_length``, ...), plus the RAG
arguments every kinject model takes. Fitting passages into ``max_length`` needs a tokenizer:
``tokenizer_backend=huggingface`` (the default: ``tokenizer=`` or ``model=`` names it) or
``remote``/``tiktoken``; ``tokenizer_backend=none`` is refused when a KB is given.
"""
from __future__ import annotations

import logging

from lm_eval_kinject.backends import BACKENDS, import_from
from lm_eval_kinject.errors import ConfigError, KinjectError
from lm_eval_kinject.rag import (LM_EVAL_CLI_ARGS, RAG_ARGS, RAGConfig, RAGModelMixin, Tokens, check_model_args,
                                 follow_lm_eval_logging, init_parameters)

TemplateAPI = import_from("api", "lm_eval.models.api_models", "TemplateAPI")
LocalCompletionsAPI = import_from("api", "lm_eval.models.openai_completions", "LocalCompletionsAPI")

logger = logging.getLogger(__name__)

__all__ = ["KinjectRAGAPI", "valid_model_args"]


def valid_model_args() -> list[str]:
    return sorted(set(init_parameters(LocalCompletionsAPI)) | set(init_parameters(TemplateAPI)) | set(RAG_ARGS)
                  | set(LM_EVAL_CLI_ARGS))


class KinjectRAGAPI(RAGModelMixin, LocalCompletionsAPI):
    """lm-eval model ``kinject-rag-api`` (see the module docstring)."""

    kinject_model = "kinject-rag-api"
    valid_model_args = staticmethod(valid_model_args)

    def __init__(self, **kwargs) -> None:
        follow_lm_eval_logging()
        check_model_args(self.kinject_model, kwargs, valid_model_args())
        config, kwargs = RAGConfig.from_model_args(kwargs, self.kinject_model)
        if config.active and str(kwargs.get("tokenizer_backend", "huggingface")).lower() == "none":
            raise ConfigError("kinject-rag-api: retrieval needs a tokenizer to fit passages into max_length; "
                              "drop tokenizer_backend=none (huggingface, remote or tiktoken)")
        self._init_rag(config)  # before any request: bad KBs fail fast
        try:
            super().__init__(**kwargs)
        except ModuleNotFoundError as error:  # lm-eval checks its API extras here
            raise KinjectError(f"kinject-rag-api: {error}; {BACKENDS['api'].install}") from None

    def _rag_tokens(self) -> Tokens:
        def encode(text: str) -> list[int]:
            return list(self.tok_encode(text, add_special_tokens=False))

        def truncate(text: str, n: int) -> str:
            return self.decode_batch([encode(text)[:n]])[0]

        return Tokens(lambda text: len(encode(text)), truncate)
