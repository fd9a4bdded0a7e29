"""Scoring retrieval against gold chunk ids (``kinject kb eval``)."""
from __future__ import annotations

from pathlib import Path

from lm_eval_kinject.errors import DataError
from lm_eval_kinject.kb import KnowledgeBase
from lm_eval_kinject.questions import read_current_events_questions
from lm_eval_kinject.retrieval import build_retriever, mean_reciprocal_rank, recall_at_k

__all__ = ["evaluate_retrieval", "format_table", "skipped_note", "question_query"]


def question_query(question: dict, with_options: bool = False) -> str:
    """The retrieval query of a question: its text, optionally followed by its options."""
    if not with_options:
        return question["question"]
    return question["question"] + "\n" + "\n".join(question["choices"])


def evaluate_retrieval(kb: KnowledgeBase, questions_path: Path, ks: list[int], retrievers: list[str],
                       with_options: bool = False) -> list[dict]:
    """Recall@k for each k and MRR (over the first max(k) hits) per retriever.

    Raises:
        DataError: no question has a gold ``chunk_id`` that the KB holds.
    """
    every = read_current_events_questions(questions_path)
    questions = [q for q in every if q["chunk_id"]]
    missing = [q["chunk_id"] for q in questions if not kb.has_chunk(q["chunk_id"])]
    if not questions or len(missing) == len(questions):
        raise DataError(f"{questions_path}: no question has a gold chunk_id present in {kb.path}")
    questions = [q for q in questions if kb.has_chunk(q["chunk_id"])]
    queries = [question_query(q, with_options) for q in questions]
    gold = [q["chunk_id"] for q in questions]
    rows = []
    for name in retrievers:
        hits = build_retriever(kb, name).retrieve(queries, max(ks), gold=gold)
        row = {"retriever": name, "questions": len(questions), "missing_gold": len(missing),
               "no_gold": len(every) - len(questions) - len(missing), "example_missing": missing[0] if missing else None,
               "mrr": mean_reciprocal_rank(hits.ids, gold)}
        row.update({f"recall@{k}": recall_at_k(hits.ids, gold, k) for k in ks})
        rows.append(row)
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


def format_table(rows: list[dict], ks: list[int]) -> str:
    head = "| retriever | " + " | ".join(f"recall@{k}" for k in ks) + f" | MRR@{max(ks)} | questions |"
    lines = [head, "|---|" + "---:|" * (len(ks) + 2)]
    for r in rows:
        lines.append(f"| {r['retriever']} | " + " | ".join(f"{r[f'recall@{k}']:.3f}" for k in ks)
                     + f" | {r['mrr']:.3f} | {r['questions']} |")
    return "\n".join(lines)
