"""Retrievers over a knowledge base (BM25, dense, hybrid by reciprocal rank fusion) and their metrics.

Every retriever answers a batch of queries with :class:`Hits`: chunk ids and scores of shape
``(n_queries, k)``, best first. ``k`` larger than the knowledge base returns every chunk.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from lm_eval_kinject.errors import ConfigError

if TYPE_CHECKING:
    from lm_eval_kinject.kb import KnowledgeBase

__all__ = ["Hits", "Retriever", "RETRIEVERS", "make_retriever", "reciprocal_rank_fusion", "recall_at_k",
           "mean_reciprocal_rank", "check_queries"]

RETRIEVERS = ("bm25", "dense", "hybrid")


@dataclass(frozen=True)
class Hits:
    """Retrieved chunk ids (str) and scores (float32), each of shape ``(n_queries, k)``, best first."""

    ids: np.ndarray
    scores: np.ndarray


class Retriever(Protocol):
    name: str

    def retrieve(self, queries: list[str], k: int) -> Hits: ...


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


class BM25Retriever:
    name = "bm25"

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb

    def rank(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` chunk positions and scores, ``(n_queries, k)``."""
        from lm_eval_kinject.index.bm25 import search_bm25

        return search_bm25(self.kb.bm25, queries, min(k, len(self.kb)), self.kb.bm25_config)

    def retrieve(self, queries: list[str], k: int) -> Hits:
        check_queries(queries, k)
        positions, scores = self.rank(queries, k)
        return Hits(self.kb.ids_of(positions), scores)


class DenseRetriever(BM25Retriever):
    name = "dense"

    def rank(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        from lm_eval_kinject.index.dense import search_dense

        return search_dense(self.kb.embeddings, self.kb.embed_queries(queries), k, hnsw=self.kb.hnsw,
                            ef_search=self.kb.dense_config.hnsw_ef_search)


class HybridRetriever(BM25Retriever):
    """Reciprocal rank fusion of the BM25 and dense rankings, each taken to ``depth``."""

    name = "hybrid"

    def __init__(self, kb: KnowledgeBase, depth: int = 100, rrf_k: int = 60) -> None:
        super().__init__(kb)
        self.depth, self.rrf_k = depth, rrf_k
        self.parts = (BM25Retriever(kb), DenseRetriever(kb))

    def rank(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        depth = min(max(self.depth, k), len(self.kb))
        rankings = [part.rank(queries, depth)[0] for part in self.parts]
        return reciprocal_rank_fusion(rankings, min(k, len(self.kb)), self.rrf_k)


def make_retriever(kb: KnowledgeBase, name: str) -> Retriever:
    """The retriever called ``name`` over ``kb``."""
    classes = {"bm25": BM25Retriever, "dense": DenseRetriever, "hybrid": HybridRetriever}
    if name not in classes:
        raise ConfigError(f"unknown retriever {name!r}; valid: {', '.join(RETRIEVERS)}")
    return classes[name](kb)
