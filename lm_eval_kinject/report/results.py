"""A grid's finished cells as report rows: accuracy with a bootstrap interval, recall, forgetting."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from lm_eval_kinject.arms import parse_arm
from lm_eval_kinject.errors import DataError
from lm_eval_kinject.report.stats import align, bootstrap_ci
from lm_eval_kinject.run_folder import read_cell, read_grid_json

logger = logging.getLogger(__name__)

__all__ = ["Entry", "load_entries", "forgetting"]


@dataclass
class Entry:
    """One cell of the grid as the report sees it."""

    experiment: str
    model: str
    arm: str  # ft-par4, ft-par4+rag, ...
    task: str
    role: str
    status: str
    hash: str
    alias: str = ""
    num_fewshot: int | None = None
    n_paraphrases: int | None = None
    acc: float | None = None
    ci: tuple[float, float] | None = None
    n: int = 0
    recall: float | None = None
    k: int | None = None
    error: str | None = None
    per_question: dict = field(default_factory=dict)
    budget: dict | None = None  # the swept fine-tuning settings of its checkpoint (grid sweep:)
    training: dict | None = None  # its checkpoint's tokens, learning rate, epochs, held-out paraphrase loss
    retriever: str | None = None  # +RAG cells: the retriever (with its reranker), e.g. "bm25", "oracle"

    @property
    def label(self) -> str:
        """The table column: the arm without its paraphrase count (ft-par4+rag -> ft-par+rag)."""
        return parse_arm(self.arm)[0].name

    @property
    def row(self) -> tuple[str, str]:
        return (self.alias or self.task, self.model)


def load_entries(run: Path, seed: int = 0) -> tuple[dict, list[Entry]]:
    """(grid.json, entries) of the run folder ``run``; failed cells are entries with ``error``."""
    run = Path(run)
    grid = read_grid_json(run)
    entries = []
    for cell in grid["cells"]:
        state = read_cell(run / "cells" / cell["hash"], with_result=True)
        if state.status == "damaged":
            logger.warning("report: %s; the cell is left out (kinject grid evaluates it again)", state.problem)
        entry = Entry(experiment=cell["experiment"], model=cell["model"], arm=cell["arm"], task=cell["task"],
                      role=cell["role"], status=state.status or "pending", hash=cell["hash"],
                      n_paraphrases=cell.get("n_paraphrases"), budget=cell.get("budget"),
                      retriever=_retriever_label(cell.get("retrieval")),
                      error=state.problem if state.status == "damaged" else (state.meta or {}).get("error"))
        if entry.status == "done":
            result = state.result
            entry.alias, entry.num_fewshot, entry.acc, entry.n = (result["alias"], result["num_fewshot"],
                                                                  result["acc"], result["n"])
            entry.per_question = result["per_question"]
            entry.training = result.get("training")
            entry.ci = bootstrap_ci(entry.per_question["correct"], seed=seed)
            if result.get("retrieval"):
                entry.recall, entry.k = result["retrieval"]["recall"], result["retrieval"]["k"]
        entries.append(entry)
    if not any(e.status == "done" for e in entries):
        damaged = [e.error for e in entries if e.status == "damaged"]
        raise DataError(f"{run}: no finished cells yet ({len(entries)} planned; "
                        f"{sum(e.status == 'failed' for e in entries)} failed"
                        + (f"; {len(damaged)} damaged, e.g. {damaged[0]}; `kinject grid` evaluates them again"
                           if damaged else "") + ")")
    aliases = {e.task: e.alias for e in entries if e.alias}  # pending cells borrow their task's alias
    for e in entries:
        e.alias = e.alias or aliases.get(e.task, e.task)
    entries.sort(key=lambda e: (e.experiment, e.row, _arm_rank(e.arm)))
    return grid, entries


def _retriever_label(retrieval: dict | None) -> str | None:
    if not retrieval:
        return None
    name = retrieval.get("retriever", "bm25")
    return name + (f">{retrieval['rerank']}@{retrieval.get('rerank_depth', 10)}" if retrieval.get("rerank") else "")


def _arm_rank(arm: str) -> tuple[int, int]:
    kind, n = parse_arm(arm)
    return kind.order, n or 0


def forgetting(entries: list[Entry]) -> dict[tuple[str, str, str], dict]:
    """(experiment, model, FT arm) -> change on its control tasks vs the base model, same questions."""
    control = {(e.experiment, e.model, e.arm, e.task): e for e in entries if e.role == "control" and e.status == "done"}
    out: dict[tuple[str, str, str], dict] = {}
    for (experiment, model, arm, task), entry in control.items():
        base = control.get((experiment, model, "base", task))
        if arm == "base" or base is None:
            continue
        ours, theirs = align(entry.per_question, base.per_question)
        delta = (sum(ours) - sum(theirs)) / len(ours) if ours else float("nan")
        item = out.setdefault((experiment, model, arm), {"tasks": {}, "delta": 0.0})
        item["tasks"][task] = delta
        item["delta"] = sum(item["tasks"].values()) / len(item["tasks"])
    return out
