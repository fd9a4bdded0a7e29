"""Rerankers: a second stage that re-orders a first-stage retriever's top ``rerank_depth`` chunks.

Two kinds, one registry (:data:`RERANKERS`), named in a :class:`~lm_eval_kinject.retrieval.RetrieverConfig`'s
``rerank`` setting wherever a retriever is named (``kinject kb search/eval``, the ``kinject-rag*`` models'
``rerank=`` argument, grid configs' ``retrieval:`` block):

* ``lm``: query likelihood, after UPR (Sachan et al., 2022, "Improving Passage Retrieval with Zero-Shot
  Question Generation"): a passage's score is ``log P(query | passage)`` under a causal LM prompted to write a
  question about the passage. The LM is ``rerank_model`` (a preset, a local folder or a Hub id; default: the
  embedded SmolLM2-135M-Instruct). Each passage's prompt is computed once for all the queries that retrieved it
  (:func:`lm_eval_kinject.prefix_cache.score_requests`), only the query's tokens per pair.
* ``cross-encoder:<path or name>``: a sentence-transformers ``CrossEncoder`` scores each (query, passage) pair.

A reranker never adds a chunk the first stage did not return: recall@``rerank_depth`` of the first stage is
the ceiling of recall@1 after reranking. Ties keep the first stage's order (a stable sort).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from lm_eval_kinject.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["RERANKERS", "RerankerSpec", "DEFAULT_RERANK_DEPTH", "DEFAULT_RERANK_MODEL", "Reranker", "ScoreCache",
           "parse_rerank", "build_reranker", "LMReranker", "CrossEncoderReranker", "UPR_PROMPT"]

# Depth 10: recall@10 of every first stage on current_events_v2 is the ceiling reranking can reach (docs/retrieval.md);
# deeper costs linearly more LM passes for little more recall.
DEFAULT_RERANK_DEPTH = 10
DEFAULT_RERANK_MODEL = "smollm2-135m"  # the embedded LM: reranking works offline with nothing downloaded
# UPR's instruction (Sachan et al., 2022, section 2.2), the passage's title on its first line as a KB chunk shows it
UPR_PROMPT = "Passage: {passage}\nPlease write a question based on this passage.\nQuestion:"
PASSAGE_TOKENS = 512  # a passage longer than this is cut (KB chunks are 256 tokens of the embedder by default)


def parse_rerank(value: str | None) -> tuple[str, str | None] | None:
    """``"lm"`` -> ("lm", None); ``"cross-encoder:PATH"`` -> ("cross-encoder", PATH); None/"" -> None.

    Raises:
        ConfigError: an unknown reranker, or a cross-encoder without its model.
    """
    from lm_eval_kinject.errors import did_you_mean

    if value is None or value == "" or value is False:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"rerank={value!r}: expected a reranker name ({', '.join(RERANKERS)})")
    kind, _, target = value.partition(":")
    if kind not in RERANKERS:
        raise ConfigError(f"rerank={value!r}: unknown reranker{did_you_mean(kind, RERANKERS)}; valid: lm, "
                          "cross-encoder:<local folder or Hub id>")
    if RERANKERS[kind].needs_target and not target:
        raise ConfigError(f"rerank={value!r}: name the {kind} model: {kind}:<local folder or Hub id>")
    if not RERANKERS[kind].needs_target and target:
        raise ConfigError(f"rerank={value!r}: the {kind} reranker takes its model from rerank_model=, not after a "
                          "colon")
    return kind, target or None


class ScoreCache:
    """Reranker scores on disk, one JSON file per reranker identity (model, prompt, passage cut): ``sha256(query,
    passage)`` -> score. A (query, passage) pair is scored once per machine, whatever the process (``kinject kb eval``,
    a grid cell, ``lm_eval``): the same retrievals in every run, and a second run costs no model. Written whole to a
    temporary file and renamed; a damaged file is set aside with a warning and rebuilt."""

    def __init__(self, identity: dict, folder: Path | None = None) -> None:
        import hashlib
        import json

        from lm_eval_kinject.presets import cache_dir

        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        self.path = (folder or cache_dir() / "rerank") / f"{identity['kind']}-{digest}.json"
        self.identity, self.scores = identity, {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if data.get("identity") == identity:
                    self.scores = {k: float(v) for k, v in data["scores"].items()}
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                logger.warning("rerank: %s is damaged (%s); scores are computed again", self.path, error)

    @staticmethod
    def key(query: str, passage: str) -> str:
        import hashlib

        return hashlib.sha256(f"{query}\x00{passage}".encode()).hexdigest()[:32]

    def get(self, query: str, passage: str) -> float | None:
        return self.scores.get(self.key(query, passage))

    def update(self, pairs: list[tuple[str, str]], scores: list[float]) -> None:
        from lm_eval_kinject.artifacts import write_json_atomic

        self.scores.update((self.key(q, p), float(s)) for (q, p), s in zip(pairs, scores))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, {"identity": self.identity, "scores": self.scores})
        except OSError as error:  # a read-only or full cache folder costs speed, not results
            logger.warning("rerank: could not write the score cache %s (%s)", self.path, error)


class Reranker(Protocol):
    name: str

    def score(self, queries: list[str], passages: list[list[str]]) -> list[np.ndarray]:
        """One float32 array per query: the score of each of its passages (higher is better)."""
        ...


@dataclass
class _Scorer:
    """What :func:`prefix_cache.score_requests` reads of an lm-eval ``HFLM``, for a bare transformers model."""

    model: object
    device: object
    max_length: int
    mixed_precision_dtype: object = None
    softmax_dtype: object = None


class LMReranker:
    """UPR: score = log P(query tokens | passage prompt) under a causal LM (see the module docstring)."""

    name = "lm"

    def __init__(self, model, tokenizer, batch_size: int = 16, label: str = DEFAULT_RERANK_MODEL) -> None:
        """``model``/``tokenizer``: a loaded transformers causal LM (``load_rerank_lm`` loads one by name)."""
        import torch

        self.model, self.tokenizer, self.batch_size, self.label = model, tokenizer, batch_size, label
        # (query, passage) -> log P(query | passage), kept on disk for this model, prompt and passage cut
        folder = getattr(getattr(model, "config", None), "_name_or_path", "") or label
        self.cache = ScoreCache({"kind": "lm", "model": label, "folder": str(folder), "prompt": UPR_PROMPT,
                                 "passage_tokens": PASSAGE_TOKENS, "format": 1})
        self.model.eval()
        length = getattr(model.config, "max_position_embeddings", 2048) or 2048
        self.scorer = _Scorer(model, next(model.parameters()).device, int(length), None, torch.float32)

    @classmethod
    def load(cls, name: str = DEFAULT_RERANK_MODEL, batch_size: int = 16) -> LMReranker:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from lm_eval_kinject.errors import ModelLoadError
        from lm_eval_kinject.presets import resolve_pretrained

        kwargs = resolve_pretrained(name)
        folder = kwargs["pretrained"]
        extra = {"gguf_file": kwargs["gguf_file"]} if kwargs.get("gguf_file") else {}
        # fp32 unless the preset says otherwise: a bf16 checkpoint on a CPU without bf16 kernels runs ~10x slower
        dtype = kwargs.get("dtype") or "float32"
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **extra)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"rerank_model={name!r}: could not load a causal LM from {folder} "
                                 f"({' '.join(str(error).split())[:200]})") from None
        logger.info("rerank: lm reranker %s (%s)", name, folder)
        return cls(model, tokenizer, batch_size, name)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def score(self, queries: list[str], passages: list[list[str]]) -> list[np.ndarray]:
        """Scores of each query's passages; a (query, passage) pair scored before (in any process: the score
        cache) is not scored again."""
        from collections import Counter

        from lm_eval_kinject.prefix_cache import score_requests

        prompts: dict[str, list[int]] = {}
        requests, keys, pending = [], [], set()
        for query, texts in zip(queries, passages):
            target = None
            for text in texts:
                if self.cache.get(query, text) is not None or (query, text) in pending:
                    continue
                if target is None:
                    target = self._encode(" " + query.strip())
                if text not in prompts:
                    passage = self.tokenizer.decode(self._encode(text)[:PASSAGE_TOKENS])
                    prompts[text] = self._encode(UPR_PROMPT.format(passage=passage))
                requests.append((None, prompts[text], target))
                keys.append((query, text))
                pending.add((query, text))
        if requests:
            stats: Counter = Counter()
            results = score_requests(self.scorer, requests, self.batch_size, stats)
            self.cache.update(keys, [result[0] for result in results])
            logger.info("rerank: %d (query, passage) pairs over %d passages, %d tokens computed", len(requests),
                        len(prompts), stats["tokens_computed"])
        return [np.array([self.cache.get(q, t) for t in texts], dtype=np.float32)
                for q, texts in zip(queries, passages)]


class CrossEncoderReranker:
    """A sentence-transformers ``CrossEncoder`` (``cross-encoder:<local folder or Hub id>``)."""

    name = "cross-encoder"

    def __init__(self, model, batch_size: int = 32) -> None:
        self.model, self.batch_size = model, batch_size

    @classmethod
    def load(cls, target: str, batch_size: int = 32) -> CrossEncoderReranker:
        from sentence_transformers import CrossEncoder

        from lm_eval_kinject.errors import ModelLoadError

        path = Path(target).expanduser()
        if not path.exists() and target.startswith((".", "/", "~")):
            raise ModelLoadError(f"rerank=cross-encoder:{target}: no such folder (expected a CrossEncoder model "
                                 "folder or a Hugging Face Hub id)")
        try:
            model = CrossEncoder(str(path) if path.exists() else target, device="cpu")
        except Exception as error:  # noqa: BLE001 - any loading failure is one line naming the model
            raise ModelLoadError(f"rerank=cross-encoder:{target}: could not load a CrossEncoder "
                                 f"({type(error).__name__}: {' '.join(str(error).split())[:200]})") from None
        logger.info("rerank: cross-encoder %s", target)
        return cls(model, batch_size)

    def score(self, queries: list[str], passages: list[list[str]]) -> list[np.ndarray]:
        pairs = [(q, p) for q, texts in zip(queries, passages) for p in texts]
        flat = np.asarray(self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
                          if pairs else [], dtype=np.float32).reshape(len(pairs), -1)[:, -1]
        scores, start = [], 0
        for texts in passages:
            scores.append(flat[start:start + len(texts)])
            start += len(texts)
        return scores


@dataclass(frozen=True)
class RerankerSpec:
    """One registry entry: what the reranker is, how to load it (``load(target, rerank_model)``), which
    ``RetrieverConfig`` settings it reads (their defaults are written there, once) and whether it needs a target
    after a colon (``cross-encoder:<model>``)."""

    description: str
    load: Callable[[str | None, str], Reranker]
    settings: tuple[str, ...] = ("rerank_depth",)
    needs_target: bool = False


RERANKERS: dict[str, RerankerSpec] = {
    "lm": RerankerSpec("query likelihood log P(query | passage) under a causal LM (UPR); rerank_model picks the LM",
                       lambda target, rerank_model: LMReranker.load(rerank_model),
                       settings=("rerank_depth", "rerank_model")),
    "cross-encoder": RerankerSpec("a sentence-transformers CrossEncoder: cross-encoder:<local folder or Hub id>",
                                  lambda target, rerank_model: CrossEncoderReranker.load(target), needs_target=True),
}

_LOADED: dict[tuple, Reranker] = {}  # one loaded model per process and setting: a grid's cells share it


def build_reranker(rerank: str, rerank_model: str = DEFAULT_RERANK_MODEL) -> Reranker:
    """The reranker ``rerank`` names (``lm`` or ``cross-encoder:<model>``), loaded once per process."""
    kind, target = parse_rerank(rerank)
    spec = RERANKERS[kind]
    key = (kind, target, rerank_model if "rerank_model" in spec.settings else None)
    if key not in _LOADED:
        _LOADED[key] = spec.load(target, rerank_model)
    return _LOADED[key]
