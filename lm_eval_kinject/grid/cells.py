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

from lm_eval_kinject.grid.config import Experiment, GridConfig

__all__ = ["Cell", "Checkpoint", "expand", "kb_hash", "arm_label", "ARM_ORDER"]

# Table 1 / Table 2 column order
ARM_ORDER = ("base", "base+rag", "ft", "ft-reg", "ft-par", "ft+rag", "ft-reg+rag", "ft-par+rag")


def _hash(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _source_identity(source: str) -> list:
    """Size and modification time of a source file, or of every file under a source folder."""
    path = Path(source)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [[str(f), f.stat().st_size, int(f.stat().st_mtime)] for f in files]


def kb_hash(config: GridConfig, name: str) -> str:
    spec = config.knowledge_bases[name]
    return _hash({"sources": [_source_identity(s) for s in spec.sources], "options": spec.options})


@dataclass(frozen=True)
class Checkpoint:
    """One fine-tuned model: base model + KB + paraphrase count + settings + seed."""

    model: str
    kb: str
    n_paraphrases: int
    paraphrases: str | None
    settings: tuple  # sorted (key, value) pairs of FinetuneConfig fields

    def identity(self, config: GridConfig) -> dict:
        return {"model": asdict(config.models[self.model]), "kb": kb_hash(config, self.kb),
                "n_paraphrases": self.n_paraphrases,
                "paraphrases": _source_identity(self.paraphrases) if self.paraphrases and self.n_paraphrases else None,
                "settings": dict(self.settings), "seed": config.seed}

    def hash(self, config: GridConfig) -> str:
        return _hash(self.identity(config))


@dataclass(frozen=True)
class Cell:
    experiment: str
    model: str
    arm: str  # as written in the config (ft-par arms carry their N: ft-par4)
    task: str
    role: str  # "main" or "control" (a task outside the KB: forgetting)
    limit: int | float | None
    kb: str | None = None  # retrieval KB, for +rag arms
    retrieval: tuple = ()
    checkpoint: Checkpoint | None = None

    @property
    def rag(self) -> bool:
        return self.arm.endswith("+rag")

    def identity(self, config: GridConfig) -> dict:
        return {"model": asdict(config.models[self.model]), "task": self.task, "limit": self.limit,
                "task_metadata": config.task_metadata, "seed": config.seed,
                "lm_eval": {k: config.lm_eval[k] for k in ("batch_size",)},
                "kb": kb_hash(config, self.kb) if self.rag else None,
                "retrieval": dict(self.retrieval) if self.rag else None,
                "checkpoint": self.checkpoint.hash(config) if self.checkpoint else None}

    def hash(self, config: GridConfig) -> str:
        return _hash(self.identity(config))

    def describe(self) -> dict:
        return {"experiment": self.experiment, "model": self.model, "arm": self.arm, "task": self.task,
                "role": self.role, "limit": self.limit, "kb": self.kb, "retrieval": dict(self.retrieval) or None,
                "n_paraphrases": self.checkpoint.n_paraphrases if self.checkpoint else None}


def arm_label(arm: str) -> str:
    """The column an arm goes in: ft-par4 -> ft-par, ft-par4+rag -> ft-par+rag."""
    name, rag = arm.removesuffix("+rag"), arm.endswith("+rag")
    if name.startswith("ft-par"):
        name = "ft-par"
    return name + ("+rag" if rag else "")


def _checkpoint(config: GridConfig, experiment: Experiment, model: str, n: int) -> Checkpoint:
    return Checkpoint(model=model, kb=experiment.kb, n_paraphrases=n,
                      paraphrases=experiment.paraphrases if n else None,
                      settings=tuple(sorted(experiment.finetune.items())))


def expand(config: GridConfig) -> list[Cell]:
    """Every cell of the grid, in run order: by model, then by checkpoint, so a model loads once."""
    cells: list[Cell] = []
    for experiment in config.experiments.values():
        retrieval = tuple(sorted(experiment.retrieval.items()))
        for model in config.models:
            fine_tuned: dict[str, Checkpoint | None] = {"base": None}
            for arm in experiment.arms:
                name = arm.removesuffix("+rag")
                if name in ("ft", "ft-reg"):
                    fine_tuned[name] = _checkpoint(config, experiment, model, 0)
                elif name == "ft-par":
                    ns = experiment.n_paraphrases if arm == "ft-par" else experiment.n_paraphrases[-1:]
                    for n in ns:
                        fine_tuned[f"ft-par{n}"] = _checkpoint(config, experiment, model, n)
            for arm in experiment.arms:
                name, suffix = arm.removesuffix("+rag"), "+rag" if arm.endswith("+rag") else ""
                names = ([f"ft-par{n}" for n in experiment.n_paraphrases] if arm == "ft-par"
                         else [f"ft-par{experiment.n_paraphrases[-1]}"] if arm == "ft-par+rag" else [name])
                for variant in names:
                    for task in experiment.tasks:
                        cells.append(Cell(experiment.name, model, variant + suffix, task, "main", experiment.limit,
                                          experiment.kb if suffix else None, retrieval if suffix else (),
                                          fine_tuned[variant]))
            for variant, checkpoint in fine_tuned.items():
                for task in experiment.control_tasks:
                    cells.append(Cell(experiment.name, model, variant, task, "control", experiment.limit,
                                      checkpoint=checkpoint))
    # a model loads once: its base cells, then each checkpoint's cells (without, then with retrieval)
    return sorted(cells, key=lambda c: (list(config.models).index(c.model), c.checkpoint is not None,
                                        str(c.checkpoint), c.rag))
