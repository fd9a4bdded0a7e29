"""``kinject-rag``: lm-eval's ``HFLM`` plus retrieval from a knowledge base (the paper's RAG arm).

Without ``kb`` (or with ``k=0``) it is the *base* arm and scores exactly like ``--model hf`` with
the same arguments: nothing in the scoring path is touched. With ``kb=PATH`` every request's
context gets the top-``k`` chunks for its document's question, placed right before the test
question (see :mod:`lm_eval_kinject.prompting`); then HFLM scores the options as the task defines.
Retrieval runs once per (task, doc_id), batched. lm-eval's ``--log_samples`` output shows the
augmented prompts; ``retrieval_log=PATH`` also writes one JSONL record per document (chunk ids,
scores, whether the gold ``chunk_id`` was retrieved), kept in ``retrieval_records`` as well.

Scoring reuses the key/value cache of prompt prefixes shared by many requests (the few-shot block,
a question's context shared by its options; :mod:`lm_eval_kinject.prefix_cache`), with results
equal to the plain path; ``prefix_cache=False`` turns it off.

Other differences from ``hf``: ``pretrained`` may be a preset name (``models/*.yaml``; omitted, the
embedded SmolLM2-135M-Instruct), and an unknown ``model_args`` key is an error listing the valid
ones instead of being forwarded silently to ``from_pretrained``.
"""
from __future__ import annotations

import inspect
import logging
import time
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path

from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from lm_eval_kinject import __version__
from lm_eval_kinject.artifacts import write_jsonl_atomic
from lm_eval_kinject.errors import ConfigError, KinjectError, did_you_mean
from lm_eval_kinject.prefix_cache import score_requests, unsupported_reason
from lm_eval_kinject.presets import DEFAULT_MODEL, get_preset, resolve_pretrained
from lm_eval_kinject.prompting import check_template, fit_passages, render_passages, split_context

logger = logging.getLogger(__name__)

__all__ = ["KinjectRAGLM", "valid_model_args"]

# ``from_pretrained`` options users of lm-eval's hf model commonly pass through HFLM's **kwargs.
FROM_PRETRAINED_ARGS = frozenset({
    "attn_implementation", "low_cpu_mem_usage", "device_map", "load_in_8bit", "load_in_4bit",
    "bnb_4bit_quant_type", "bnb_4bit_compute_dtype", "bnb_4bit_use_double_quant",
})
RAG_ARGS = ("kb", "k", "retriever", "template", "query_field", "query_with_options", "retrieval_log", "prefix_cache")
RETRIEVER_CHOICES = ("bm25", "dense", "hybrid", "oracle")


def valid_model_args() -> list[str]:
    """Every ``model_args`` key ``kinject-rag`` accepts."""
    params = inspect.signature(HFLM.__init__).parameters.values()
    hflm = {p.name for p in params if p.name != "self" and p.kind is not p.VAR_KEYWORD}
    return sorted(hflm | FROM_PRETRAINED_ARGS | set(RAG_ARGS))


def _check_model_args(kwargs: dict) -> None:
    valid = valid_model_args()
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        hints = "".join(did_you_mean(k, valid) for k in unknown)
        raise ConfigError(f"kinject-rag: unknown model_args key(s) {unknown}{hints}; "
                          f"valid keys: {', '.join(valid)}")


def _follow_lm_eval_logging() -> None:
    """Show this package's log lines wherever lm-eval shows its own (its CLI logs only ``lm_eval.*``)."""
    ours, theirs = logging.getLogger("lm_eval_kinject"), logging.getLogger("lm_eval")
    if theirs.handlers and not ours.handlers:
        for handler in theirs.handlers:
            ours.addHandler(handler)
        ours.setLevel(theirs.level)
        ours.propagate = False


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ConfigError(f"kinject-rag: k={k!r}: expected a non-negative integer (0 turns retrieval off)")
    return k


class KinjectRAGLM(HFLM):
    """lm-eval model ``kinject-rag`` (see the module docstring)."""

    def __init__(self, pretrained: str | None = None, kb: str | None = None, k: int = 3, retriever: str = "dense",
                 template: str = "plain", query_field: str = "question", query_with_options: bool = False,
                 retrieval_log: str | None = None, prefix_cache: bool = True, **kwargs) -> None:
        _follow_lm_eval_logging()
        _check_model_args({"pretrained": pretrained, **kwargs})
        if not isinstance(prefix_cache, bool):
            raise ConfigError(f"kinject-rag: prefix_cache={prefix_cache!r}: expected True or False")
        if pretrained is not None and not isinstance(pretrained, str):
            raise ConfigError("kinject-rag: pretrained must be a preset name, a folder or a Hub id")
        self.template_name, self.template = template, check_template(template)
        self.query_field, self.query_with_options = query_field, bool(query_with_options)
        self.set_retrieval(kb, k, retriever)  # before the model: bad KBs fail fast
        self._kinject_preset = (pretrained or DEFAULT_MODEL) if get_preset(pretrained or DEFAULT_MODEL) else None
        resolved = resolve_pretrained(pretrained)
        logger.info("kinject-rag: pretrained=%s -> %s", pretrained or DEFAULT_MODEL, resolved["pretrained"])
        super().__init__(**{**resolved, **kwargs})
        self.retrieval_log = Path(retrieval_log) if retrieval_log else None
        self.prefix_cache = prefix_cache
        if not prefix_cache:
            logger.info("kinject-rag: prefix cache off (prefix_cache=False): every request is scored whole, as hf does")
        self.prefix_cache_stats: Counter = Counter()

    def set_retrieval(self, kb=None, k: int = 3, retriever: str = "dense", template: str | None = None) -> None:
        """(Re)configure retrieval on the loaded model: a KB path or loaded KB (None: the base arm).

        Clears what was retrieved before; lets one loaded model serve many arms (benchmarks, grids).
        ``template`` (a passage template name) replaces the current one when given.
        """
        from lm_eval_kinject.kb import KnowledgeBase
        from lm_eval_kinject.retrieval import make_retriever

        if template is not None:
            self.template_name, self.template = template, check_template(template)
        self.k = _check_k(k)
        if retriever not in RETRIEVER_CHOICES:
            raise ConfigError(f"kinject-rag: unknown retriever {retriever!r}{did_you_mean(retriever, RETRIEVER_CHOICES)}; "
                              f"valid: {', '.join(RETRIEVER_CHOICES)}")
        self.retriever_name, self.kb, self._retriever = retriever, None, None
        self._retrieved: dict[tuple, list[dict]] = {}
        self.rag_stats: Counter = Counter()
        # One record per (task, doc_id): what was retrieved and whether the gold chunk was among it.
        self.retrieval_records: list[dict] = []
        if kb is None or self.k == 0:
            return
        self.kb = kb if isinstance(kb, KnowledgeBase) else KnowledgeBase.load(kb)
        if retriever != "oracle":
            self._retriever = make_retriever(self.kb, retriever)
        if retriever in ("dense", "hybrid"):
            self.kb.embed_queries(["load the embedder now"])  # an embedder missing offline fails here
        logger.info("kinject-rag: kb=%s (%d chunks), retriever=%s, k=%d", self.kb.path, len(self.kb), retriever, self.k)

    # ---------------------------------------------------------------- lm-eval entry points
    def loglikelihood(self, requests, disable_tqdm: bool = False):
        self._augment(requests)
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def generate_until(self, requests, disable_tqdm: bool = False):
        self._augment(requests)
        return super().generate_until(requests, disable_tqdm=disable_tqdm)

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

    # ---------------------------------------------------------------- retrieval
    def _query(self, request) -> str:
        doc = request.doc or {}
        if self.query_field not in doc or not isinstance(doc[self.query_field], str):
            raise KinjectError(f"kinject-rag: documents of task {request.task_name!r} have no text field "
                               f"{self.query_field!r} to query with (fields: {sorted(doc)}); set query_field=")
        query = doc[self.query_field]
        if self.query_with_options and isinstance(doc.get("choices"), list):
            query += "\n" + "\n".join(map(str, doc["choices"]))
        return query

    def _retrieve(self, by_doc: dict) -> None:
        """Fill ``self._retrieved`` for the documents not seen yet, one batched query."""
        new = [key for key in by_doc if key not in self._retrieved]
        if not new:
            return
        if self.retriever_name == "oracle":
            for key in new:
                doc, task = by_doc[key][0].doc or {}, key[0]
                gold = doc.get("chunk_id")
                if not gold:
                    raise KinjectError(f"kinject-rag: retriever=oracle needs documents with a gold 'chunk_id'; "
                                       f"task {task!r} has none")
                if not self.kb.has_chunk(gold):
                    raise KinjectError(f"kinject-rag: gold chunk {gold!r} of task {task!r} is not in {self.kb.path}")
                self._retrieved[key] = [{"chunk_id": gold, "score": 1.0}]
            return
        hits = self._retriever.retrieve([self._query(by_doc[key][0]) for key in new], self.k)
        for key, ids, scores in zip(new, hits.ids, hits.scores):
            self._retrieved[key] = [{"chunk_id": str(i), "score": float(s)} for i, s in zip(ids, scores)]

    def _augment(self, requests) -> None:
        """Rewrite each request's context in place with its document's passages."""
        if self.kb is None or not requests:
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
            continuation_tokens = max((len(self.tok_encode(r.args[1])) for r in group
                                       if len(r.args) > 1 and isinstance(r.args[1], str)), default=0)
            augmented = {}
            for request in group:
                context = request.args[0]
                if context not in augmented:
                    augmented[context] = self._place(context, self._query(request), passages, continuation_tokens)
                request.arguments = (augmented[context][0], *request.args[1:])
            kept, cut = next(iter(augmented.values()))[1:]
            self.rag_stats["documents"] += 1
            self.rag_stats["passages_cut"] += cut
            gold = (doc or {}).get("chunk_id") or None
            ids = [r["chunk_id"] for r in retrieved]
            self.retrieval_records.append({
                "task": key[0], "doc_id": key[1], "retriever": self.retriever_name, "k": self.k, "chunk_ids": ids,
                "scores": [r["score"] for r in retrieved], "passages_in_prompt": kept, "passages_cut": cut,
                "gold_chunk_id": gold, "gold_retrieved": (gold in ids) if gold else None})
        self.rag_stats["seconds"] += time.perf_counter() - started
        if self.retrieval_log:
            write_jsonl_atomic(self.retrieval_log, self.retrieval_records)
        logger.info("kinject-rag: %d passages retrieved for %d documents in %.2f s (%d cut to fit, question not "
                    "located in %d prompts)", sum(len(self._retrieved[k]) for k in by_doc), len(by_doc),
                    time.perf_counter() - started, self.rag_stats["passages_cut"], self.rag_stats["question_not_found"])

    def _place(self, context: str, question: str, passages: list[dict], continuation_tokens: int):
        """(augmented context, passages kept, passages cut or dropped) for one context string."""
        split = split_context(context, question)
        if split is None:
            self.rag_stats["question_not_found"] += 1
            split = ("", context)  # passages before everything: still one shared block per question
        prefix, test_text = split
        budget = self.max_length - len(self.tok_encode(context)) - continuation_tokens - 2

        def count(text: str) -> int:
            return len(self.tok_encode(text, add_special_tokens=False))

        def truncate(text: str, n: int) -> str:
            return self.tokenizer.decode(self.tok_encode(text, add_special_tokens=False)[:n])

        kept, cut = fit_passages(passages, self.template, budget, count, truncate)
        return prefix + render_passages(kept, self.template) + test_text, len(kept), cut

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        kb = None
        if self.kb is not None:
            kb = {"path": str(self.kb.path), "fingerprint": self.kb.manifest["fingerprint"],
                  "embedder": self.kb.manifest["embedder"]["name"], "chunks": len(self.kb)}
        info["kinject"] = {"version": __version__, "model": "kinject-rag", "preset": self._kinject_preset, "kb": kb,
                           "retriever": self.retriever_name if kb else None, "k": self.k if kb else 0,
                           "template": self.template_name if kb else None,
                           "query_field": self.query_field, "query_with_options": self.query_with_options,
                           "prefix_cache": self.prefix_cache}
        return info
