"""Retrievers over a knowledge base (BM25, dense, hybrid by reciprocal rank fusion, the oracle), their
one registry and config, and their metrics.

Retrievers compose, none subclasses another: :class:`RankingRetriever` turns a ranking function of an index
(``kb.bm25.search``, ``kb.dense.search``, or their fusion) into chunk ids, :class:`RerankedRetriever` wraps
any retriever with a reranker (:mod:`lm_eval_kinject.rerank`).

Every retriever answers a batch of queries with :class:`Hits`: chunk ids and scores of shape
``(n_queries, k)``, best first. ``k`` larger than the knowledge base returns every chunk. The
oracle answers with each query's gold chunk (``gold=``): the upper bound of retrieval.

:data:`RETRIEVERS` (one :class:`RetrieverSpec` per name: what it is, how it is built from a KB, which
settings it reads, whether it embeds queries), :data:`DEFAULT_RETRIEVER` and :class:`RetrieverConfig`
(the settings and their defaults, written once) are the one place every entry point reads:
``kinject kb search``, the lm-eval models' ``retriever=`` / ``fusion_depth=`` / ``rrf_k=``
arguments, grid configs' ``retrieval:`` block and the demo.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from lm_eval_kinject.errors import ConfigError
from lm_eval_kinject.rerank import DEFAULT_RERANK_DEPTH, DEFAULT_RERANK_MODEL, RERANKERS, parse_rerank

if TYPE_CHECKING:
    from lm_eval_kinject.kb import KnowledgeBase

__all__ = ["Hits", "Retriever", "RetrieverSpec", "RETRIEVERS", "SEARCH_RETRIEVERS", "DEFAULT_RETRIEVER",
           "RetrieverConfig", "RankingRetriever", "RerankedRetriever", "build_retriever", "reciprocal_rank_fusion",
           "recall_at_k", "mean_reciprocal_rank", "check_queries", "compose_query"]


@dataclass(frozen=True)
class RetrieverSpec:
    """One registry entry: what the retriever is, how to build it, which :class:`RetrieverConfig` settings it
    reads (their defaults live on the config, once) and what it needs."""

    description: str
    build: Callable[[KnowledgeBase, RetrieverConfig], Retriever]
    settings: tuple[str, ...] = ()
    searches: bool = True  # False: the oracle is told the answer
    needs_embedder: bool = False  # queries are embedded by the KB's embedder


# Measured on the current-events sample, RAG accuracy at k = 1 (docs/retrieval.md): BM25 0.833, hybrid 0.750, dense 0.619;
# recall@1 0.893 / 0.821 / 0.631. Short factual questions share their rare words with the passage.
DEFAULT_RETRIEVER = "bm25"


@dataclass(frozen=True)
class RetrieverConfig:
    """Which retriever and its settings: ``fusion_depth`` / ``rrf_k`` are hybrid's; ``rerank`` (``lm`` or
    ``cross-encoder:<model>``, :mod:`lm_eval_kinject.rerank`) re-orders the first stage's top ``rerank_depth``
    chunks, ``rerank_model`` is the LM of ``rerank=lm``. Every entry point reads names and defaults from here."""

    name: str = DEFAULT_RETRIEVER
    fusion_depth: int = 100  # how deep each ranking enters the fusion
    rrf_k: int = 60  # the RRF constant (Cormack et al., 2009)
    rerank: str | None = None  # off by default: BM25 alone reaches recall@1 0.963 on current_events_v2 (docs/retrieval.md)
    rerank_depth: int = DEFAULT_RERANK_DEPTH
    rerank_model: str = DEFAULT_RERANK_MODEL

    # mapping key (grid retrieval: blocks, model_args, CLI) -> field; absent keys take the defaults above
    KEYS = {"retriever": "name", "fusion_depth": "fusion_depth", "rrf_k": "rrf_k", "rerank": "rerank",
            "rerank_depth": "rerank_depth", "rerank_model": "rerank_model"}

    def __post_init__(self) -> None:
        from lm_eval_kinject.errors import did_you_mean

        problems = []
        if self.name not in RETRIEVERS:
            problems.append(f"retriever={self.name!r}: unknown retriever{did_you_mean(str(self.name), RETRIEVERS)}; "
                            f"valid: {', '.join(RETRIEVERS)}")
        for key in ("fusion_depth", "rrf_k", "rerank_depth"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{key}={value!r}: expected a positive integer")
        try:
            parse_rerank(self.rerank)
        except ConfigError as error:
            problems.append(str(error))
        if self.rerank and self.name == "oracle":
            problems.append(f"rerank={self.rerank!r}: the oracle returns the gold chunk; rerank a retriever that "
                            f"searches ({', '.join(SEARCH_RETRIEVERS)})")
        if not isinstance(self.rerank_model, str) or not self.rerank_model:
            problems.append(f"rerank_model={self.rerank_model!r}: expected a preset, model folder or Hub id")
        if problems:
            raise ConfigError("; ".join(problems))
        if self.rerank is not None and not self.rerank:
            object.__setattr__(self, "rerank", None)

    @classmethod
    def from_mapping(cls, data: dict, where: str = "retrieval") -> RetrieverConfig:
        """From ``{retriever, fusion_depth, rrf_k, rerank, rerank_depth, rerank_model}`` (absent keys: the
        defaults); a problem names ``where``."""
        try:
            return cls(**{field: data[key] for key, field in cls.KEYS.items() if key in data})
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None

    def check_k(self, k: int, where: str = "k") -> None:
        """A reranker returns at most ``rerank_depth`` chunks: ``k`` above it is an error."""
        if self.rerank and isinstance(k, int) and k > self.rerank_depth:
            raise ConfigError(f"{where}={k}: more than rerank_depth={self.rerank_depth} (the reranker orders the "
                              f"first stage's top rerank_depth chunks); raise rerank_depth to at least {k}")

    def to_dict(self) -> dict:
        """The settings that decide what is retrieved (hybrid's only for hybrid, the reranker's only when set)."""
        out = {"retriever": self.name}
        out.update({key: getattr(self, key) for key in RETRIEVERS[self.name].settings})
        if self.rerank:
            out["rerank"] = self.rerank
            out.update({key: getattr(self, key) for key in RERANKERS[parse_rerank(self.rerank)[0]].settings})
        return out

    def label(self) -> str:
        """A short name for tables: ``bm25``, ``dense>lm@10``."""
        return self.name + (f">{self.rerank}@{self.rerank_depth}" if self.rerank else "")


@dataclass(frozen=True)
class Hits:
    """Retrieved chunk ids (str) and scores (float32), each of shape ``(n_queries, k)``, best first."""

    ids: np.ndarray
    scores: np.ndarray


class Retriever(Protocol):
    name: str

    def retrieve(self, queries: list[str], k: int, gold: list[str | None] | None = None) -> Hits: ...


def compose_query(question: str, choices: list | None = None, with_options: bool = False) -> str:
    """The retrieval query of a question: its text, then (``with_options``) its options, one a line. The one
    definition ``kinject kb eval`` and every ``kinject-rag*`` model (``query_with_options=``) query with."""
    if not with_options or not isinstance(choices, list):
        return question
    return question + "\n" + "\n".join(map(str, choices))


def check_queries(queries: list[str], k: int) -> None:
    """Reject empty queries and a non-positive ``k`` with a clear message."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k={k!r}: expected a positive integer")
    for i, query in enumerate(queries):
        if not isinstance(query, str) or not query.strip():
            raise ConfigError(f"query {i}: empty query; expected some text to search for")


def reciprocal_rank_fusion(rankings: list[np.ndarray], k: int, rrf_k: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Fuse ranked position lists (each ``(n_queries, depth)``, best first; -1 = none) by RRF.

    Score of a chunk = sum over lists of ``1 / (rrf_k + rank)``, rank from 1 (Cormack et al., 2009).
    Returns positions and fused scores of shape ``(n_queries, k')``, ``k' = min(k, #distinct)``.
    """
    n_queries = rankings[0].shape[0]
    fused_positions, fused_scores = [], []
    for q in range(n_queries):
        scores: dict[int, float] = {}
        for ranking in rankings:
            for rank, position in enumerate(ranking[q], start=1):
                if position >= 0:
                    scores[int(position)] = scores.get(int(position), 0.0) + 1.0 / (rrf_k + rank)
        best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
        fused_positions.append([p for p, _ in best])
        fused_scores.append([s for _, s in best])
    width = min(len(row) for row in fused_positions) if fused_positions else 0
    return (np.array([row[:width] for row in fused_positions], dtype=np.int64).reshape(n_queries, width),
            np.array([row[:width] for row in fused_scores], dtype=np.float32).reshape(n_queries, width))


def recall_at_k(ids: np.ndarray, gold: list[str], k: int) -> float:
    """Share of queries whose gold chunk id is among their first ``k`` hits."""
    if not gold:
        return float("nan")
    return float(np.mean([g in set(row[:k]) for row, g in zip(ids, gold)]))


def mean_reciprocal_rank(ids: np.ndarray, gold: list[str]) -> float:
    """Mean of 1/rank of the gold chunk among the hits (0 when absent)."""
    if not gold:
        return float("nan")
    reciprocal = []
    for row, g in zip(ids, gold):
        where = np.flatnonzero(np.asarray(row) == g)
        reciprocal.append(1.0 / (where[0] + 1) if where.size else 0.0)
    return float(np.mean(reciprocal))


class RankingRetriever:
    """A retriever from a ranking function ``rank(queries, k) -> (positions, scores)`` over a KB's chunks:
    the one place positions become chunk ids."""

    def __init__(self, kb: KnowledgeBase, name: str, rank: Callable[[list[str], int], tuple]) -> None:
        self.kb, self.name, self.rank = kb, name, rank

    def retrieve(self, queries: list[str], k: int, gold: list[str | None] | None = None) -> Hits:
        check_queries(queries, k)
        positions, scores = self.rank(queries, min(k, len(self.kb)))
        return Hits(self.kb.ids_of(positions), scores)


def bm25_ranking(kb: KnowledgeBase) -> Callable[[list[str], int], tuple]:
    return kb.bm25.search


def dense_ranking(kb: KnowledgeBase) -> Callable[[list[str], int], tuple]:
    return lambda queries, k: kb.dense.search(kb.embed_queries(queries), k)


def fused_ranking(rankings: list[Callable], depth: int, rrf_k: int, size: int) -> Callable[[list[str], int], tuple]:
    """Reciprocal rank fusion of ``rankings``, each taken to ``depth`` (at least ``k``) of ``size`` chunks."""
    def rank(queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        deep = min(max(depth, k), size)
        return reciprocal_rank_fusion([ranking(queries, deep)[0] for ranking in rankings], k, rrf_k)

    return rank


class OracleRetriever:
    """Each query's gold chunk, score 1 (``k`` is ignored: there is one gold chunk)."""

    name = "oracle"

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb

    def retrieve(self, queries: list[str], k: int, gold: list[str | None] | None = None) -> Hits:
        if gold is None or len(gold) != len(queries):
            raise ConfigError("retriever=oracle needs the gold chunk id of every query")
        for i, chunk_id in enumerate(gold):
            if not chunk_id:
                raise ConfigError(f"retriever=oracle: query {i} has no gold chunk_id")
            if not self.kb.has_chunk(chunk_id):
                raise ConfigError(f"retriever=oracle: gold chunk {chunk_id!r} is not in {self.kb.path}")
        return Hits(np.array(gold, dtype=object).reshape(len(gold), 1),
                    np.ones((len(gold), 1), dtype=np.float32))


class RerankedRetriever:
    """A first-stage retriever whose top ``depth`` chunks a reranker re-orders (composition, not a subclass)."""

    def __init__(self, kb: KnowledgeBase, first: Retriever, reranker, depth: int) -> None:
        self.kb, self.first, self.reranker, self.depth = kb, first, reranker, depth
        self.name = f"{first.name}>{reranker.name}"

    def retrieve(self, queries: list[str], k: int, gold: list[str | None] | None = None) -> Hits:
        check_queries(queries, k)
        first = self.first.retrieve(queries, max(self.depth, k), gold=gold)
        chunks = [[self.kb.chunk(str(i)) for i in row] for row in first.ids]
        passages = [[f"{c.article}\n{c.text}" if c.article else c.text for c in row] for row in chunks]
        scores = self.reranker.score(queries, passages)
        width = min(k, first.ids.shape[1])
        ids = np.empty((len(queries), width), dtype=object)
        out = np.empty((len(queries), width), dtype=np.float32)
        for q, (row, row_scores) in enumerate(zip(first.ids, scores)):
            order = np.argsort(-row_scores, kind="stable")[:width]  # ties keep the first stage's order
            ids[q], out[q] = row[order], row_scores[order]
        return Hits(ids, out)


RETRIEVERS: dict[str, RetrieverSpec] = {
    "bm25": RetrieverSpec("lexical BM25 (bm25s)", lambda kb, c: RankingRetriever(kb, "bm25", bm25_ranking(kb))),
    "dense": RetrieverSpec("cosine similarity of the KB's embedder (exact, or HNSW above exact_below chunks)",
                           lambda kb, c: RankingRetriever(kb, "dense", dense_ranking(kb)), needs_embedder=True),
    "hybrid": RetrieverSpec(
        "reciprocal rank fusion of BM25 and dense, each ranked to fusion_depth",
        lambda kb, c: RankingRetriever(kb, "hybrid", fused_ranking([bm25_ranking(kb), dense_ranking(kb)],
                                                                   c.fusion_depth, c.rrf_k, len(kb))),
        settings=("fusion_depth", "rrf_k"), needs_embedder=True),
    "oracle": RetrieverSpec("each question's gold chunk (its chunk_id): the upper bound of retrieval",
                            lambda kb, c: OracleRetriever(kb), searches=False),
}
SEARCH_RETRIEVERS = tuple(name for name, spec in RETRIEVERS.items() if spec.searches)


def build_retriever(kb: KnowledgeBase, config: RetrieverConfig | str = RetrieverConfig(), reranker=None) -> Retriever:
    """The retriever ``config`` names, over ``kb``, with its reranker when ``config.rerank`` is set.

    ``reranker``: an already loaded reranker to use instead of loading ``config.rerank``'s model.
    """
    if isinstance(config, str):
        config = RetrieverConfig(config)
    first = RETRIEVERS[config.name].build(kb, config)
    if not config.rerank:
        return first
    if reranker is None:
        from lm_eval_kinject.rerank import build_reranker

        reranker = build_reranker(config.rerank, config.rerank_model)
    return RerankedRetriever(kb, first, reranker, config.rerank_depth)
