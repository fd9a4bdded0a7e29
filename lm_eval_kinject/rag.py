"""Retrieval augmentation of lm-eval requests, for any lm-eval backend (the paper's RAG arm).

:class:`RAGConfig` holds what decides the prompts (KB, ``k``, retriever, passage template, the
document field queried with, whether the options join the query, where to log retrievals).
:class:`Augmenter` rewrites a list of lm-eval ``Instance``s: every request's context gets the
top-``k`` chunks for its document, placed right before the test question (see
:mod:`lm_eval_kinject.prompting`), cut to fit ``max_length``. It needs only what every backend
has: a token counter and a decoder (:class:`Tokens`). Retrieval runs once per (task, doc_id),
batched; one record per document says what was retrieved and whether the gold chunk was.

:class:`RAGModelMixin` turns any lm-eval model class into its RAG variant (``kinject-rag`` on HF,
``kinject-rag-vllm``, ``kinject-rag-api``): the same arguments, the same ``model_info.kinject``
provenance, and correct results under lm-eval's request cache (``--use_cache``). lm-eval's
``CachingLM`` looks a request up by its *un-augmented* arguments before the model runs, and stores
the result afterwards under whatever the arguments are then. The mixin therefore (1) puts every
cache key of a RAG run into a namespace named by the retrieval identity (KB fingerprint,
retriever settings, ``k``, template, query), so a RAG run never reads what the base model or
another retrieval setting stored, and (2) stores each result under the key of the request as it
was looked up, so an identical re-run is served from the cache. The base arm (no KB) uses
lm-eval's own keys: a ``kinject-rag`` base run and an ``hf`` run share their cache entries, as
upstream intends. A cached request is not retrieved again: its retrieval record is the one of the
run that computed it.

This module imports no backend (no HFLM, no vLLM, no torch).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lm_eval_kinject import __version__
from lm_eval_kinject.artifacts import write_jsonl_atomic
from lm_eval_kinject.errors import ConfigError, KinjectError
from lm_eval_kinject.prompting import check_template, fit_passages, render_passages, split_context
from lm_eval_kinject.retrieval import DEFAULT_RETRIEVER, RetrieverConfig, compose_query

logger = logging.getLogger(__name__)

__all__ = ["RAG_ARGS", "LM_EVAL_CLI_ARGS", "RAGConfig", "Tokens", "Augmenter", "RAGModelMixin", "check_model_args", "init_parameters",
           "follow_lm_eval_logging"]

# what lm-eval's CLI passes to every model (--device, --batch_size, --max_batch_size), whatever its backend uses
LM_EVAL_CLI_ARGS = ("device", "batch_size", "max_batch_size")
# the model_args every kinject RAG model takes, on every backend
RAG_ARGS = ("kb", "k", *RetrieverConfig.KEYS, "template", "query_field", "query_with_options", "retrieval_log")


def init_parameters(cls) -> list[str]:
    """The named parameters of ``cls.__init__`` (what an lm-eval model accepts as ``model_args``)."""
    import inspect

    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def check_model_args(model: str, given: dict, valid: list[str]) -> None:
    """An unknown ``model_args`` key is an error naming it, with the valid ones (not forwarded silently)."""
    from lm_eval_kinject.errors import did_you_mean

    unknown = sorted(set(given) - set(valid))
    if unknown:
        hints = "".join(did_you_mean(k, valid) for k in unknown)
        raise ConfigError(f"{model}: unknown model_args key(s) {unknown}{hints}; valid keys: {', '.join(sorted(valid))}")


def follow_lm_eval_logging() -> None:
    """Show this package's log lines wherever lm-eval shows its own (its CLI logs only ``lm_eval.*``)."""
    ours, theirs = logging.getLogger("lm_eval_kinject"), logging.getLogger("lm_eval")
    if theirs.handlers and not ours.handlers:
        for handler in theirs.handlers:
            ours.addHandler(handler)
        ours.setLevel(theirs.level)
        ours.propagate = False


def _flag(value, name: str, model: str) -> bool:
    """A boolean model argument: lm-eval passes ``True``/``False`` (or strings from a dict)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{model}: {name}={value!r}: expected True or False")


def _int_arg(value):
    """lm-eval passes model_args from a dict as they are, and from its CLI as numbers or strings: a numeric
    string becomes a number, so ``rerank_depth=10`` reads the same either way."""
    return int(value) if isinstance(value, str) and value.isdigit() else value


@dataclass(frozen=True)
class RAGConfig:
    """What decides a RAG prompt; ``kb=None`` or ``k=0`` is the base arm."""

    kb: str | None = None
    k: int = 3
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)
    template: str = "plain"
    query_field: str = "question"
    query_with_options: bool = False
    retrieval_log: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise ConfigError(f"k={self.k!r}: expected a non-negative integer (0 turns retrieval off)")
        check_template(self.template)
        self.retriever.check_k(self.k)
        if not isinstance(self.query_field, str) or not self.query_field:
            raise ConfigError(f"query_field={self.query_field!r}: expected the name of a document field")

    @property
    def active(self) -> bool:
        return self.kb is not None and self.k > 0

    @classmethod
    def from_model_args(cls, args: dict, model: str) -> tuple[RAGConfig, dict]:
        """Split lm-eval ``model_args`` into this config and the backend's own arguments."""
        ours = {key: args[key] for key in RAG_ARGS if key in args}
        rest = {key: value for key, value in args.items() if key not in RAG_ARGS}
        try:
            retriever = RetrieverConfig.from_mapping(
                {key: _int_arg(value) for key, value in ours.items() if key in RetrieverConfig.KEYS}, model)
            kb = ours.get("kb")
            config = cls(kb=str(kb) if kb is not None else None, k=ours.get("k", 3), retriever=retriever,
                         template=ours.get("template", "plain"), query_field=ours.get("query_field", "question"),
                         query_with_options=_flag(ours.get("query_with_options", False), "query_with_options",
                                                  model),
                         retrieval_log=str(ours["retrieval_log"]) if ours.get("retrieval_log") else None)
        except ConfigError as error:
            message = str(error)
            raise ConfigError(message if message.startswith(model) else f"{model}: {message}") from None
        return config, rest


@dataclass(frozen=True)
class Tokens:
    """The two token operations augmentation needs, from any backend's tokenizer."""

    count: Callable[[str], int]  # tokens of a text, without special tokens
    truncate: Callable[[str, int], str]  # the first n tokens of a text, decoded


class Augmenter:
    """Retrieves for lm-eval requests and rewrites their contexts (see the module docstring)."""

    def __init__(self, config: RAGConfig, kb=None, model: str = "kinject-rag") -> None:
        """``kb``: an already loaded KnowledgeBase to use instead of loading ``config.kb``."""
        from lm_eval_kinject.kb import KnowledgeBase
        from lm_eval_kinject.retrieval import RETRIEVERS, build_retriever

        self.config, self.model = config, model
        self.template = check_template(config.template)
        self.kb, self.retriever = None, None
        self._retrieved: dict[tuple, list[dict]] = {}
        self.stats: Counter = Counter()
        self.records: list[dict] = []  # one per (task, doc_id): what was retrieved, whether the gold was
        if not config.active:
            return
        self.kb = kb if kb is not None and not isinstance(kb, (str, Path)) else KnowledgeBase.load(config.kb)
        self.retriever = build_retriever(self.kb, config.retriever)
        if RETRIEVERS[config.retriever.name].needs_embedder:
            self.kb.embed_queries(["load the embedder now"])  # an embedder missing offline fails here
        logger.info("%s: kb=%s (%d chunks), retriever=%s, k=%d", model, self.kb.path, len(self.kb),
                    config.retriever.name, config.k)

    @property
    def active(self) -> bool:
        return self.kb is not None

    def identity(self) -> dict | None:
        """What decides the augmented prompts (None for the base arm): provenance and cache namespace."""
        if not self.active:
            return None
        return {"kb": {"path": str(self.kb.path), "fingerprint": self.kb.manifest["fingerprint"],
                       "embedder": self.kb.manifest["embedder"]["name"], "chunks": len(self.kb)},
                **self.config.retriever.to_dict(), "k": self.config.k, "template": self.config.template,
                "query_field": self.config.query_field, "query_with_options": self.config.query_with_options}

    def cache_namespace(self) -> str | None:
        """The request-cache namespace of this retrieval setting (None for the base arm)."""
        if not hasattr(self, "_namespace"):
            identity = self.identity()
            self._namespace = None
            if identity is not None:
                identity = {**identity, "kb": identity["kb"]["fingerprint"]}  # a moved KB is the same KB
                digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
                self._namespace = f"kinject-rag-{digest}"
        return self._namespace

    # ---------------------------------------------------------------- retrieval
    def query(self, request) -> str:
        doc = request.doc or {}
        field_name = self.config.query_field
        if field_name not in doc or not isinstance(doc[field_name], str):
            raise KinjectError(f"{self.model}: documents of task {request.task_name!r} have no text field "
                               f"{field_name!r} to query with (fields: {sorted(doc)}); set query_field=")
        return compose_query(doc[field_name], doc.get("choices"), self.config.query_with_options)

    def _retrieve(self, by_doc: dict) -> None:
        """Fill ``self._retrieved`` for the documents not seen yet, one batched query."""
        new = [key for key in by_doc if key not in self._retrieved]
        if not new:
            return
        gold = None
        if self.config.retriever.name == "oracle":
            gold = [(by_doc[key][0].doc or {}).get("chunk_id") for key in new]
            for key, chunk_id in zip(new, gold):
                if not chunk_id:
                    raise KinjectError(f"{self.model}: retriever=oracle needs documents with a gold 'chunk_id'; "
                                       f"task {key[0]!r} has none")
                if not self.kb.has_chunk(chunk_id):
                    raise KinjectError(f"{self.model}: gold chunk {chunk_id!r} of task {key[0]!r} is not in "
                                       f"{self.kb.path}")
        hits = self.retriever.retrieve([self.query(by_doc[key][0]) for key in new], self.config.k, gold=gold)
        for key, ids, scores in zip(new, hits.ids, hits.scores):
            self._retrieved[key] = [{"chunk_id": str(i), "score": float(s)} for i, s in zip(ids, scores)]

    # ---------------------------------------------------------------- prompts
    def augment(self, requests, tokens: Tokens, max_length: int) -> None:
        """Rewrite each request's context in place with its document's passages.

        In place, so that lm-eval's ``--log_samples`` shows the prompts the model was given.
        """
        if not self.active or not requests:
            return
        started = time.perf_counter()
        by_doc: dict[tuple, list] = defaultdict(list)
        for request in requests:
            by_doc[(request.task_name, request.doc_id)].append(request)
        self._retrieve(by_doc)
        for key, group in by_doc.items():
            doc = group[0].doc
            retrieved = self._retrieved[key]
            passages = [asdict(self.kb.chunk(r["chunk_id"])) for r in retrieved]
            continuation_tokens = max((tokens.count(r.args[1]) for r in group
                                       if len(r.args) > 1 and isinstance(r.args[1], str)), default=0)
            augmented = {}
            for request in group:
                context = request.args[0]
                if context not in augmented:
                    augmented[context] = self._place(context, self.query(request), passages, continuation_tokens,
                                                     tokens, max_length)
                request.arguments = (augmented[context][0], *request.args[1:])
            kept, cut = next(iter(augmented.values()))[1:]
            self.stats["documents"] += 1
            self.stats["passages_cut"] += cut
            gold = (doc or {}).get("chunk_id") or None
            ids = [r["chunk_id"] for r in retrieved]
            self.records.append({
                "task": key[0], "doc_id": key[1], "retriever": self.config.retriever.name, "k": self.config.k,
                "chunk_ids": ids, "scores": [r["score"] for r in retrieved], "passages_in_prompt": kept,
                "passages_cut": cut, "gold_chunk_id": gold, "gold_retrieved": (gold in ids) if gold else None})
        self.stats["seconds"] += time.perf_counter() - started
        if self.config.retrieval_log:
            write_jsonl_atomic(Path(self.config.retrieval_log), self.records)
        logger.info("%s: %d passages retrieved for %d documents in %.2f s (%d cut to fit, question not located "
                    "in %d prompts)", self.model, sum(len(self._retrieved[k]) for k in by_doc), len(by_doc),
                    time.perf_counter() - started, self.stats["passages_cut"], self.stats["question_not_found"])

    def _place(self, context: str, question: str, passages: list[dict], continuation_tokens: int, tokens: Tokens,
               max_length: int):
        """(augmented context, passages kept, passages cut or dropped) for one context string."""
        split = split_context(context, question)
        if split is None:
            self.stats["question_not_found"] += 1
            split = ("", context)  # passages before everything: still one shared block per question
        prefix, test_text = split
        budget = max_length - tokens.count(context) - continuation_tokens - 2
        kept, cut = fit_passages(passages, self.template, budget, tokens.count, tokens.truncate)
        return prefix + render_passages(kept, self.template) + test_text, len(kept), cut


def _hash_args(attr: str, args) -> str:
    from lm_eval.api.model import hash_args

    return hash_args(attr, args)


class _RAGCache:
    """Wraps the request cache of lm-eval's ``CachingLM`` (see the module docstring).

    Keys of a RAG run get the retrieval namespace; a result stored under an augmented request's
    key is stored under the key of the request as it was looked up.
    """

    def __init__(self, owner: RAGModelMixin) -> None:
        self.owner = owner
        self.original: dict[str, str] = {}  # key of an augmented request -> key it was looked up by

    def key(self, key: str, storing: bool) -> str:
        if storing:
            key = self.original.get(key, key)
        namespace = self.owner.rag.cache_namespace()
        return f"{namespace}:{key}" if namespace else key


def _namespaced(dbdict, cache: _RAGCache):
    """Make the cache object itself (shared by CachingLM and its hook) read and write through ``cache``."""
    base = type(dbdict)
    if getattr(base, "_kinject_cache", False):
        dbdict._kinject = cache
        return dbdict

    class KinjectNamespacedCache(base):
        _kinject_cache = True

        def __contains__(self, key):
            return base.__contains__(self, self._kinject.key(key, storing=False))

        def __getitem__(self, key):
            return base.__getitem__(self, self._kinject.key(key, storing=False))

        def __setitem__(self, key, value):
            base.__setitem__(self, self._kinject.key(key, storing=True), value)

    dbdict.__class__ = KinjectNamespacedCache
    dbdict._kinject = cache
    return dbdict


class RAGModelMixin:
    """Retrieval for an lm-eval model class: ``class X(RAGModelMixin, SomeLM)``.

    The subclass calls :meth:`_init_rag` before its backend loads (bad KBs fail fast) and provides
    :meth:`_rag_tokens` when its tokenizer is not a Hugging Face one.
    """

    kinject_model = "kinject-rag"
    rag: Augmenter
    _rag_cache: _RAGCache | None = None

    def _init_rag(self, config: RAGConfig, kb=None) -> None:
        self.rag_config = config
        self.rag = Augmenter(config, kb=kb, model=self.kinject_model)

    def set_retrieval(self, kb=None, k: int = 3, retriever: str | RetrieverConfig = DEFAULT_RETRIEVER,
                      template: str | None = None, retrieval_log: str | None = None,
                      query_with_options: bool | None = None) -> None:
        """(Re)configure retrieval on the loaded model (None: the base arm); one model serves many arms.

        ``kb``: a KB folder or a loaded KnowledgeBase. ``template`` / ``retrieval_log`` / ``query_with_options``:
        None keeps the current.
        """
        retriever = retriever if isinstance(retriever, RetrieverConfig) else RetrieverConfig(retriever)
        options = self.rag_config.query_with_options if query_with_options is None else query_with_options
        config = RAGConfig(kb=None if kb is None else str(getattr(kb, "path", kb)), k=k, retriever=retriever,
                           template=template or self.rag_config.template, query_field=self.rag_config.query_field,
                           query_with_options=options,
                           retrieval_log=str(retrieval_log) if retrieval_log else self.rag_config.retrieval_log)
        self._init_rag(config, kb=kb)

    # the old attribute names, read by benchmarks and the grid
    @property
    def retrieval_records(self) -> list[dict]:
        return self.rag.records

    @property
    def rag_stats(self) -> Counter:
        return self.rag.stats

    @property
    def kb(self):
        return self.rag.kb

    def _rag_tokens(self) -> Tokens:
        def count(text: str) -> int:
            return len(self.tok_encode(text, add_special_tokens=False))

        def truncate(text: str, n: int) -> str:
            return self.tokenizer.decode(self.tok_encode(text, add_special_tokens=False)[:n])

        return Tokens(count, truncate)

    def _rag_augment(self, attr: str, requests) -> None:
        if not self.rag.active or not requests:
            return
        before = [request.args for request in requests]
        self.rag.augment(requests, self._rag_tokens(), self.max_length)
        if self._rag_cache is not None:
            for request, args in zip(requests, before):
                self._rag_cache.original[_hash_args(attr, request.args)] = _hash_args(attr, args)

    # ---------------------------------------------------------------- lm-eval entry points
    def set_cache_hook(self, cache_hook) -> None:
        super().set_cache_hook(cache_hook)
        if getattr(cache_hook, "dbdict", None) is not None:
            self._rag_cache = _RAGCache(self)
            _namespaced(cache_hook.dbdict, self._rag_cache)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        self._rag_augment("loglikelihood", requests)
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def generate_until(self, requests, disable_tqdm: bool = False):
        self._rag_augment("generate_until", requests)
        return super().generate_until(requests, disable_tqdm=disable_tqdm)

    def kinject_info(self) -> dict:
        """The ``model_info.kinject`` block of lm-eval's results."""
        identity = self.rag.identity()
        return {"version": __version__, "model": self.kinject_model, "kb": identity["kb"] if identity else None,
                "retriever": identity["retriever"] if identity else None,
                "retriever_settings": self.rag.config.retriever.to_dict() if identity else None,
                "k": self.rag.config.k if identity else 0, "template": self.rag.config.template if identity else None,
                "query_field": self.rag.config.query_field, "query_with_options": self.rag.config.query_with_options,
                "cache_namespace": self.rag.cache_namespace()}

    def get_model_info(self) -> dict:
        parent = getattr(super(), "get_model_info", None)  # HFLM and VLLM have one, the API models not
        info = parent() if parent else {}
        info["kinject"] = self.kinject_info()
        return info
