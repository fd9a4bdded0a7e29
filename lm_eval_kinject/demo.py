"""``kinject demo``: the paper's comparison on a fictional world, offline, on the embedded defaults — as a grid.

world -> a grid config (``OUT/demo.yaml``) -> ``run_grid`` (KB, fine-tuned checkpoints, every cell
through lm-eval) -> ``write_report`` (tables with intervals, Figure 4, paired tests, known vs
unknown) into ``OUT``. Nothing here loads, trains or scores a model: the grid does, exactly as
``kinject grid OUT/demo.yaml --out OUT`` would (same cells, same hashes), so the demo resumes like
any grid and its config is a starting point for your own.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from lm_eval_kinject.arms import ARMS
from lm_eval_kinject.errors import ConfigError
from lm_eval_kinject.fictional import SLOTS, FictionalConfig, write_world
from lm_eval_kinject.retrieval import DEFAULT_RETRIEVER

logger = logging.getLogger(__name__)

__all__ = ["DemoConfig", "demo_grid", "run_demo", "with_options", "TASK", "EXPERIMENT", "CONTROL_TASK"]

TASK = "kinject_fictional_cloze"  # the 135M model is at chance on lettered questions even with the answer shown
EXPERIMENT = "fictional"
CONTROL_TASK = "kinject_mmlu_cloze_anatomy_0shot"  # forgetting: general knowledge outside the world
# ft-raft rather than ft-mix by default: on the default world it answers closed-book at least as well as FT-par and,
# with RAG, as RAG does, where ft-mix loses to both (docs/demo.md); --arms adds ft-mix (its cells are reused on a re-run).
# ft-ctl, FT-RAFT's documents without its QA pairs, tells what the pairs add from what more text adds.
DEFAULT_ARMS = ("base", "base+rag", "ft-reg", "ft-par", "ft-raft", "ft-ctl", "ft-reg+rag", "ft-par+rag", "ft-raft+rag")


@dataclass(frozen=True)
class DemoConfig:
    """The demo's sizes and recipe; the defaults are the measured ones (docs/demo.md)."""

    out: Path = Path("runs/demo")
    # Every fact of an event is asked: five questions per chunk cost no training and give the paired
    # tests their power. FT-RAFT / FT-mix learn to answer from the QA of 30 practice events (150 pairs,
    # never in the KB, never scored), so every arm is scored on every question of the world.
    world: FictionalConfig = field(default_factory=lambda: FictionalConfig(events=20, paraphrases=11,
                                                                           asked=tuple(SLOTS), practice_events=30))
    model: str = "smollm2-135m"
    arms: tuple[str, ...] = DEFAULT_ARMS
    n_paraphrases: tuple[int, ...] = (3,)  # ascending; several give the paper's Figure 4
    finetune: dict = field(default_factory=lambda: {
        "method": "full",
        # The paper's setting: the same epochs for every arm, so FT-par reads each fact 1 + N times as
        # often as FT-reg (`fact_passes` gives equal budgets instead; see docs/demo.md for both).
        "epochs": 4.0,
        # A small world is memorised in a few epochs only at a rate well above continued pre-training's 5e-5.
        "learning_rate": 5e-4,
        # Chunks are ~80 tokens: short blocks give enough optimiser steps.
        "block_size": 128, "batch_size": 4, "logging_steps": 5, "save_steps": 50})
    retriever: str = DEFAULT_RETRIEVER
    k: int = 1
    # lm-eval's batch of the HF model: 32 scores a fictional cell in 20 s instead of 25 (anatomy 38 s instead of 43;
    # 64 is slower again) on 2 CPU cores, same answers
    batch_size: int = 32
    limit: int | None = None  # questions evaluated per cell (None: all)
    control_tasks: tuple[str, ...] | None = None  # None: the MMLU anatomy cloze task when MMLU data is at hand
    seed: int = 0
    # A world made elsewhere instead of generating one: a world folder (`kinject fictional generate`), its dataset
    # folder (`kinject export`) or a Hub dataset id; ``world``'s settings are then unused.
    world_source: str | None = None

    def __post_init__(self) -> None:
        problems = []
        most = max(self.n_paraphrases, default=0)
        if most + 1 > self.world.paraphrases and self.world_source is None:
            problems.append(f"--n-paraphrases {most} needs a world with at least {most + 1} paraphrases per chunk "
                            f"(one is held out for validation); it has {self.world.paraphrases}")
        if any(n < 1 for n in self.n_paraphrases):
            problems.append(f"--n-paraphrases {list(self.n_paraphrases)}: expected positive counts (0 is FT-reg)")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            problems.append(f"--arms {','.join(unknown)}: unknown; valid: {', '.join(ARMS)}")
        if self.k < 1:
            problems.append(f"k={self.k}: expected a positive integer")
        asking = [a for a in self.arms if a in ARMS and ARMS[a].uses_qa_data]
        if asking and not self.world.practice_events and self.world_source is None:
            what = "the QA pairs (ft-ctl: the documents)" if "ft-ctl" in asking else "the QA pairs"
            problems.append(f"--arms {','.join(asking)}: train on {what} of practice events; "
                            "--practice-events 0 gives them none (use 4 or more)")
        if problems:
            raise ConfigError("kinject demo: " + "; ".join(problems))

    @classmethod
    def quick(cls, **overrides) -> DemoConfig:
        """A smaller version: 8 events (12 practice events), FT-reg, FT-par (N = 2) and FT-RAFT, 3 epochs, no
        FT+RAG and no control task (unless one is asked for)."""
        world = FictionalConfig(seed=overrides.get("seed", 0), events=8, paraphrases=3, asked=tuple(SLOTS),
                                practice_events=12)
        finetune = {**cls().finetune, "epochs": 3.0}
        return cls(**{"world": world, "n_paraphrases": (2,), "finetune": finetune, "control_tasks": (),
                      "arms": ("base", "base+rag", "ft-reg", "ft-par", "ft-raft"), **overrides})


def _control_tasks(config: DemoConfig) -> tuple[str, ...]:
    if config.control_tasks is not None:
        return config.control_tasks
    from lm_eval_kinject.questions import MMLU_DIR_ENV

    online = os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false")
    if os.environ.get(MMLU_DIR_ENV) or online:
        return (CONTROL_TASK,)
    logger.warning("no control task (forgetting is not measured): set %s to a local MMLU folder, or pass "
                   "--control-task", MMLU_DIR_ENV)
    return ()


def demo_grid(config: DemoConfig, world: Path) -> dict:
    """The grid config of the demo, as the mapping a YAML file would hold (paths absolute).

    One experiment, ``fictional``: the paper's Table 2 and Figure 4, and mixed training beside them,
    every arm scored on every question. The arms that train on QA pairs (FT-RAFT, FT-mix) take them
    from the world's practice events (``qa_practice``), whose facts no question asks. ``world`` is the world's
    JSONL folder; a ``config.world_source`` that is a dataset (folder or Hub id) is named in the config instead,
    so the config reads the dataset as given.
    """
    from lm_eval_kinject.hub_data import is_dataset
    from lm_eval_kinject.questions import MMLU_DIR_ENV

    world = Path(world).resolve()
    source = config.world_source
    if source is not None and Path(source).expanduser().exists():
        source = str(Path(source).expanduser().resolve())
    dataset = source if source is not None and is_dataset(source) else None

    def data(file: str) -> str:  # one file of the world, or the dataset that holds it
        return dataset or str(world / file)

    metadata = {"fictional_dir": dataset or str(world)}
    if os.environ.get(MMLU_DIR_ENV):
        metadata["mmlu_dir"] = str(Path(os.environ[MMLU_DIR_ENV]).resolve())
    arms = [ARMS[a] for a in config.arms]
    common = {"tasks": [TASK], "kb": "world", "control_tasks": list(_control_tasks(config))}
    if config.n_paraphrases and any(a.paraphrase_counts != "none" for a in arms):
        common.update(paraphrases=data("paraphrases.jsonl"), n_paraphrases=list(config.n_paraphrases))
    if config.limit is not None:
        common["limit"] = config.limit
    title = (f"Fictional world ({config.world.events} events, seed {config.world.seed})" if source is None
             else f"Fictional world from {source}")
    experiment = {"title": title, "arms": [a.name for a in arms], **common}
    if any(a.uses_qa_data for a in arms):
        experiment.update(qa_practice=data("practice_questions.jsonl"),
                          qa_practice_chunks=data("practice_chunks.jsonl"))
    experiments = {EXPERIMENT: experiment}
    return {"seed": config.seed,
            "models": {config.model: {"pretrained": config.model}},
            "knowledge_bases": {"world": {"sources": [data("chunks.jsonl")]}},
            "task_metadata": metadata,
            "retrieval": {"retriever": config.retriever, "k": config.k},
            "finetune": dict(config.finetune),
            "lm_eval": {"batch_size": config.batch_size, "device": "cpu"},
            "experiments": experiments}


def _given_world(config: DemoConfig) -> Path:
    """``config.world_source`` as a JSONL world folder, checked against what the arms need (one line each)."""
    from lm_eval_kinject.hub_data import data_folder
    from lm_eval_kinject.records import read_jsonl

    source = config.world_source
    folder = data_folder(source, what="--world")
    problems = []
    for file in ("chunks.jsonl", "questions.jsonl"):
        if not (folder / file).is_file():
            problems.append(f"no {file}")
    arms = [ARMS[a] for a in config.arms]
    most = max(config.n_paraphrases, default=0)
    if any(a.paraphrase_counts != "none" for a in arms) and most:
        path = folder / "paraphrases.jsonl"
        counts = [len(r["paraphrases"]) for _, r in read_jsonl(path, {"chunk_id": str, "paraphrases": list})] \
            if path.is_file() else []
        if not counts or min(counts) < most + 1:
            has = f"as few as {min(counts)}" if counts else "none"
            problems.append(f"--n-paraphrases {most} needs at least {most + 1} paraphrases per chunk (one is held "
                            f"out for validation); the world has {has}")
    asking = [a.name for a in arms if a.uses_qa_data]
    missing = [f for f in ("practice_questions.jsonl", "practice_chunks.jsonl") if not (folder / f).is_file()]
    if asking and missing:
        problems.append(f"--arms {','.join(asking)} train on practice events; the world has no {' or '.join(missing)} "
                        "(generate it with --practice-events, or leave those arms out with --arms)")
    if problems:
        raise ConfigError(f"kinject demo --world {source}: " + "; ".join(problems))
    return folder


def _world(config: DemoConfig, out: Path) -> Path:
    """The world folder, written once: rewriting it would change its files' times, and with them every hash."""
    folder = out / "world"
    manifest = folder / "manifest.json"
    wanted = config.world.to_dict()
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text(encoding="utf-8")).get("config") == wanted:
                return folder
        except (OSError, json.JSONDecodeError):
            pass
        logger.warning("%s holds another world; writing the one asked for", folder)
    return write_world(config.world, folder)


def run_demo(config: DemoConfig, show_progress: bool = True):
    """Run (or finish) the demo into ``config.out``; returns the ``GridRun`` and the ``Report`` written there."""
    import yaml

    from lm_eval_kinject.artifacts import write_text_atomic
    from lm_eval_kinject.grid import load_grid_config, run_grid
    from lm_eval_kinject.report import write_report

    out = Path(config.out)
    ours = (out / "demo.yaml").is_file() or (out / "world").is_dir()  # a finished or an interrupted demo
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not ours):
        raise ConfigError(f"{out} exists and is not a demo run folder (no demo.yaml); refusing to write into it: "
                          "choose another --out")
    given = _given_world(config) if config.world_source is not None else None  # refused before OUT is made
    out.mkdir(parents=True, exist_ok=True)
    world = given or _world(config, out)
    header = ("# kinject demo's grid: re-run with `kinject grid THIS_FILE --out THIS_FOLDER` (same cells),\n"
              "# or copy it as a start for your own.\n")
    config_path = write_text_atomic(out / "demo.yaml", header + yaml.safe_dump(demo_grid(config, world),
                                                                               sort_keys=False))
    grid = load_grid_config(config_path)
    run = run_grid(grid, out, show_progress=show_progress)
    report = write_report(out, out, seed=config.seed)
    return run, report


def with_options(config: DemoConfig, **options) -> DemoConfig:
    """``config`` with the CLI's options applied (None: keep); the world grows to fit the paraphrase counts."""
    options = {k: v for k, v in options.items() if v is not None}
    world_options = {k: options.pop(k) for k in ("events", "practice_events") if k in options}
    if world_options and options.get("world_source"):
        raise ConfigError(f"kinject demo: --world {options['world_source']} is a world already made; "
                          f"{' and '.join('--' + k.replace('_', '-') for k in world_options)} "
                          f"{'describes' if len(world_options) == 1 else 'describe'} one to generate")
    if "seed" in options:
        world_options["seed"] = options["seed"]
    ns = options.get("n_paraphrases", config.n_paraphrases)
    world_options["paraphrases"] = max(config.world.paraphrases, max(ns, default=0) + 1)
    finetune = {**config.finetune, **options.pop("finetune", {})}
    return replace(config, world=replace(config.world, **world_options), finetune=finetune, **options)
