"""``kinject demo``: the paper's Table 2 on a fictional world, offline, on the embedded defaults.

world -> KB -> FT-reg and FT-par checkpoints -> six arms evaluated through lm-eval (base, base+RAG,
FT-reg, FT-par, FT-reg+RAG, FT-par+RAG) -> a table (accuracy ± stderr, the retriever's recall@k),
written as JSON and markdown. Every stage's product is cached under the work folder and reused on
a re-run, so an interrupted demo continues where it stopped.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lm_eval_kinject.artifacts import write_json_atomic
from lm_eval_kinject.errors import ConfigError
from lm_eval_kinject.fictional import FictionalConfig, write_world

logger = logging.getLogger(__name__)

__all__ = ["DemoConfig", "run_demo", "format_table", "TASK"]

TASK = "kinject_fictional_cloze"  # the 135M model is at chance on lettered questions even with the answer shown


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo. The default takes ~18 minutes on 2 CPU cores (measured: see the README)."""

    work: Path = Path("runs/demo")
    world: FictionalConfig = field(default_factory=FictionalConfig)
    model: str = "smollm2-135m"
    method: str = "full"
    # Equal token budgets: FT-reg reads every chunk 10 times in its one wording; FT-par (N = 4) reads
    # the chunk and its 4 paraphrases twice each - every fact 10 times, in 5 wordings (the paper's point).
    reg_epochs: float = 10.0
    par_epochs: float = 2.0
    n_paraphrases: tuple[int, ...] = (4,)  # ascending
    learning_rate: float | None = None
    # A world of a few thousand tokens: short blocks give enough optimiser steps (50 for FT-reg).
    ft_block_size: int = 128
    ft_batch_size: int = 4
    retriever: str = "bm25"
    k: int = 1
    batch_size: int = 8
    limit: int | None = None  # questions evaluated (None: all)
    seed: int = 0

    def __post_init__(self) -> None:
        most = max(self.n_paraphrases, default=0)
        if most + 1 > self.world.paraphrases:
            raise ConfigError(f"--n-paraphrases {most} needs a world with at least {most + 1} paraphrases per chunk "
                              f"(one is held out for validation); it has {self.world.paraphrases}")
        if self.k < 1:
            raise ConfigError(f"k={self.k}: expected a positive integer")

    @classmethod
    def quick(cls, **overrides) -> DemoConfig:
        """A smaller version: 12 events; FT-reg 6 epochs, FT-par with 2 paraphrases 2 epochs."""
        world = FictionalConfig(seed=overrides.pop("seed", 0), events=12, paraphrases=3)
        return cls(**{"world": world, "reg_epochs": 6.0, "n_paraphrases": (2,), **overrides})


def _arms(config: DemoConfig) -> list[str]:
    """Table 2's six arms; with several N (a Figure-4 curve) only the largest N also gets +RAG."""
    pars = [f"ft-par{n}" for n in config.n_paraphrases]
    return ["base", "base+rag", "ft-reg", *pars, "ft-reg+rag", *([f"{pars[-1]}+rag"] if pars else [])]


def run_demo(config: DemoConfig, progress=print) -> dict:
    """Run (or finish) the demo; returns the results written to ``work/demo.json``."""
    from lm_eval_kinject.kb import KnowledgeBase

    work = Path(config.work)
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "demo.json"
    results = _load_results(results_path, config)
    world = _stage(results, "world", progress, lambda: _world(config, work))
    kb_path = _stage(results, "kb", progress, lambda: _kb(world, work))
    kb = KnowledgeBase.load(Path(kb_path))
    if "retrieval" not in results:
        results["retrieval"] = _retrieval(kb, Path(world), config)
    for arm in ("ft-reg", *[f"ft-par{n}" for n in config.n_paraphrases]):
        _stage(results, arm, progress, lambda arm=arm: _train(arm, config, kb_path, world, work))
        write_json_atomic(results_path, results)
    scores = results.setdefault("scores", {})
    for arm in _arms(config):
        if arm in scores:
            continue
        progress(f"[demo] evaluating {arm} ...")
        started = time.perf_counter()
        scores[arm] = _evaluate(arm, config, kb, world, work)
        scores[arm]["seconds"] = round(time.perf_counter() - started, 1)
        write_json_atomic(results_path, results)
        progress(f"[demo] {arm}: {scores[arm]['acc']:.3f} ± {scores[arm]['stderr']:.3f} ({scores[arm]['seconds']} s)")
    (work / "demo.md").write_text(format_table(results) + "\n", encoding="utf-8")
    return results


def _load_results(path: Path, config: DemoConfig) -> dict:
    settings = json.loads(json.dumps(asdict(config), default=str))
    if path.is_file():
        results = json.loads(path.read_text(encoding="utf-8"))
        if results.get("config") == settings:
            return results
        logger.warning("%s was made with other settings; starting the demo again", path)
    shutil.rmtree(path.parent / "ckpt", ignore_errors=True)  # the demo's own checkpoints, of other settings
    return {"config": settings, "timings": {}}


def _stage(results: dict, name: str, progress, build):
    if name not in results:
        progress(f"[demo] {name} ...")
        started = time.perf_counter()
        results[name] = build()
        results["timings"][name] = round(time.perf_counter() - started, 1)
    return results[name]


def _world(config: DemoConfig, work: Path) -> str:
    return str(write_world(config.world, work / "world"))


def _kb(world: str, work: Path) -> str:
    from lm_eval_kinject.corpus import read_source
    from lm_eval_kinject.kb import build_kb

    source = Path(world) / "chunks.jsonl"
    return str(build_kb(read_source(source), work / "kb", sources=[str(source)], overwrite=True).path)


def _retrieval(kb, world: Path, config: DemoConfig) -> dict:
    from lm_eval_kinject.retrieval_eval import evaluate_retrieval

    row = evaluate_retrieval(kb, world / "questions.jsonl", sorted({1, config.k}), [config.retriever])[0]
    return {"retriever": config.retriever, "k": config.k, f"recall@{config.k}": row[f"recall@{config.k}"],
            "recall@1": row["recall@1"]}


def _train(arm: str, config: DemoConfig, kb_path: str, world: str, work: Path) -> dict:
    from lm_eval_kinject.finetune import FinetuneConfig, finetune

    n = 0 if arm == "ft-reg" else int(arm.removeprefix("ft-par"))
    ft = FinetuneConfig(kb=kb_path, out=str(work / "ckpt" / arm), model=config.model, method=config.method,
                        paraphrases=str(Path(world) / "paraphrases.jsonl"), n_paraphrases=n,
                        epochs=config.reg_epochs if n == 0 else config.par_epochs, learning_rate=config.learning_rate,
                        block_size=config.ft_block_size, batch_size=config.ft_batch_size, seed=config.seed,
                        logging_steps=5, save_steps=50)
    meta = finetune(ft, resume=True).metadata
    training = meta["training"]
    return {"out": str(work / "ckpt" / arm), "n_paraphrases": n, "epochs": ft.epochs,
            "tokens": meta["data"]["train_tokens_per_epoch"] * ft.epochs, "steps": training["steps"],
            "final_loss": training["final_loss"], "tokens_per_second": training["tokens_per_second"],
            "validation_loss": training["validation"][-1]["eval_loss"] if training["validation"] else None}


_LOADED: dict = {}


def _model(name: str, config: DemoConfig, work: Path):
    """One loaded model at a time; the RAG arm of a model reuses it (``set_retrieval``)."""
    from lm_eval_kinject.rag_lm import KinjectRAGLM

    if _LOADED.get("name") != name:
        _LOADED.clear()
        checkpoint = str(work / "ckpt" / name)
        if name == "base":
            args = {"pretrained": config.model}
        elif config.method == "lora":
            args = {"pretrained": config.model, "peft": checkpoint}
        else:
            args = {"pretrained": checkpoint}
        _LOADED.update(name=name, lm=KinjectRAGLM(device="cpu", batch_size=config.batch_size, **args))
    return _LOADED["lm"]


def _evaluate(arm: str, config: DemoConfig, kb, world: str, work: Path) -> dict:
    from lm_eval import simple_evaluate

    from lm_eval_kinject.registration import task_manager

    name, rag = arm.removesuffix("+rag"), arm.endswith("+rag")
    lm = _model(name, config, work)
    lm.set_retrieval(kb if rag else None, k=config.k, retriever=config.retriever)
    manager = task_manager({"fictional_dir": world})
    out = simple_evaluate(model=lm, tasks=[TASK], task_manager=manager, limit=config.limit, random_seed=config.seed,
                          numpy_random_seed=config.seed, torch_random_seed=config.seed, fewshot_random_seed=config.seed)
    metrics = out["results"][TASK]
    return {"acc": metrics["acc,none"], "stderr": metrics["acc_stderr,none"], "n": out["n-samples"][TASK]["effective"]}


def format_table(results: dict) -> str:
    """The demo's Table 2, as markdown."""
    scores, retrieval = results.get("scores", {}), results.get("retrieval", {})
    lines = ["| arm | accuracy ± stderr | n |", "|---|---|---:|"]
    for arm, s in sorted(scores.items(), key=lambda item: _arm_order(item[0])):
        lines.append(f"| {arm} | {s['acc']:.3f} ± {s['stderr']:.3f} | {s['n']} |")
    if retrieval:
        k = retrieval["k"]
        lines.append(f"\nRetriever: {retrieval['retriever']}, k = {k}; gold chunk in the top {k}: "
                     f"{retrieval[f'recall@{k}']:.3f}.")
    ft = sorted(((arm, results[arm]) for arm in results if arm.startswith("ft-")), key=lambda i: _arm_order(i[0]))
    if ft:
        lines.append("\n| FT arm | paraphrases | epochs | tokens | steps | final loss | validation loss | tokens/s |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for arm, t in ft:
            val = f"{t['validation_loss']:.3f}" if t["validation_loss"] is not None else "–"
            lines.append(f"| {arm} | {t['n_paraphrases']} | {t['epochs']:g} | {round(t['tokens'])} | {t['steps']} | "
                         f"{t['final_loss']:.3f} | {val} | {t['tokens_per_second']} |")
    timings = results.get("timings", {})
    evaluation = sum(s.get("seconds", 0) for s in scores.values())
    order = sorted(timings, key=lambda k: (k != "world", k != "kb", _arm_order(k) if k.startswith("ft-") else (0, 0)))
    lines.append("\nWall time: " + ", ".join(f"{k} {timings[k]:.0f} s" for k in order)
                 + f", evaluation {evaluation:.0f} s.")
    return "\n".join(lines)


def _arm_order(arm: str) -> tuple[int, int]:
    """Table 2's order: base, base+RAG, FT-reg, FT-par (by N), FT-reg+RAG, FT-par+RAG."""
    name, rag = arm.removesuffix("+rag"), arm.endswith("+rag")
    if name == "base":
        return (0, int(rag))
    n = 0 if name == "ft-reg" else int(name.removeprefix("ft-par"))
    return (3 + 2 * rag + (n > 0), n)
