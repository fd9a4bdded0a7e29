"""Two arms of a finished grid run with a held-out split (``qa`` + ``qa_split``; the demo's design before practice
events, e.g. the run of docs/demo-report/events-80) compared on the first m held-out events, m growing: does a
paired difference need more questions scored, or more training? Reads the run folder only (no model).

    python benchmarks/heldout_power.py runs/demo80                       # FT-RAFT vs FT-par, fictional_mix
    python benchmarks/heldout_power.py runs/grid --experiment NAME --a ft-raft3 --b ft-par3 --step 5

Prints one line per m: questions, both accuracies, the difference with its paired bootstrap interval, the
discordant questions and the exact McNemar p (the report's own statistics).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cells(out: Path, experiment: str) -> dict[str, dict[int, tuple[str, float]]]:
    """arm -> {doc_id: (chunk_id, correct)} for the main cells of ``experiment``."""
    cells = {}
    for folder in sorted((out / "cells").iterdir()):
        meta = json.loads((folder / "cell.json").read_text(encoding="utf-8"))
        if meta.get("status") == "done" and meta["experiment"] == experiment and meta["role"] == "main":
            with open(folder / "samples.jsonl", encoding="utf-8") as fh:
                samples = [json.loads(line) for line in fh]
            cells[meta["arm"]] = {s["doc_id"]: (s["doc"]["chunk_id"], float(s["acc"])) for s in samples}
    return cells


def main() -> None:
    from lm_eval_kinject.report.stats import mcnemar, paired_bootstrap_ci

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--experiment", default="fictional_mix")
    parser.add_argument("--a", default="ft-raft3")
    parser.add_argument("--b", default="ft-par3")
    parser.add_argument("--step", type=int, default=10, help="held-out events added per line")
    args = parser.parse_args()
    cells = _cells(args.run, args.experiment)
    missing = [arm for arm in (args.a, args.b) if arm not in cells]
    if missing:
        raise SystemExit(f"{args.run}: no finished {args.experiment} cells for {missing}; arms there: {sorted(cells)}")
    a, b = cells[args.a], cells[args.b]
    events = list(dict.fromkeys(a[i][0] for i in sorted(a)))  # in the order the task scores them
    print(f"{args.run}: {len(events)} held-out events, {len(a)} questions; {args.a} vs {args.b}")
    for m in [*range(args.step, len(events), args.step), len(events)]:
        kept = set(events[:m])
        ids = [i for i in sorted(a) if a[i][0] in kept]
        xa, xb = [a[i][1] for i in ids], [b[i][1] for i in ids]
        test, (low, high) = mcnemar(xa, xb), paired_bootstrap_ci(xa, xb, seed=0)
        print(json.dumps({"events": m, "questions": len(ids), args.a: round(sum(xa) / len(ids), 3),
                          args.b: round(sum(xb) / len(ids), 3),
                          "difference": round((sum(xa) - sum(xb)) / len(ids), 3), "ci": [round(low, 3), round(high, 3)],
                          "only_a": test["only_a"], "only_b": test["only_b"], "p": float(f"{test['p_value']:.3g}")}))


if __name__ == "__main__":
    main()
