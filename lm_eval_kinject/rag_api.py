"""``kinject-rag-api``: lm-eval's ``local-completions`` model plus retrieval (:mod:`lm_eval_kinject.rag`).

For a model that is already served: any OpenAI-compatible ``/v1/completions`` endpoint that
returns prompt log-probabilities (``echo`` + ``logprobs``: vLLM, TGI, llama.cpp's server, ...).
Every argument of ``local-completions`` works as there (``model``, ``base_url``, ``tokenizer``,
``tokenizer_backend``, ``num_concurrent``, ``max_retries``, ``max_length``, ...), plus the RAG
arguments every kinject model takes. Fitting passages into ``max_length`` needs a tokenizer:
``tokenizer_backend=huggingface`` (the default: ``tokenizer=`` or ``model=`` names it) or
``remote``/``tiktoken``; ``tokenizer_backend=none`` is refused when a KB is given.

The server is probed once when the model is made (one loglikelihood-style request): an unreachable
server or an HTTP error is one line at start-up, and a server that returns no prompt
log-probabilities is one line at the first loglikelihood request (generation tasks still run).
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
        self._kinject_no_logprobs = self._probe_server()

    def _probe_server(self) -> str | None:
        """One request as lm-eval's loglikelihood sends it. Raises if the server cannot be used at all;
        returns why loglikelihood cannot work (no prompt log-probabilities), or None."""
        import requests

        where = f"kinject-rag-api: the server at base_url={self.base_url}"
        if not self.base_url:
            raise ConfigError("kinject-rag-api: base_url= is required (the /v1/completions endpoint of the server)")
        payload = self._create_payload("Hello", generate=False, seed=self._seed)
        try:
            response = requests.post(self.base_url, json=payload, headers=self.header,
                                     verify=self.verify_certificate, timeout=min(self.timeout, 60))
        except requests.exceptions.RequestException as error:
            reason = str(error.__context__ or error).splitlines()[0][:200]
            raise KinjectError(f"{where} cannot be reached ({type(error).__name__}: {reason}); is it running, "
                               "and does base_url name its completions endpoint (http://HOST:PORT/v1/completions)?"
                               ) from None
        if not response.ok:
            raise KinjectError(f"{where} answered HTTP {response.status_code} to a completions request: "
                               f"{' '.join(response.text.split())[:300]}")
        try:
            logprobs = response.json()["choices"][0]["logprobs"]["token_logprobs"]
        except (ValueError, KeyError, IndexError, TypeError):
            logprobs = None
        if not isinstance(logprobs, list) or len(logprobs) < 2:
            return (f"{where} returns no prompt log-probabilities (a completions request with echo=true, "
                    "logprobs=1 got none back); loglikelihood tasks (every multiple-choice task) need them: serve the "
                    "model with vLLM, TGI or llama.cpp's server, which return them")
        return None

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        if self._kinject_no_logprobs and requests:
            raise KinjectError(self._kinject_no_logprobs)
        try:
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        except Exception as error:
            if _server_lost(error):
                reason = " ".join(str(error.__context__ or error).split())[:200]
                raise KinjectError(
                    f"kinject-rag-api: the server at base_url={self.base_url} stopped answering mid-run (still failing "
                    f"after max_retries={self.max_retries} tries: {type(error).__name__}: {reason}); restart it and run "
                    "the same command again: a grid keeps its finished cells, lm_eval --use_cache the answered "
                    "requests") from None
            raise

    def _rag_tokens(self) -> Tokens:
        def encode(text: str) -> list[int]:
            return list(self.tok_encode(text, add_special_tokens=False))

        def truncate(text: str, n: int) -> str:
            return self.decode_batch([encode(text)[:n]])[0]

        return Tokens(lambda text: len(encode(text)), truncate)


def _server_lost(error: BaseException) -> bool:
    """A request that failed for the server's sake (gone, timing out, erroring), after lm-eval's retries."""
    import requests

    kinds: tuple = (requests.exceptions.RequestException,)
    try:
        import aiohttp

        kinds += (aiohttp.ClientError,)
    except ModuleNotFoundError:
        pass
    try:
        from tenacity import RetryError

        kinds += (RetryError,)
    except ModuleNotFoundError:
        pass
    return isinstance(error, kinds + (TimeoutError, ConnectionError))
