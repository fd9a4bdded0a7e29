"""A grid's cells: one (experiment, model, arm, task) each, named by a hash of what decides its result.

A cell's hash covers the model, the task and its data settings, the limit, the retrieval settings
and KB (for +RAG arms), the fine-tuning settings and data (for FT arms) and the seed; renaming an
experiment or reordering a config does not change it, so finished cells are found again. KBs and
checkpoints are named the same way and shared by every cell that needs them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from lm_eval_kinject.arms import ARMS, Arm, parse_arm, variant
from lm_eval_kinject.artifacts import sha256_file
from lm_eval_kinject.grid.config import Experiment, GridConfig

__all__ = ["Cell", "Checkpoint", "expand", "kb_hash"]


def _hash(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256, so one process hashes a file once


def _digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)[:16]
    return _DIGESTS[key]


def _source_identity(source: str) -> list:
    """Name, size and content hash of a source file, or of every file under a source folder.

    By content, not by modification time or folder: a copy of the data on another machine, a fresh clone or a
    re-extracted archive keeps its finished cells; an edited file re-runs them."""
    path = Path(source)
    if path.is_dir():
        return [[str(f.relative_to(path)), f.stat().st_size, _digest(f)]
                for f in sorted(p for p in path.rglob("*") if p.is_file())]
    return [[path.name, path.stat().st_size, _digest(path)]]


def kb_hash(config: GridConfig, name: str) -> str:
    spec = config.knowledge_bases[name]
    identity = {"sources": [_source_identity(s) for s in spec.sources], "options": spec.options}
    if spec.only_chunks_of:  # absent otherwise, so KBs built before the option keep their names
        identity["only_chunks_of"] = _source_identity(spec.only_chunks_of)
    return _hash(identity)


@dataclass(frozen=True)
class Checkpoint:
    """One fine-tuned model: base model + KB + training data (paraphrases, QA split) + settings + seed."""

    model: str
    kb: str
    n_paraphrases: int
    paraphrases: str | None
    settings: tuple  # sorted (key, value) pairs of FinetuneConfig fields
    qa: str | None = None  # mixed training: the questions file and the split whose train part is trained on
    qa_split: tuple = ()  # sorted (key, value) pairs of the QuestionSplit
    practice: tuple = ()  # (questions, documents): practice QA about other documents, or ()

    def identity(self, config: GridConfig) -> dict:
        identity = {"model": asdict(config.models[self.model]), "kb": kb_hash(config, self.kb),
                    "n_paraphrases": self.n_paraphrases,
                    "paraphrases": _source_identity(self.paraphrases) if self.paraphrases and self.n_paraphrases
                    else None, "settings": dict(self.settings), "seed": config.seed}
        if self.paraphrases and not self.n_paraphrases:  # validation only (a sweep); absent otherwise: names kept
            identity["validation_paraphrases"] = _source_identity(self.paraphrases)
        if self.qa:  # absent otherwise, so checkpoints made before mixed training keep their names
            identity["qa"] = {"questions": _source_identity(self.qa), "split": dict(self.qa_split)}
        if self.practice:
            identity["practice"] = [_source_identity(p) for p in self.practice]
        return identity

    def hash(self, config: GridConfig) -> str:
        return _hash(self.identity(config))

    def finetune_settings(self) -> dict:
        """The FinetuneConfig fields this checkpoint sets beyond the grid's settings."""
        split = dict(self.qa_split)
        qa = {"qa": self.qa, "qa_train_fraction": split["train_fraction"], "qa_split_seed": split["seed"],
              **({"qa_split_swap": True} if split.get("swap") else {})} if self.qa else {}
        if self.practice:
            qa.update(qa_practice=self.practice[0], qa_practice_chunks=self.practice[1])
        return {**dict(self.settings), "paraphrases": self.paraphrases, "n_paraphrases": self.n_paraphrases, **qa}


@dataclass(frozen=True)
class Cell:
    experiment: str
    model: str
    arm: str  # the arm variant (arms.variant): ft-par arms carry their N, as in ft-par4+rag
    task: str
    role: str  # "main" or "control" (a task outside the KB: forgetting)
    limit: int | float | None
    kb: str | None = None  # retrieval KB, for +rag arms
    retrieval: tuple = ()
    checkpoint: Checkpoint | None = None
    task_metadata: tuple = ()  # the experiment's additions to the grid's lm-eval metadata (the held-out split)
    budget: tuple = ()  # the swept fine-tuning settings of its checkpoint, sorted (key, value) pairs; () without

    @property
    def rag(self) -> bool:
        return parse_arm(self.arm)[0].rag

    def identity(self, config: GridConfig) -> dict:
        identity = {"model": asdict(config.models[self.model]), "task": self.task, "limit": self.limit,
                    "task_metadata": config.task_metadata, "seed": config.seed,
                    "lm_eval": {k: config.lm_eval[k] for k in ("batch_size",)},
                    "kb": kb_hash(config, self.kb) if self.rag else None,
                    "retrieval": dict(self.retrieval) if self.rag else None,
                    "checkpoint": self.checkpoint.hash(config) if self.checkpoint else None}
        if self.task_metadata:
            identity["task_metadata"] = {**config.task_metadata, **dict(self.task_metadata)}
        return identity

    def hash(self, config: GridConfig) -> str:
        return _hash(self.identity(config))

    def describe(self) -> dict:
        return {"experiment": self.experiment, "model": self.model, "arm": self.arm, "task": self.task,
                "role": self.role, "limit": self.limit, "kb": self.kb, "retrieval": dict(self.retrieval) or None,
                "n_paraphrases": self.checkpoint.n_paraphrases if self.checkpoint else None,
                "question_split": dict(self.task_metadata) or None, "budget": dict(self.budget) or None}


def _paraphrase_counts(arm: Arm, experiment: Experiment) -> list[int | None]:
    """The paraphrase counts ``arm`` stands for in ``experiment`` (None: no paraphrases)."""
    counts = list(experiment.n_paraphrases)
    if arm.paraphrase_counts == "each":
        return counts
    if arm.paraphrase_counts == "largest" and counts:
        return counts[-1:]
    return [None]


def _checkpoint(experiment: Experiment, model: str, arm: Arm, n: int | None, budget: dict) -> Checkpoint | None:
    if not arm.fine_tuned:
        return None
    qa = arm.uses_qa_data
    # a swept FT-reg reads the paraphrase file too, for its held-out paraphrases only: the budget's validation loss
    return Checkpoint(model=model, kb=experiment.train_kb or experiment.kb, n_paraphrases=n or 0,
                      paraphrases=experiment.paraphrases if n or experiment.sweep else None,
                      settings=tuple(sorted({**experiment.finetune, **budget, **dict(arm.recipe)}.items())),
                      qa=experiment.qa if qa else None,
                      qa_split=tuple(sorted(experiment.qa_split.identity().items())) if qa and experiment.qa else (),
                      practice=(experiment.qa_practice, experiment.qa_practice_chunks)
                      if qa and experiment.qa_practice else ())


def expand(config: GridConfig) -> list[Cell]:
    """Every cell of the grid, in run order: by model, then by checkpoint, so a model loads once."""
    cells: list[Cell] = []
    for experiment in config.experiments.values():
        retrieval = tuple(sorted(experiment.retrieval.items()))
        main_metadata = tuple(sorted(experiment.task_metadata("main").items()))
        for model in config.models:
            # by (the variant without +rag, its budget)
            checkpoints: dict[tuple, Checkpoint | None] = {("base", ()): None}
            for arm in (ARMS[name] for name in experiment.arms):
                for n in _paraphrase_counts(arm, experiment):
                    for budget in experiment.budgets() if arm.fine_tuned else [{}]:
                        key = (variant(ARMS[arm.stem], n), tuple(sorted(budget.items())))
                        checkpoints.setdefault(key, _checkpoint(experiment, model, arm, n, budget))
                        for task in experiment.tasks:
                            cells.append(Cell(experiment.name, model, variant(arm, n), task, "main",
                                              experiment.limit, experiment.kb if arm.rag else None,
                                              retrieval if arm.rag else (), checkpoints[key], main_metadata,
                                              key[1]))
            for (stem, budget), checkpoint in checkpoints.items():
                for task in experiment.control_tasks:
                    cells.append(Cell(experiment.name, model, stem, task, "control", experiment.limit,
                                      checkpoint=checkpoint, budget=budget))
    # a model loads once: its base cells, then each checkpoint's cells (without, then with retrieval); a cell
    # on a part of the questions comes after the cell on all of them, which it may be read off (grid/subsets.py)
    return sorted(cells, key=lambda c: (list(config.models).index(c.model), c.checkpoint is not None,
                                        str(c.checkpoint), c.rag, bool(c.task_metadata)))
