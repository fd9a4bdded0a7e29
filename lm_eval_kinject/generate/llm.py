"""Chat LLMs behind one small interface: OpenAI-compatible endpoints and local Hugging Face models.

An LLM is named by a spec string (``--llm``):

- ``openai:MODEL`` — OpenAI's API; the key comes from ``$OPENAI_API_KEY`` (``OPENAI_BASE_URL`` is honoured).
- ``openai-compatible:URL,model=NAME[,key_env=VAR]`` — any server speaking the chat-completions API
  (vLLM, llama.cpp's server, TGI, ...); the key comes from ``$VAR`` if given, else none is sent.
- ``hf:MODEL[,batch_size=8,device=cpu,dtype=float32]`` — a local causal LM (a kinject preset such as
  ``smollm2-135m``, a model folder, or a Hub id), with its chat template applied.

Both HTTP backends use the official ``openai`` client, whose retries (exponential back-off, honouring
``Retry-After``, on connection errors, 408, 409, 429 and 5xx) and timeouts we configure rather than
re-implement. API keys are read from the environment at call time and never stored, logged or hashed:
an LLM's :attr:`ChatLLM.name` (what caches and manifests record) holds no secret.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit, urlunsplit

from lm_eval_kinject.errors import ConfigError, KinjectError

logger = logging.getLogger(__name__)

__all__ = ["GenParams", "Completion", "LLMError", "ChatLLM", "OpenAIChat", "HFChat", "make_llm"]

Messages = list[dict]


class LLMError(KinjectError):
    """The LLM cannot be used at all (unreachable, key refused, rate limit not lifting): stop the run."""


@dataclass(frozen=True)
class GenParams:
    """Sampling settings of one request; part of the response-cache key."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Completion:
    """One answer: its text, or ``error`` (a per-request failure, e.g. HTTP 400) with text empty."""

    text: str
    tokens: int = 0
    error: str | None = None


class ChatLLM:
    """Answers batches of chat conversations. Subclasses set ``name`` and implement ``complete``."""

    name: str = "llm"
    #: how many requests one ``complete`` call should get to keep the backend busy
    preferred_batch: int = 8

    def complete(self, conversations: list[Messages], params: list[GenParams]) -> list[Completion]:
        raise NotImplementedError

    def describe(self) -> dict:
        """What the manifest records about this LLM (never a key)."""
        return {"name": self.name}


def _parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ConfigError(f"--llm {spec!r}: expected KIND:TARGET with KIND one of openai, openai-compatible, hf "
                          "(e.g. openai:gpt-4o, openai-compatible:http://127.0.0.1:8000/v1,model=x, hf:smollm2-135m)")
    target, *pairs = rest.split(",")
    options = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--llm {spec!r}: option {pair!r} is not KEY=VALUE")
        options[key.strip()] = value.strip()
    return kind.strip(), target.strip(), options


def make_llm(spec: str, concurrency: int = 4, max_retries: int = 5, timeout_s: float = 120.0) -> ChatLLM:
    """The LLM named by ``spec`` (see the module docstring).

    Raises:
        ConfigError: a malformed spec, an unknown option, or a missing API key variable.
    """
    kind, target, options = _parse_spec(spec)

    def take(allowed: set[str]) -> dict[str, str]:
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ConfigError(f"--llm {spec!r}: unknown option(s) {unknown}; allowed for {kind}: {sorted(allowed)}")
        return options

    if kind == "openai":
        take(set())
        if not os.environ.get("OPENAI_API_KEY"):
            raise ConfigError(f"--llm {spec!r} needs an API key in the environment variable OPENAI_API_KEY")
        return OpenAIChat(target, base_url=os.environ.get("OPENAI_BASE_URL"), key_env="OPENAI_API_KEY",
                          concurrency=concurrency, max_retries=max_retries, timeout_s=timeout_s, label="openai")
    if kind == "openai-compatible":
        opts = take({"model", "key_env"})
        if "model" not in opts:
            raise ConfigError(f"--llm {spec!r}: name the served model, e.g. {kind}:{target},model=NAME")
        if not target.startswith(("http://", "https://")):
            raise ConfigError(f"--llm {spec!r}: {target!r} is not an http(s) base URL such as http://127.0.0.1:8000/v1")
        key_env = opts.get("key_env")
        if key_env and not os.environ.get(key_env):
            raise ConfigError(f"--llm {spec!r}: the environment variable {key_env} (the API key) is not set")
        return OpenAIChat(opts["model"], base_url=target, key_env=key_env, concurrency=concurrency,
                          max_retries=max_retries, timeout_s=timeout_s, label="openai-compatible")
    if kind == "hf":
        opts = take({"batch_size", "device", "dtype"})
        try:
            batch_size = int(opts.get("batch_size", 8))
        except ValueError:
            raise ConfigError(f"--llm {spec!r}: batch_size must be an integer") from None
        return HFChat(target, batch_size=batch_size, device=opts.get("device", "cpu"), dtype=opts.get("dtype"))
    raise ConfigError(f"--llm {spec!r}: unknown kind {kind!r}; expected openai, openai-compatible or hf")


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class OpenAIChat(ChatLLM):
    """A chat-completions endpoint through the official ``openai`` client, ``concurrency`` requests at a time."""

    def __init__(self, model: str, base_url: str | None, key_env: str | None, concurrency: int = 4,
                 max_retries: int = 5, timeout_s: float = 120.0, label: str = "openai") -> None:
        import openai

        if concurrency < 1:
            raise ConfigError(f"--concurrency must be at least 1, got {concurrency}")
        self.model, self.key_env, self.concurrency = model, key_env, concurrency
        self.base_url = base_url or "https://api.openai.com/v1"
        shown = _without_userinfo(self.base_url)
        self.name = f"openai:{model}" if label == "openai" and not base_url else f"{label}:{shown},model={model}"
        self.preferred_batch = max(8, 2 * concurrency)
        self._shown_url = shown
        self._client = openai.OpenAI(base_url=self.base_url, api_key=os.environ.get(key_env or "", "") or "none",
                                     max_retries=max_retries, timeout=timeout_s)

    def describe(self) -> dict:
        return {"name": self.name, "backend": "openai-chat-completions", "base_url": self._shown_url,
                "model": self.model, "key_env": self.key_env, "concurrency": self.concurrency,
                "max_retries": self._client.max_retries, "timeout_s": self._client.timeout}

    def _one(self, messages: Messages, params: GenParams) -> Completion:
        import openai

        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=messages, temperature=params.temperature, top_p=params.top_p,
                max_tokens=params.max_tokens, seed=params.seed)
        except openai.AuthenticationError as exc:
            raise LLMError(f"{self._shown_url}: HTTP 401, the API key was refused"
                           f"{f' (from ${self.key_env})' if self.key_env else ' (no key_env given)'}: {_message(exc)}") from None
        except openai.PermissionDeniedError as exc:
            raise LLMError(f"{self._shown_url}: HTTP 403, not allowed to use model {self.model!r}: {_message(exc)}") from None
        except openai.NotFoundError as exc:
            raise LLMError(f"{self._shown_url}: HTTP 404 for model {self.model!r} (wrong base URL or model "
                           f"name?): {_message(exc)}") from None
        except openai.RateLimitError as exc:
            raise LLMError(f"{self._shown_url}: still rate-limited (HTTP 429) after {self._client.max_retries} "
                           f"retries with back-off; lower --concurrency or try later (finished answers are "
                           f"cached): {_message(exc)}") from None
        except openai.APITimeoutError:
            raise LLMError(f"{self._shown_url}: no answer within {self._client.timeout} s after "
                           f"{self._client.max_retries} retries (raise --timeout?)") from None
        except openai.APIConnectionError as exc:
            raise LLMError(f"cannot reach {self._shown_url} ({exc.__cause__ or exc}); is the server running and "
                           "the base URL right (it usually ends in /v1)?") from None
        except openai.InternalServerError as exc:
            raise LLMError(f"{self._shown_url}: HTTP {exc.status_code} after {self._client.max_retries} retries: "
                           f"{_message(exc)}") from None
        except openai.APIStatusError as exc:  # 400/422...: this request only
            return Completion("", 0, f"HTTP {exc.status_code}: {_message(exc)}")
        choices = getattr(response, "choices", None) or []
        if not choices or choices[0].message is None:
            return Completion("", 0, "the response has no choices")
        text = choices[0].message.content or ""
        usage = getattr(response, "usage", None)
        return Completion(text, int(getattr(usage, "completion_tokens", 0) or 0))

    def complete(self, conversations: list[Messages], params: list[GenParams]) -> list[Completion]:
        if self.concurrency == 1 or len(conversations) == 1:
            return [self._one(m, p) for m, p in zip(conversations, params)]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._one, conversations, params))


def _message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
    return str(getattr(exc, "message", exc))[:300]


class HFChat(ChatLLM):
    """A local causal LM: chat template applied, batched sampling with left padding.

    Sampling is seeded per batch (``torch.Generator`` from the batch's request seeds), so a run is
    reproducible for the same batch size; the response cache makes reruns identical in any case.
    """

    def __init__(self, model: str, batch_size: int = 8, device: str = "cpu", dtype: str | None = None,
                 loaded=None) -> None:
        if batch_size < 1:
            raise ConfigError(f"--llm hf:...,batch_size must be at least 1, got {batch_size}")
        self.model_name, self.batch_size, self.device = model, batch_size, device
        self.name = f"hf:{model}"
        self.preferred_batch = batch_size
        self._dtype = dtype
        self._model, self._tokenizer = loaded if loaded else (None, None)

    def describe(self) -> dict:
        return {"name": self.name, "backend": "transformers", "model": self.model_name,
                "batch_size": self.batch_size, "device": self.device}

    def load(self):
        """(model, tokenizer), loaded once; shared with the answerability check."""
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from lm_eval_kinject.presets import resolve_pretrained

            kwargs = resolve_pretrained(self.model_name)
            dtype = self._dtype or kwargs.get("dtype") or "float32"
            path = kwargs["pretrained"]
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            self._model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(self.device)
            self._model.eval()
            if self._tokenizer.chat_template is None:
                raise ConfigError(f"--llm hf:{self.model_name}: the tokenizer has no chat template; "
                                  "use an instruction-tuned model")
        return self._model, self._tokenizer

    def _batches(self, conversations, params) -> Iterator[list[int]]:
        # same sampling settings together, then similar prompt lengths (less padding)
        order = sorted(range(len(conversations)), key=lambda i: (params[i].temperature, params[i].top_p,
                                                                 sum(len(m["content"]) for m in conversations[i])))
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            head = params[batch[0]]
            same = [i for i in batch if (params[i].temperature, params[i].top_p) == (head.temperature, head.top_p)]
            yield same
            rest = [i for i in batch if i not in same]
            if rest:
                yield rest

    def complete(self, conversations: list[Messages], params: list[GenParams]) -> list[Completion]:
        import torch

        model, tokenizer = self.load()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        out: list[Completion | None] = [None] * len(conversations)
        for batch in self._batches(conversations, params):
            prompts = [tokenizer.apply_chat_template(conversations[i], tokenize=False, add_generation_prompt=True)
                       for i in batch]
            encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            head = params[batch[0]]
            sample = head.temperature > 0
            torch.manual_seed(hash(tuple(params[i].seed for i in batch)) & 0x7FFFFFFF)
            with torch.no_grad():
                generated = model.generate(
                    **encoded, do_sample=sample, temperature=head.temperature if sample else None,
                    top_p=head.top_p if sample else None, top_k=None,
                    max_new_tokens=max(params[i].max_tokens for i in batch), pad_token_id=tokenizer.pad_token_id)
            new = generated[:, encoded["input_ids"].shape[1]:]
            for row, i in enumerate(batch):
                ids = new[row][: params[i].max_tokens]
                ids = ids[ids != tokenizer.pad_token_id] if tokenizer.pad_token_id is not None else ids
                out[i] = Completion(tokenizer.decode(ids, skip_special_tokens=True).strip(), int(ids.numel()))
        return out  # type: ignore[return-value]
