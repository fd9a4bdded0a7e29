#!/usr/bin/env python
"""Retrieval variants of one task against each other: every base / base+rag cell of a grid run on the same task and
model (one experiment per variant, as in configs/current_events.yaml), with its 95 % interval and the paired tests
against the default RAG cell and the oracle (exact McNemar, bootstrap interval of the difference). No model runs.
``--all-arms`` adds every other cell of the task (the fine-tuned arms); a cell scored on part of the questions (a
held-out split) is compared with the others on the questions both scored (``n`` says how many).

    .venv/bin/python benchmarks/rag_variants.py runs/current_events [--task current_events_cloze] \
        [--default rag] [--oracle rag_oracle] [--all-arms] [--experiments rag,rag_oracle,...]

Prints one Markdown table (the README's real-text table and docs/current-events-report/README.md come from it).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--task", default="current_events_cloze")
    parser.add_argument("--default", default="rag", help="The experiment whose base+rag cell is the default RAG.")
    parser.add_argument("--oracle", default="rag_oracle", help="The experiment whose base+rag cell is the oracle.")
    parser.add_argument("--all-arms", action="store_true", help="Every cell of the task, not only base / base+rag.")
    parser.add_argument("--experiments", help="Only these experiments' cells (comma-separated).")
    args = parser.parse_args()

    from lm_eval_kinject.report.results import load_entries
    from lm_eval_kinject.report.stats import align, mcnemar, paired_bootstrap_ci

    grid, entries = load_entries(args.run)
    cells, seen = [], set()
    for e in entries:  # a cell two experiments list (the same hash) once, under the first that lists it
        if (e.task == args.task and e.role == "main" and e.status == "done" and e.hash not in seen
                and (args.all_arms or e.arm in ("base", "base+rag"))
                and (not args.experiments or e.experiment in args.experiments.split(","))):
            cells.append(e)
            seen.add(e.hash)
    titles = {name: spec["title"] for name, spec in grid["config"]["experiments"].items()}
    default = next(e for e in cells if e.experiment == args.default and e.arm == "base+rag")
    oracle = next(e for e in cells if e.experiment == args.oracle and e.arm == "base+rag")

    def versus(e, other) -> str:
        if e is other:
            return "–"
        ours, theirs = align(e.per_question, other.per_question)
        test = mcnemar(ours, theirs)
        low, high = paired_bootstrap_ci(ours, theirs)
        diff = (sum(ours) - sum(theirs)) / len(ours)
        sizes = {len(ours), len(e.per_question["correct"]), len(other.per_question["correct"])}
        on = f" on {len(ours)}" if len(sizes) > 1 else ""  # a held-out cell against one scored on every question
        gap = test["significant_gap"]
        detectable = f", detectable ±{gap / len(ours):.3f}" if gap is not None and e.n != other.n else ""
        return (f"{diff:+.3f} [{low:+.3f}, {high:+.3f}], p = {test['p_value']:.2g} ({test['only_a']} vs "
                f"{test['only_b']}){on}{detectable}")

    print(f"| experiment | arm | n | acc [95 % CI] | recall of the gold chunk | vs default RAG | vs oracle |\n"
          "|---|---|---:|---|---:|---|---|")
    for e in sorted(cells, key=lambda e: (e.arm != "base", -e.n, -(e.acc or 0))):
        recall = "–" if e.recall is None else f"{e.recall:.3f} (k = {e.k})"
        budget = "" if not e.budget else " (" + ", ".join(f"{k} {v:g}" for k, v in sorted(e.budget.items())) + ")"
        print(f"| {titles.get(e.experiment, e.experiment)} | {e.arm}{budget} | {e.n} | {e.acc:.3f} "
              f"[{e.ci[0]:.3f}, {e.ci[1]:.3f}] | {recall} | {versus(e, default)} | {versus(e, oracle)} |")


if __name__ == "__main__":
    main()
