"""``kinject report``: a grid run folder -> tables (md, CSV, LaTeX), figures (PNG, SVG), paired tests.

    OUT/report.md            every table, the paired tests, the figures, failed cells
    OUT/report.json          every cell (accuracy, interval, recall, forgetting, per-question correctness) and
                             every test; ``kinject compare`` reads it
    OUT/table_EXPERIMENT.tex one LaTeX table per experiment;  OUT/cells.csv  one line per cell
    OUT/figure2.{png,svg}    OUT/figure4_EXPERIMENT.{png,svg}
    OUT/budget_EXPERIMENT.{png,svg}   accuracy vs training tokens, for an experiment with a sweep

``check_expectations`` compares a report with a committed expectations file (the CI benchmark).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lm_eval_kinject.arms import ARMS
from lm_eval_kinject.artifacts import write_json_atomic, write_text_atomic as _write
from lm_eval_kinject.errors import DataError
from lm_eval_kinject.report.budget import budget_figure, budget_markdown, choose_budgets
from lm_eval_kinject.report.crossfit import cross_fitted
from lm_eval_kinject.report.figures import figure2, figure4
from lm_eval_kinject.report.results import forgetting, load_entries
from lm_eval_kinject.report.stats import known_unknown
from lm_eval_kinject.report.tables import (csv_rows, known_markdown, latex_table, markdown_table, paired_markdown,
                                           paired_tests)

__all__ = ["write_report", "Report", "check_expectations", "expectations_of"]


@dataclass
class Report:
    out: Path
    files: list[Path]
    cells: list[dict]
    tests: list[dict]
    failed: int
    pending: int
    sections: dict = field(default_factory=dict)  # experiment -> its markdown (table, known vs unknown, tests)


def write_report(run: Path, out: Path, seed: int = 0, experiments: list[str] | None = None) -> Report:
    """Write the report of the grid run ``run`` into ``out``; ``experiments``: only these (default: all)."""
    grid, every_entry = load_entries(Path(run), seed=seed)
    if experiments:
        unknown = sorted(set(experiments) - set(grid["config"]["experiments"]))
        if unknown:
            raise DataError(f"{run}: no experiment(s) {unknown} in this run; it has "
                            f"{', '.join(grid['config']['experiments'])}")
        every_entry = [e for e in every_entry if e.experiment in experiments]
        order = grid.get("experiment_order", sorted(grid["config"]["experiments"]))
        grid = {**grid, "experiment_order": [n for n in order if n in experiments]}
    entries, choices = choose_budgets(every_entry)  # one budget per swept FT arm: the tables' and the tests'
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    experiments = grid["config"]["experiments"]
    pooled, pooled_specs, order = cross_fitted(entries, experiments,
                                               grid.get("experiment_order", sorted(experiments)), seed)
    entries, experiments = entries + pooled, {**experiments, **pooled_specs}
    lost = forgetting(entries)
    files: list[Path] = []
    sections = [f"# Knowledge-injection report: {Path(grid['config']['path']).name}", "",
                f"Run folder `{run}`; seed {grid['seed']}; kinject {grid['kinject']}; "
                f"lm-eval {grid['libraries'].get('lm-eval')}, transformers {grid['libraries'].get('transformers')}, "
                f"torch {grid['libraries'].get('torch')}.", ""]
    table1_like = []
    by_experiment: dict[str, list[str]] = {}
    for name in order:
        spec = experiments[name]
        if not any(e.experiment == name for e in entries):
            continue
        own = [markdown_table(entries, name, spec["title"], lost), ""]
        trainers = " / ".join(dict.fromkeys(ARMS[ARMS[a].stem].label for a in spec["arms"]
                                            if ARMS[a].trains_on_questions))
        if split := spec.get("qa_split"):
            own.insert(1, f"\n*Every arm is scored on the held-out split only: the questions about the chunks whose "
                          f"questions were not trained on as QA pairs by {trainers} (split by chunk: "
                          f"train fraction {split['train_fraction']}, seed {split['seed']}"
                          + (", swapped: the part the unswapped split trains on" if split.get("swap") else "")
                          + ").*")
        if twins := spec.get("cross_fit"):
            own.insert(1, f"\n*Cross-fitted: {twins[0]} and {twins[1]} train {trainers} on the QA pairs of the two "
                          "halves of the questions; each question is scored by the model that did not train on it, so "
                          "every comparison is paired over every question. Forgetting (Δctl) is in each half's "
                          "table.*")
        elif practice := spec.get("qa_practice"):
            own.insert(1, f"\n*{trainers} also trained on practice questions about other documents "
                          f"(`{Path(practice).name}`), none of them scored; no scored question was a training QA "
                          "pair.*")
        if note := budget_markdown(choices, name):
            own += [note, ""]
        if known := known_markdown(entries, name, spec["title"]):
            own += [known, ""]
        if paths := budget_figure(every_entry, choices, name, spec["title"], out):
            files += paths
            own += [f"![Accuracy vs fine-tuning budget: {spec['title']}]({paths[0].name})", ""]
        by_experiment[name] = own
        sections += own
        files.append(_write(out / f"table_{name}.tex", latex_table(entries, name, spec["title"])))
        finished = any(e.experiment == name and e.role == "main" and e.status == "done" for e in entries)
        if finished and not any(ARMS[a].training == "chunks+paraphrases" for a in spec["arms"]):
            table1_like.append(name)
        paths = figure4(entries, name, spec["title"], out)
        if paths:
            files += paths
            sections += [f"![Figure 4: {spec['title']}]({paths[0].name})", ""]
            own += [f"Figure 4: {paths[0]}", ""]
    paths = figure2(entries, table1_like or list(experiments), out)
    if paths:
        files += paths
        sections += [f"![Figure 2]({paths[0].name})", ""]
    tests = paired_tests(entries, seed=seed)
    if tests:
        sections += [paired_markdown(tests), ""]
    for name, own in by_experiment.items():
        if mine := [t for t in tests if t["experiment"] == name]:
            own += [paired_markdown(mine), ""]
    failed = [e for e in entries if e.status == "failed"]
    damaged = [e for e in entries if e.status == "damaged"]
    pending = [e for e in entries if e.status == "pending"]
    if failed or damaged or pending:
        sections += ["### Cells not in the tables", ""]
        sections += [f"- **failed** {e.model} {e.arm} {e.task} (`cells/{e.hash}`): {e.error}" for e in failed]
        sections += [f"- **damaged** {e.model} {e.arm} {e.task}: {e.error} (`kinject grid` evaluates it again)"
                     for e in damaged]
        sections += [f"- pending {e.model} {e.arm} {e.task}" for e in pending]
    files.insert(0, _write(out / "report.md", "\n".join(sections) + "\n"))
    files.append(_write(out / "cells.csv", csv_rows(entries, lost)))
    bases = {(e.experiment, e.row): e for e in entries if e.role == "main" and e.arm == "base" and e.status == "done"}
    cells = []
    for e in entries:
        item = {k: v for k, v in asdict(e).items() if k != "per_question"}
        item["label"] = e.label
        if e.status == "done":  # what `kinject compare` pairs on
            item["per_question"] = {k: e.per_question[k] for k in ("question_id", "doc_id", "correct")
                                    if k in e.per_question}
        if e.role == "main" and e.status == "done" and (base := bases.get((e.experiment, e.row))):
            item.update(known_unknown(e.per_question, base.per_question))
        if e.role == "main" and (f := lost.get((e.experiment, e.model, e.arm))):
            item["forgetting"] = f
        cells.append(item)
    budgets = [{"experiment": c.experiment, "model": c.model, "arm": c.arm, "budget": c.budget,
                "validation_loss": c.validation_loss, "tokens": c.tokens, "candidates": c.candidates} for c in choices]
    swept = [{k: v for k, v in asdict(e).items() if k != "per_question"} for e in every_entry
             if e.budget and e not in entries]
    write_json_atomic(out / "report.json", {"run": str(run), "seed": grid["seed"], "cells": cells, "tests": tests,
                                            "budget_choices": budgets, "other_budgets": swept})
    files.append(out / "report.json")
    return Report(out, files, cells, tests, len(failed), len(pending),
                  {name: "\n".join(own).strip() for name, own in by_experiment.items()})


def experiment_summary(report: Report, experiment: str) -> str:
    """One experiment's part of ``report.md``: its table, known vs unknown and paired tests."""
    return report.sections.get(experiment, f"(no finished cells of {experiment!r} yet)")


def expectations_of(report: Report, tolerance: float = 0.0) -> dict:
    """The key numbers of ``report``, as an expectations file records them."""
    keyed = {f"{c['experiment']}|{c['model']}|{c['arm']}|{c['task']}|{c['role']}": round(c["acc"], 6)
             for c in report.cells if c["status"] == "done"}
    recall = {f"{c['experiment']}|{c['model']}|{c['arm']}|{c['task']}|{c['role']}": round(c["recall"], 6)
              for c in report.cells if c["status"] == "done" and c["recall"] is not None}
    return {"tolerance": tolerance, "acc": keyed, "recall": recall}


def check_expectations(report: Report, path: Path, tolerance: float | None = None) -> list[str]:
    """Differences between ``report`` and the expectations file ``path`` beyond its tolerance."""
    try:
        expected = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"expectations file {path}: {error}") from None
    tol = expected.get("tolerance", 0.0) if tolerance is None else tolerance
    got = expectations_of(report)
    problems = []
    for kind in ("acc", "recall"):
        for key, value in expected.get(kind, {}).items():
            if key not in got[kind]:
                problems.append(f"{kind} {key}: expected {value}, the run has no such finished cell")
            elif abs(got[kind][key] - value) > tol + 1e-9:
                problems.append(f"{kind} {key}: {got[kind][key]:.4f}, expected {value:.4f} ± {tol}")
    return problems
