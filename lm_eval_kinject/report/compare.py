"""``kinject compare BASELINE NEW``: a CI gate that fails only on a significant drop.

Each finished cell of NEW is paired with the baseline's cell of the same experiment, model, arm, task, role and
fine-tuning budget, question by question (by the questions' own ids when both cells have them). Per cell: both
accuracies, the questions won by one run only, the exact McNemar p, and the paired bootstrap interval of NEW minus
BASELINE. Across the cells the p-values are Holm-corrected (Holm 1979, step-down: controls the chance of any false
alarm at ``alpha`` however many cells a grid has, and is never weaker than Bonferroni). Only the cells that could reach
p < ``alpha`` at all count in the correction (Tarone 1990, for discrete tests): a cell whose runs disagree on fewer
than 6 questions (none, for a deterministic cell that did not change) has no split with exact McNemar p < 0.05, can
never be flagged, and would otherwise weaken the gate for every other cell. The exact McNemar test conditions on
each cell's disagreeing questions, so leaving those cells out keeps the chance of any false alarm at ``alpha``. A
cell *dropped* when NEW is below the baseline and its corrected p is below ``alpha``.

A committed expectations file (``kinject report --expect``) checks numbers on one machine; this compares two runs
wherever they were made: a log-likelihood tie that moves on other hardware flips a question or two, which no test
calls significant, while a real drop is caught whatever its size relative to a guessed tolerance.

Inputs: a grid run folder (``grid.json`` + ``cells/``) or a ``report.json`` written by ``kinject report`` (it keeps
each cell's per-question correctness). Unusable input raises ``DataError``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lm_eval_kinject.errors import DataError
from lm_eval_kinject.report.stats import align, mcnemar, paired_bootstrap_ci, significant_gap

__all__ = ["CellComparison", "Comparison", "load_cells", "compare_runs", "holm", "comparison_markdown"]

DEFAULT_ALPHA = 0.05


@dataclass
class CellComparison:
    key: str
    n: int
    acc_baseline: float
    acc_new: float
    only_baseline: int  # questions right in the baseline only
    only_new: int
    p_value: float
    p_holm: float
    diff_ci: tuple[float, float]
    verdict: str  # "drop", "gain" or "same"
    testable: bool = True  # could reach p < alpha (enough disagreeing questions); only these are Holm-corrected

    @property
    def diff(self) -> float:
        return self.acc_new - self.acc_baseline


@dataclass
class Comparison:
    baseline: str
    new: str
    alpha: float
    cells: list[CellComparison]
    only_baseline: list[str]  # finished in the baseline, not in NEW (missing, failed or pending there)
    only_new: list[str]

    @property
    def drops(self) -> list[CellComparison]:
        return [c for c in self.cells if c.verdict == "drop"]

    @property
    def gains(self) -> list[CellComparison]:
        return [c for c in self.cells if c.verdict == "gain"]

    @property
    def tested(self) -> list[CellComparison]:
        return [c for c in self.cells if c.testable]

    def to_dict(self) -> dict:
        return {"baseline": self.baseline, "new": self.new, "alpha": self.alpha, "correction": "holm",
                "drops": len(self.drops), "gains": len(self.gains),
                "cells": [{**vars(c), "diff": c.diff, "diff_ci": list(c.diff_ci)} for c in self.cells],
                "only_baseline": self.only_baseline, "only_new": self.only_new}


def _key(cell: dict) -> str:
    parts = [cell["experiment"], cell["model"], cell["arm"], cell.get("alias") or cell["task"]]
    if cell.get("role", "main") != "main":
        parts.append(cell["role"])
    if cell.get("budget"):
        parts.append(",".join(f"{k}={v}" for k, v in sorted(cell["budget"].items())))
    return " · ".join(str(p) for p in parts)


def load_cells(path: Path) -> dict[str, dict]:
    """{cell key: {"acc", "per_question"}} of the finished cells of a run folder or a ``report.json``."""
    path = Path(path)
    if path.is_dir() and (path / "grid.json").is_file():
        from lm_eval_kinject.report.results import load_entries

        _, entries = load_entries(path)
        cells = [{"experiment": e.experiment, "model": e.model, "arm": e.arm, "task": e.task, "alias": e.alias,
                  "role": e.role, "budget": e.budget, "status": e.status, "acc": e.acc,
                  "per_question": e.per_question} for e in entries]
    else:
        report_file = path / "report.json" if path.is_dir() else path
        if not report_file.is_file():
            raise DataError(f"{path}: neither a grid run folder (grid.json) nor a report.json of `kinject report`")
        try:
            data = json.loads(report_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"{report_file}: unreadable report ({error})") from None
        if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
            raise DataError(f"{report_file}: expected a report.json of `kinject report` (an object with 'cells')")
        cells = data["cells"]
        done = [c for c in cells if c.get("status") == "done"]
        if done and not any("per_question" in c for c in done):
            raise DataError(f"{report_file}: its cells have no per-question results (written by an older "
                            "kinject); compare the run folder, or run `kinject report` on it again")
    out: dict[str, dict] = {}
    for cell in cells:
        if cell.get("status") != "done" or not cell.get("per_question"):
            continue
        key = _key(cell)
        if key in out:
            raise DataError(f"{path}: two finished cells are both {key!r}")
        out[key] = cell
    if not out:
        raise DataError(f"{path}: no finished cells to compare")
    return out


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (a few lines: statsmodels is not a dependency)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def compare_runs(baseline: Path, new: Path, alpha: float = DEFAULT_ALPHA, seed: int = 0) -> Comparison:
    if not 0 < alpha < 1:
        raise DataError(f"--alpha {alpha}: expected a number between 0 and 1 (e.g. 0.05)")
    old_cells, new_cells = load_cells(baseline), load_cells(new)
    common = [k for k in new_cells if k in old_cells]
    if not common:
        raise DataError(f"{baseline} and {new} have no finished cell in common (same experiment, model, arm, task); "
                        f"e.g. {next(iter(old_cells))!r} vs {next(iter(new_cells))!r}")
    rows = []
    for key in common:
        x_old, x_new = align(old_cells[key]["per_question"], new_cells[key]["per_question"])
        if not x_old:
            raise DataError(f"{key}: the two runs scored no question in common (different question sets?)")
        test = mcnemar(x_new, x_old)
        rows.append((key, x_old, x_new, test, paired_bootstrap_ci(x_new, x_old, seed=seed)))
    testable = [significant_gap(r[3]["only_a"] + r[3]["only_b"], alpha) is not None for r in rows]
    adjusted = iter(holm([r[3]["p_value"] for r, t in zip(rows, testable) if t]))
    cells = []
    for (key, x_old, x_new, test, ci), can in zip(rows, testable):
        p_holm = next(adjusted) if can else 1.0
        acc_old, acc_new = sum(x_old) / len(x_old), sum(x_new) / len(x_new)
        verdict = "same" if p_holm >= alpha or acc_new == acc_old else ("drop" if acc_new < acc_old else "gain")
        cells.append(CellComparison(key, len(x_old), acc_old, acc_new, test["only_b"], test["only_a"],
                                    test["p_value"], p_holm, ci, verdict, can))
    return Comparison(str(baseline), str(new), alpha, cells, sorted(set(old_cells) - set(new_cells)),
                      sorted(set(new_cells) - set(old_cells)))


def comparison_markdown(result: Comparison) -> str:
    """A summary for a person on the CI page (``$GITHUB_STEP_SUMMARY`` renders it)."""
    tested, left = len(result.tested), len(result.cells) - len(result.tested)
    scope = f"over the {tested} cell(s) that could reach it" + (
        f"; {left} with too few questions changed to be testable" if left else "")
    if result.drops:
        head = f"**{len(result.drops)} cell(s) dropped significantly** (Holm-corrected p < {result.alpha} {scope})"
    else:
        head = (f"**No significant change** in {len(result.cells)} cells (Holm-corrected p < {result.alpha} "
                f"{scope})")
    if result.gains:
        head += f"; {len(result.gains)} significant gain(s)"
    mark = {"drop": "🔻 drop", "gain": "gain", "same": ""}
    lines = ["## kinject compare", "", head, "", f"Baseline `{result.baseline}`, new `{result.new}`.", "",
             "| cell | n | baseline | new | new − baseline [95 % CI] | lost / won | McNemar p | Holm p | verdict |",
             "|---|---:|---:|---:|---|---|---:|---:|---|"]
    for c in sorted(result.cells, key=lambda c: (c.verdict != "drop", c.p_holm)):
        lines.append(f"| {c.key} | {c.n} | {c.acc_baseline:.3f} | {c.acc_new:.3f} | {c.diff:+.3f} "
                     f"[{c.diff_ci[0]:+.3f}, {c.diff_ci[1]:+.3f}] | {c.only_baseline} / {c.only_new} | "
                     f"{c.p_value:.3g} | {f'{c.p_holm:.3g}' if c.testable else 'n/a'} | {mark[c.verdict]} |")
    lines += ["", "*lost / won: questions right in the baseline only / in the new run only. Exact McNemar test on "
                  "them (two-sided), Holm-corrected across the cells that could reach p < alpha (n/a: so few "
                  "questions changed that no result of this cell could be significant; Tarone 1990); a cell fails "
                  "the gate only when it is below the baseline with a corrected p under alpha.*"]
    for title, keys in (("Finished in the baseline only (failed, pending or missing in the new run)",
                         result.only_baseline), ("Finished in the new run only", result.only_new)):
        if keys:  # folded: a nightly grid run against a baseline with more experiments lists dozens
            lines += ["", f"<details><summary><b>{title}: {len(keys)} cell(s)</b></summary>", ""]
            lines += [f"- {k}" for k in keys] + ["", "</details>"]
    return "\n".join(lines) + "\n"
