"""Run a grid: build each KB and checkpoint once, evaluate every cell through lm-eval, resumably.

    OUT/grid.json                  the resolved config, seed, library versions (rewritten on each run)
    OUT/kb/NAME-HASH/              knowledge bases (kinject kb build)
    OUT/checkpoints/HASH/          fine-tuned models (kinject finetune; resumed if interrupted)
    OUT/cells/HASH/cell.json       what the cell is and its status: done | failed (with the error)
    OUT/cells/HASH/result.json     accuracy, per-question correctness, retrieval recall, lm-eval results
    OUT/cells/HASH/samples.jsonl   lm-eval's logged samples (prompts, per-option log-likelihoods)

A cell folder appears only when complete (written beside and renamed), so a killed grid re-run
skips every finished cell and recomputes nothing else twice: KBs are reused, a checkpoint resumes
from its last saved step. A cell that raises is recorded as failed and the grid goes on; a re-run
tries it again.
"""
from __future__ import annotations

import json
import logging
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lm_eval_kinject.arms import ARMS, checkpoint_args
from lm_eval_kinject.artifacts import atomic_dir, library_versions, write_json_atomic
from lm_eval_kinject.grid.cells import Cell, Checkpoint, expand, kb_hash
from lm_eval_kinject.grid.config import GridConfig
from lm_eval_kinject.grid.subsets import question_ids
from lm_eval_kinject.run_folder import read_cell

logger = logging.getLogger(__name__)

__all__ = ["run_grid", "GridRun", "cell_status", "check_tasks", "training_summary"]


@dataclass
class GridRun:
    out: Path
    done: list[str] = field(default_factory=list)  # cell hashes evaluated in this run
    skipped: list[str] = field(default_factory=list)  # finished before this run
    failed: list[str] = field(default_factory=list)
    derived: list[str] = field(default_factory=list)  # read off a finished cell on every question (grid/subsets.py)
    seconds: float = 0.0


def cell_status(folder: Path) -> str | None:
    """"done", "failed", "damaged" (a file unreadable: run again) or None (never started)."""
    state = read_cell(folder)
    if state.status == "damaged":
        logger.warning("grid: %s; the cell will be evaluated again", state.problem)
    return state.status


def check_models(config: GridConfig) -> None:
    """Every model's arguments are arguments of the configured backend, and fine-tuned arms can be loaded by it."""
    from lm_eval_kinject.backends import get_backend, model_class
    from lm_eval_kinject.errors import ConfigError, did_you_mean

    backend = config.lm_eval["backend"]
    valid = set(model_class(backend).valid_model_args())
    problems = [f"models.{name}.{key}: not a {get_backend(backend).model} argument{did_you_mean(key, sorted(valid))}"
                for name, spec in config.models.items() for key in spec.model_args if key not in valid]
    if not get_backend(backend).loads_checkpoints:
        fine_tuned = sorted({arm for e in config.experiments.values() for arm in e.arms if ARMS[arm].fine_tuned})
        if fine_tuned:
            problems.append(f"lm_eval.backend: {backend!r} evaluates the served model only; arms {fine_tuned} need "
                            "a fine-tuned checkpoint loaded (backend hf or vllm)")
    if problems:
        raise ConfigError(f"{config.path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))


def check_tasks(config: GridConfig) -> None:
    """Every task the grid names exists in lm-eval (with this package's tasks registered)."""
    from lm_eval_kinject.errors import ConfigError, did_you_mean
    from lm_eval_kinject.registration import task_manager

    known = set(task_manager(config.task_metadata).all_tasks)
    problems = [f"experiments.{e.name}: unknown task {t!r}{did_you_mean(t, known)}"
                for e in config.experiments.values() for t in (*e.tasks, *e.control_tasks) if t not in known]
    if problems:
        raise ConfigError(f"{config.path}: " + "; ".join(problems) + " (`kinject tasks` lists this package's tasks)")


def _write_grid_json(config: GridConfig, out: Path, cells: list[Cell]) -> None:
    from lm_eval_kinject import __version__

    write_json_atomic(out / "grid.json", {
        "config": config.to_dict(), "seed": config.seed, "experiment_order": list(config.experiments), "kinject": __version__, "libraries": library_versions(),
        "cells": [{**c.describe(), "hash": c.hash(config)} for c in cells]})


class _Resources:
    """KBs, checkpoints and the one loaded model, made on first use and kept for later cells."""

    def __init__(self, config: GridConfig, out: Path) -> None:
        self.config, self.out = config, out
        self.kbs: dict[str, object] = {}
        self.loaded: tuple | None = None  # (key, lm)
        self.errors: dict[str, str] = {}  # checkpoint hash -> why it could not be trained

    def kb(self, name: str):
        from lm_eval_kinject.faults import folder_lock
        from lm_eval_kinject.kb import KnowledgeBase, is_kb

        if name not in self.kbs:
            folder = self.out / "kb" / f"{name}-{kb_hash(self.config, name)}"
            if not is_kb(folder):
                with folder_lock(folder, "kinject grid, building this KB", wait=True,  # a --models neighbour's
                                 lock_dir=self.out / ".locks"):
                    if not is_kb(folder):
                        self._build_kb(name, folder)
            self.kbs[name] = KnowledgeBase.load(folder)
        return self.kbs[name]

    def _build_kb(self, name: str, folder: Path) -> None:
        from lm_eval_kinject.corpus import only_chunks_of, read_sources
        from lm_eval_kinject.kb import KBConfig, build_kb

        spec = self.config.knowledge_bases[name]
        logger.info("grid: building knowledge base %s -> %s", name, folder)
        documents = read_sources(spec.sources)
        if spec.only_chunks_of:
            documents = only_chunks_of(documents, spec.only_chunks_of)
        sources = list(spec.sources) + ([f"only chunks of {spec.only_chunks_of}"] if spec.only_chunks_of else [])
        build_kb(documents, folder, KBConfig.from_options(**spec.options), sources=sources,
                 overwrite=True)

    def checkpoint(self, checkpoint: Checkpoint) -> Path:
        from lm_eval_kinject.finetune import FinetuneConfig, finetune

        key = checkpoint.hash(self.config)
        if key in self.errors:
            raise RuntimeError(f"checkpoint {key} could not be trained: {self.errors[key]}")
        folder = self.out / "checkpoints" / key
        model = self.config.models[checkpoint.model]
        ft = FinetuneConfig(kb=str(self.kb(checkpoint.kb).path), out=str(folder), model=model.pretrained,
                            gguf_file=model.model_args.get("gguf_file"), seed=self.config.seed,
                            **checkpoint.finetune_settings())
        try:
            # finished: returns at once; interrupted: resumes. The run folder's lock covers it (--models shares
            # never train the same checkpoint: checkpoints are per model)
            finetune(ft, resume=True, lock=False)
        except Exception as error:
            self.errors[key] = f"{type(error).__name__}: {error}"
            raise
        write_json_atomic(folder / "kinject_grid_checkpoint.json", checkpoint.identity(self.config))
        return folder

    def model(self, cell: Cell):
        """The kinject-rag model of ``cell`` (the base model or its checkpoint), loaded once."""
        from lm_eval_kinject.backends import model_class

        key = (cell.model, cell.checkpoint)
        if self.loaded and self.loaded[0] == key:
            return self.loaded[1]
        self.loaded = None  # free the previous model before loading the next
        spec = self.config.models[cell.model]
        args = {"pretrained": spec.pretrained, **spec.model_args}
        if cell.checkpoint is not None:
            settings = dict(cell.checkpoint.settings)
            args = checkpoint_args(args, str(self.checkpoint(cell.checkpoint)), settings.get("method", "full"),
                                   settings.get("merge", False), backend=self.config.lm_eval["backend"],
                                   lora_r=settings.get("lora_r", 16))
        lm_eval = self.config.lm_eval
        device = {"device": lm_eval["device"]} if lm_eval["backend"] == "hf" else {}
        lm = model_class(lm_eval["backend"])(batch_size=lm_eval["batch_size"], **device, **args)
        self.loaded = (key, lm)
        return lm


def _evaluate(cell: Cell, resources: _Resources, config: GridConfig) -> tuple[dict, list[dict]]:
    from lm_eval import simple_evaluate

    from lm_eval_kinject.registration import task_manager
    from lm_eval_kinject.retrieval import RetrieverConfig

    lm = resources.model(cell)
    retrieval = dict(cell.retrieval)
    lm.set_retrieval(resources.kb(cell.kb) if cell.rag else None, k=retrieval.get("k", 3),
                     retriever=RetrieverConfig.from_mapping(retrieval), template=retrieval.get("template", "plain"),
                     query_with_options=bool(retrieval.get("query_with_options", False)))
    cache_before = Counter(getattr(lm, "prefix_cache_stats", {}))
    seed = config.seed
    out = simple_evaluate(model=lm, tasks=[cell.task], limit=cell.limit, log_samples=True, bootstrap_iters=0,
                          task_manager=task_manager({**config.task_metadata, **dict(cell.task_metadata)}),
                          random_seed=seed,
                          numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    if cell.task not in out["results"]:
        raise RuntimeError(f"lm-eval returned no results for {cell.task!r} (a group? name one task)")
    metrics = out["results"][cell.task]
    samples = out["samples"][cell.task]
    records = [r for r in lm.retrieval_records if r["task"] == cell.task]
    gold = [r["gold_retrieved"] for r in records if r["gold_retrieved"] is not None]
    by_doc = {r["doc_id"]: r["gold_retrieved"] for r in records}
    result = {
        "acc": metrics["acc,none"], "acc_stderr": metrics.get("acc_stderr,none"), "acc_norm": metrics.get("acc_norm,none"),
        "n": len(samples), "alias": metrics.get("alias", cell.task),
        "num_fewshot": out["configs"][cell.task].get("num_fewshot"),
        "per_question": {"doc_id": [s["doc_id"] for s in samples], "correct": [float(s["acc"]) for s in samples]},
        "retrieval": ({"k": retrieval.get("k"), "retriever": retrieval.get("retriever"),
                       "recall": sum(gold) / len(gold) if gold else None, "n": len(gold)} if cell.rag else None),
        "prefix_cache": dict(Counter(getattr(lm, "prefix_cache_stats", {})) - cache_before),
        "lm_eval": {key: out.get(key) for key in ("results", "configs", "versions", "n-samples", "config")},
    }
    ids = question_ids(samples)
    if ids is not None:  # pairs this cell with cells of other experiments (a held-out part renumbers doc_id)
        result["per_question"]["question_id"] = ids
    if cell.rag:  # per question, so that a cell on a part of these questions can be read off this one
        result["per_question"]["gold_retrieved"] = [by_doc.get(s["doc_id"]) for s in samples]
    if cell.checkpoint is not None:
        result["training"] = training_summary(resources.out / "checkpoints" / cell.checkpoint.hash(config))
    return result, samples


def training_summary(folder: Path) -> dict | None:
    """A checkpoint's budget as the report draws it: training tokens (tokens per epoch x epochs), learning rate,
    epochs and its last held-out paraphrase loss (None without paraphrases); None if the folder has no record."""
    from lm_eval_kinject.finetune.outdir import RESULT_FILE

    try:
        meta = json.loads((Path(folder) / RESULT_FILE).read_text(encoding="utf-8"))
        evals = meta["training"]["validation"]
        return {"tokens": round(meta["data"]["train_tokens_per_epoch"] * (meta["training"]["epochs"] or 0)),
                "epochs": meta["epochs"], "learning_rate": meta["learning_rate"],
                "validation_loss": evals[-1]["eval_loss"] if evals else None}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _derived(cell: Cell, config: GridConfig, out: Path) -> tuple[tuple[dict, list[dict]], str] | None:
    """``cell``'s result read off the finished cell that scored all its questions, and that cell's hash; or None."""
    from lm_eval_kinject.grid.subsets import derive, parent_cell

    parent = parent_cell(cell, config.task_metadata)
    if parent is None:
        return None
    key = parent.hash(config)
    derived = derive(cell, out / "cells" / key, key)
    return (derived, key) if derived is not None else None


def _write_cell(folder: Path, meta: dict, result: dict | None = None, samples: list[dict] | None = None) -> None:
    from lm_eval.utils import handle_non_serializable

    with atomic_dir(folder) as tmp:
        (tmp / "cell.json").write_text(json.dumps(meta, indent=1, default=handle_non_serializable), encoding="utf-8")
        if result is not None:
            (tmp / "result.json").write_text(json.dumps(result, default=handle_non_serializable), encoding="utf-8")
        if samples is not None:
            with open(tmp / "samples.jsonl", "w", encoding="utf-8") as fh:
                for sample in samples:
                    fh.write(json.dumps(sample, default=handle_non_serializable, ensure_ascii=False) + "\n")


def run_grid(config: GridConfig, out: Path, show_progress: bool = True, retry_failed: bool = True,
             models: list[str] | None = None, experiments: list[str] | None = None, wait: bool = False) -> GridRun:
    """Run every unfinished cell of ``config`` under ``out`` (see the module docstring).

    ``models``: run only these models' cells; ``experiments``: only these experiments' cells (the cheap ones
    first, say). ``grid.json`` still lists every cell, so the report covers them all (the others as pending).
    One process at a time per run folder (or per ``models`` share of it, so one process per GPU can each run
    their own models): another one refuses (``FolderBusyError``) or, with ``wait``, waits. A full disk stops
    the run with ``DiskFullError``; the finished cells are kept.
    """
    from lm_eval_kinject.faults import folder_lock

    part = "models-" + "+".join(sorted(models)) if models else None
    with folder_lock(Path(out), "kinject grid", wait=wait, part=part):
        return _run_grid(config, Path(out), show_progress, retry_failed, models, experiments)


def _run_grid(config: GridConfig, out: Path, show_progress: bool, retry_failed: bool, models: list[str] | None,
              experiments: list[str] | None) -> GridRun:
    from tqdm import tqdm

    from lm_eval_kinject.errors import ConfigError, did_you_mean
    from lm_eval_kinject.faults import DiskFullError, disk_full, disk_full_error

    for option, names, known in (("--models", models, config.models), ("--experiments", experiments,
                                                                        config.experiments)):
        for name in names or ():
            if name not in known:
                raise ConfigError(f"{option} {name!r}: not in {config.path}{did_you_mean(name, known)}; "
                                  f"valid: {', '.join(known)}")
    check_models(config)
    check_tasks(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells = expand(config)
    _write_grid_json(config, out, cells)
    cells = [c for c in cells if (not models or c.model in models) and (not experiments or c.experiment in experiments)]
    run, started = GridRun(out), time.perf_counter()
    todo = []
    for cell in cells:
        key = cell.hash(config)
        status = cell_status(out / "cells" / key)
        if status == "done" or (status == "failed" and not retry_failed) or key in {k for _, k in todo}:
            run.skipped.append(key)
        else:
            todo.append((cell, key))
    resources = _Resources(config, out)
    with tqdm(total=len(cells), initial=len(run.skipped), disable=not show_progress, unit="cell",
              desc="grid") as bar:
        for cell, key in todo:
            bar.set_postfix_str(f"{cell.model} {cell.arm} {cell.task}")
            meta = {**cell.describe(), "hash": key, "identity": cell.identity(config)}
            cell_started = time.perf_counter()
            derived = _derived(cell, config, out)
            if derived is not None:
                (result, samples), parent = derived
                meta.update(status="done", seconds=round(time.perf_counter() - cell_started, 1), derived_from=parent)
                _write_cell(out / "cells" / key, meta, result, samples)
                run.done.append(key)
                run.derived.append(key)
                bar.update(1)
                continue
            try:
                result, samples = _evaluate(cell, resources, config)
            except KeyboardInterrupt:
                raise
            except Exception as error:  # noqa: BLE001 - recorded, reported, retried on the next run
                if isinstance(error, DiskFullError):  # says which file and how much it needs
                    raise
                if disk_full(error):  # every later cell would fail too, and so would recording this one
                    raise disk_full_error(out, f"cell {key} ({cell.model} {cell.arm} {cell.task})") from None
                logger.error("grid: cell %s (%s %s %s) failed: %s", key, cell.model, cell.arm, cell.task, error)
                _write_cell(out / "cells" / key, {**meta, "status": "failed", "error": f"{type(error).__name__}: {error}",
                                                  "traceback": traceback.format_exc()[-4000:]})
                run.failed.append(key)
            else:
                meta.update(status="done", seconds=round(time.perf_counter() - cell_started, 1))
                try:
                    _write_cell(out / "cells" / key, meta, result, samples)
                except OSError as error:
                    if disk_full(error):
                        raise disk_full_error(out, f"the results of cell {key}") from None
                    raise
                run.done.append(key)
            bar.update(1)
    run.seconds = time.perf_counter() - started
    return run
