"""A cell scored on one part of a question split, read off the finished cell that scored every question.

Mixed training is compared on the held-out part of the questions only, so a grid with ``ft-mix`` or
``ft-raft`` scores the base model, RAG, FT-reg and FT-par twice: on every question (the paper's
comparisons) and on the held-out part. Each question is scored on its own (its options against its
own prompt, its own retrieval), so the second score is already in the first cell's samples: this
module takes them, in the order lm-eval gives the part's documents, and the cell costs no model.

The part is chosen as the task chooses it (``QuestionSplit.select`` over every question's
``chunk_id``), so a derived cell holds the questions and ``doc_id``s a direct evaluation holds
(tested). A parent that cannot say this (a ``limit``, a question without ``chunk_id``, a +RAG cell
written before per-question retrieval was recorded) derives nothing: the cell is evaluated.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from lm_eval_kinject.grid.cells import Cell
from lm_eval_kinject.run_folder import read_cell
from lm_eval_kinject.splits import METADATA_KEYS, QuestionSplit

__all__ = ["parent_cell", "derive", "question_ids"]


def parent_cell(cell: Cell, task_metadata: dict) -> Cell | None:
    """The cell that scores every question ``cell`` scores a part of, or None (not a split cell, or a limit)."""
    own = dict(cell.task_metadata)
    if cell.limit is not None or not own.get("question_split") or any(k in task_metadata for k in METADATA_KEYS):
        return None
    rest = tuple((k, v) for k, v in cell.task_metadata if k not in METADATA_KEYS)
    return replace(cell, task_metadata=rest)


def _samples(folder: Path) -> list[dict] | None:
    try:
        with open(folder / "samples.jsonl", encoding="utf-8") as fh:
            return sorted((json.loads(line) for line in fh if line.strip()), key=lambda s: s["doc_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def question_ids(samples: list[dict]) -> list[str] | None:
    """The questions' own ids (the documents' ``id`` field) in ``samples``' order, or None when a document has none
    or two share one. lm-eval's ``doc_id`` is a position in the task's dataset: a cell on a held-out part numbers
    its questions from 0 again, so cells of different experiments are paired on these ids."""
    ids = [s["doc"].get("id") if isinstance(s.get("doc"), dict) else None for s in samples]
    if not ids or any(not isinstance(i, str) or not i for i in ids) or len(set(ids)) != len(ids):
        return None
    return ids


def derive(cell: Cell, parent_folder: Path, parent_key: str) -> tuple[dict, list[dict]] | None:
    """(result, samples) of ``cell`` taken from the finished parent cell in ``parent_folder``, or None."""
    state = read_cell(parent_folder, with_result=True)
    if state.status != "done":
        return None
    parent, samples = state.result, _samples(parent_folder)
    per_question = parent["per_question"]
    if not samples or len(samples) != parent["n"]:
        return None
    docs = [s.get("doc") if isinstance(s.get("doc"), dict) else {} for s in samples]
    if any(not d.get("chunk_id") for d in docs) or [s["doc_id"] for s in samples] != list(range(len(samples))):
        return None
    retrieved = per_question.get("gold_retrieved")
    if cell.rag and (parent.get("retrieval") is None or retrieved is None or len(retrieved) != len(samples)):
        return None
    split, part = QuestionSplit.from_metadata(dict(cell.task_metadata))
    kept = [q["index"] for q in split.select([{"chunk_id": d["chunk_id"], "index": i} for i, d in enumerate(docs)],
                                             part)]
    if not kept:
        return None
    out_samples = [{**samples[i], "doc_id": new} for new, i in enumerate(kept)]
    correct = [float(samples[i]["acc"]) for i in kept]
    result = {
        "acc": sum(correct) / len(correct), "acc_stderr": None,
        "acc_norm": (sum(float(samples[i]["acc_norm"]) for i in kept) / len(kept)
                     if all("acc_norm" in samples[i] for i in kept) else None),
        "n": len(kept), "alias": parent["alias"], "num_fewshot": parent.get("num_fewshot"),
        "per_question": {"doc_id": list(range(len(kept))), "correct": correct},
        "retrieval": None, "prefix_cache": {},
        "lm_eval": {"derived_from": parent_key, "question_split": dict(cell.task_metadata),
                    "versions": parent.get("lm_eval", {}).get("versions")},
    }
    ids = question_ids(out_samples)
    if ids is not None:
        result["per_question"]["question_id"] = ids
    if cell.rag:
        gold = [retrieved[i] for i in kept]
        result["per_question"]["gold_retrieved"] = gold
        with_gold = [g for g in gold if g is not None]
        result["retrieval"] = {**parent["retrieval"], "recall": sum(with_gold) / len(with_gold) if with_gold else None,
                               "n": len(with_gold)}
    return result, out_samples
