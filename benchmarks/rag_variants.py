#!/usr/bin/env python
"""Retrieval variants of one task against each other: every base / base+rag cell of a grid run on the same task and
model (one experiment per variant, as in configs/current_events.yaml), with its 95 % interval and the paired tests
against the default RAG cell and the oracle (exact McNemar, bootstrap interval of the difference). No model runs.

    .venv/bin/python benchmarks/rag_variants.py runs/current_events [--task current_events_cloze] \
        [--default rag] [--oracle rag_oracle]

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
    args = parser.parse_args()

    from lm_eval_kinject.report.results import load_entries
    from lm_eval_kinject.report.stats import align, mcnemar, paired_bootstrap_ci

    grid, entries = load_entries(args.run)
    cells = [e for e in entries if e.task == args.task and e.role == "main" and e.status == "done"
             and e.arm in ("base", "base+rag")]
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
        return f"{diff:+.3f} [{low:+.3f}, {high:+.3f}], p = {test['p_value']:.2g} ({test['only_a']} vs {test['only_b']})"

    print(f"| experiment | arm | acc [95 % CI] | recall of the gold chunk | vs default RAG | vs oracle |\n"
          "|---|---|---|---:|---|---|")
    for e in sorted(cells, key=lambda e: (e.arm != "base", -(e.acc or 0))):
        recall = "–" if e.recall is None else f"{e.recall:.3f} (k = {e.k})"
        print(f"| {titles.get(e.experiment, e.experiment)} | {e.arm} | {e.acc:.3f} [{e.ci[0]:.3f}, {e.ci[1]:.3f}] | "
              f"{recall} | {versus(e, default)} | {versus(e, oracle)} |")


if __name__ == "__main__":
    main()
