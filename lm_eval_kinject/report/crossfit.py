"""Cross-fitting: two experiments that train on the two halves of one question split, pooled over every question.

An experiment with ``qa: FILE, qa_split: {...}`` trains its QA arms (FT-RAFT, FT-mix, the control) on the QA pairs
of one part of the chunks and scores every arm on the other part, so a comparison uses half the questions. Its twin
with ``swap: true`` trains on the other part and scores the first. Each question is then scored once, by a model
that never trained on its QA pair, and the two halves together are one paired comparison on every question: twice
the n, at the cost of training each QA arm twice (Chernozhukov et al. 2018 call this cross-fitting).

``cross_fitted`` finds such twins among a report's experiments (the same settings but for their arms, control
tasks and ``swap``) and returns one pooled entry per arm both finished, with the pooled experiment's spec.
"""
from __future__ import annotations

import json
from dataclasses import replace

from lm_eval_kinject.report.results import Entry
from lm_eval_kinject.report.stats import bootstrap_ci

__all__ = ["cross_fitted", "pooled_name"]


def pooled_name(first: str, second: str) -> str:
    return f"{first}+{second}"


# what may differ between twins: their names and which arms and control tasks each runs (and, of course, swap)
_FREE = ("name", "title", "arms", "control_tasks", "qa_split")


def _twin_key(spec: dict) -> str | None:
    """Everything that decides a twin's cells but its arms; None for an experiment without a question split."""
    split = spec.get("qa_split")
    if not split or not spec.get("qa"):
        return None
    same = {k: v for k, v in spec.items() if k not in _FREE}
    return json.dumps([same, split["train_fraction"], split["seed"]], sort_keys=True, default=str)


def _pool(first: Entry, second: Entry, experiment: str, seed: int) -> Entry | None:
    """One entry over both cells' questions, or None when they cannot be pooled (an id missing or shared)."""
    a, b = first.per_question, second.per_question
    if "question_id" not in a or "question_id" not in b or set(a["question_id"]) & set(b["question_id"]):
        return None
    correct = list(a["correct"]) + list(b["correct"])
    per_question = {"doc_id": list(range(len(correct))), "correct": correct,
                    "question_id": list(a["question_id"]) + list(b["question_id"])}
    if "gold_retrieved" in a and "gold_retrieved" in b:
        per_question["gold_retrieved"] = list(a["gold_retrieved"]) + list(b["gold_retrieved"])
    recall = None
    if first.recall is not None and second.recall is not None:
        recall = (first.recall * first.n + second.recall * second.n) / (first.n + second.n)
    return replace(first, experiment=experiment, hash=f"{first.hash}+{second.hash}", acc=sum(correct) / len(correct),
                   ci=bootstrap_ci(correct, seed=seed), n=len(correct), recall=recall, per_question=per_question,
                   budget=first.budget if first.budget == second.budget else None, training=None)


def cross_fitted(entries: list[Entry], experiments: dict, order: list[str],
                 seed: int = 0) -> tuple[list[Entry], dict[str, dict], list[str]]:
    """(pooled entries, their experiments' specs, the experiment order with each pooled one after its twins)."""
    unswapped = {}
    for name in order:
        key = _twin_key(experiments[name])
        if key and not experiments[name]["qa_split"].get("swap"):
            unswapped.setdefault(key, name)
    pooled, specs, new_order = [], {}, list(order)
    for name in order:
        spec = experiments[name]
        key = _twin_key(spec)
        if not key or not spec["qa_split"].get("swap") or key not in unswapped:
            continue
        first, name_pooled = unswapped[key], pooled_name(unswapped[key], name)
        cells = {(e.model, e.arm, e.task): e for e in entries
                 if e.experiment == first and e.role == "main" and e.status == "done"}
        mine = []
        for e in entries:
            twin = cells.get((e.model, e.arm, e.task))
            if e.experiment == name and e.role == "main" and e.status == "done" and twin is not None:
                if (entry := _pool(twin, e, name_pooled, seed)) is not None:
                    mine.append(entry)
        if not mine:
            continue
        arms = [a for a in experiments[first]["arms"] if a in spec["arms"]]
        specs[name_pooled] = {**experiments[first], "title": f"Cross-fitted ({first} + {name}): every question",
                              "arms": arms, "qa_split": None, "cross_fit": [first, name], "control_tasks": []}
        pooled += mine
        new_order.insert(new_order.index(name) + 1, name_pooled)
    return pooled, specs, new_order
