"""Scoring retrieval against gold chunk ids (``kinject kb eval``)."""
from __future__ import annotations

import time
from pathlib import Path

from lm_eval_kinject.errors import ConfigError, DataError
from lm_eval_kinject.kb import KnowledgeBase
from lm_eval_kinject.questions import read_current_events_questions
from lm_eval_kinject.retrieval import RetrieverConfig, build_retriever, compose_query, mean_reciprocal_rank, recall_at_k

__all__ = ["evaluate_retrieval", "format_table", "skipped_note", "question_query", "QUERY_KINDS", "table_head",
           "table_row"]


# How a question becomes a retrieval query: its text alone, or followed by its options (one a line), as
# kinject-rag's query_with_options=True builds it (one function: kb eval and the models query alike).
QUERY_KINDS = ("question", "options")


def question_query(question: dict, with_options: bool = False) -> str:
    """The retrieval query of a question: its text, optionally followed by its options."""
    return compose_query(question["question"], question["choices"], with_options)


def evaluate_retrieval(kb: KnowledgeBase, questions_path: Path, ks: list[int], retrievers: list,
                       with_options: bool = False, queries: tuple[str, ...] | None = None,
                       on_row=None) -> list[dict]:
    """Recall@k for each k, MRR (over the first max(k) hits) and queries/s per retriever x query kind.

    ``retrievers``: names or :class:`RetrieverConfig` s (with their reranker); ``queries``: query kinds from
    :data:`QUERY_KINDS` (default: ``options`` if ``with_options`` else ``question``); ``on_row``: called with each
    row as soon as it is measured (a reranked row can take minutes on a CPU).

    Raises:
        DataError: no question has a gold ``chunk_id`` that the KB holds.
        ConfigError: an unknown query kind, or a cut-off deeper than a reranker's depth.
    """
    queries = queries or (("options",) if with_options else ("question",))
    unknown = [q for q in queries if q not in QUERY_KINDS]
    if unknown:
        raise ConfigError(f"--query {','.join(unknown)}: expected {' or '.join(QUERY_KINDS)}")
    configs = [r if isinstance(r, RetrieverConfig) else RetrieverConfig(r) for r in retrievers]
    for config in configs:
        config.check_k(max(ks), where=f"{config.label()}: -k")
    every = read_current_events_questions(questions_path)
    questions = [q for q in every if q["chunk_id"]]
    missing = [q["chunk_id"] for q in questions if not kb.has_chunk(q["chunk_id"])]
    if not questions or len(missing) == len(questions):
        raise DataError(f"{questions_path}: no question has a gold chunk_id present in {kb.path}")
    questions = [q for q in questions if kb.has_chunk(q["chunk_id"])]
    gold = [q["chunk_id"] for q in questions]
    rows = []
    for config in configs:
        retriever = build_retriever(kb, config)  # loads a reranker's model before the clock starts
        for kind in queries:
            texts = [question_query(q, kind == "options") for q in questions]
            started = time.perf_counter()
            hits = retriever.retrieve(texts, max(ks), gold=gold)
            seconds = time.perf_counter() - started
            row = {"retriever": config.name, "rerank": config.rerank, "rerank_depth": config.rerank_depth
                   if config.rerank else None, "label": config.label(), "query": kind, "questions": len(questions),
                   "missing_gold": len(missing), "no_gold": len(every) - len(questions) - len(missing),
                   "example_missing": missing[0] if missing else None, "mrr": mean_reciprocal_rank(hits.ids, gold),
                   "seconds": seconds, "queries_per_second": len(texts) / seconds if seconds > 0 else float("inf")}
            row.update({f"recall@{k}": recall_at_k(hits.ids, gold, k) for k in ks})
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def skipped_note(rows: list[dict]) -> str:
    """What the table leaves out and why (empty when every question was scored)."""
    if not rows:
        return ""
    row, notes = rows[0], []
    if row["missing_gold"]:
        notes.append(f"{row['missing_gold']} question(s) skipped: their gold chunk_id is not in the KB "
                     f"(e.g. {row['example_missing']!r})")
    if row["no_gold"]:
        notes.append(f"{row['no_gold']} question(s) skipped: no chunk_id")
    return "; ".join(notes)


def table_head(ks: list[int]) -> str:
    """The two header lines of :func:`format_table`."""
    return ("| retriever | rerank | query | " + " | ".join(f"recall@{k}" for k in ks)
            + f" | MRR@{max(ks)} | queries/s | questions |\n|---|---|---|" + "---:|" * (len(ks) + 3))


def table_row(r: dict, ks: list[int]) -> str:
    rerank = f"{r['rerank']}@{r['rerank_depth']}" if r.get("rerank") else "-"
    return (f"| {r['retriever']} | {rerank} | {r.get('query', 'question')} | "
            + " | ".join(f"{r[f'recall@{k}']:.3f}" for k in ks)
            + f" | {r['mrr']:.3f} | {r.get('queries_per_second', float('nan')):.1f} | {r['questions']} |")


def format_table(rows: list[dict], ks: list[int]) -> str:
    """One Markdown row per retriever (with its reranker) x query kind."""
    return "\n".join([table_head(ks), *(table_row(r, ks) for r in rows)])
