#!/usr/bin/env python
"""Accuracy and wall time of one model on every kinject task, one model load for all tasks.

    .venv/bin/python benchmarks/baseline_accuracy.py --mmlu-dir ../shared/data/mmlu \
        --current-events-dir ../shared/data/current_events_sample [--model smollm2-135m] [--out base.json]

Prints a markdown table (task, n, acc ± stderr, acc_norm, wall seconds) and writes it as JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SUBJECTS = ("anatomy", "astronomy", "college_biology", "college_chemistry", "prehistory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmlu-dir", type=Path, required=True)
    parser.add_argument("--current-events-dir", type=Path, required=True)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--formats", default="lettered,cloze", help="lettered, cloze or both")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--tasks", default=None, help="comma-separated task names instead of --formats' full list")
    parser.add_argument("--out", type=Path, default=Path("baseline_accuracy.json"))
    args = parser.parse_args()

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from lm_eval_kinject.rag_lm import KinjectRAGLM

    formats = args.formats.split(",")
    tasks = [f"kinject_mmlu_{'cloze_' if fmt == 'cloze' else ''}{s}_{n}shot"
             for fmt in formats for n in (0, 5) for s in SUBJECTS]
    tasks += [{"lettered": "current_events", "cloze": "current_events_cloze"}[fmt] for fmt in formats]
    if args.tasks:
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    metadata = {"mmlu_dir": str(args.mmlu_dir.resolve()), "current_events_dir": str(args.current_events_dir.resolve())}
    start = time.perf_counter()
    lm = KinjectRAGLM(pretrained=args.model, device="cpu", batch_size=args.batch_size)
    load_s = time.perf_counter() - start
    manager = TaskManager(metadata=metadata)
    rows = []
    for task in tasks:
        start = time.perf_counter()
        result = simple_evaluate(model=lm, tasks=[task], task_manager=manager, limit=args.limit)
        wall = time.perf_counter() - start
        metrics = result["results"][task]
        rows.append({"task": task, "n": result["n-samples"][task]["effective"], "acc": metrics["acc,none"],
                     "acc_stderr": metrics["acc_stderr,none"], "acc_norm": metrics.get("acc_norm,none"),
                     "wall_s": round(wall, 1)})
        print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps({"model": args.model, "load_s": round(load_s, 1), "rows": rows}, indent=2))
    print(f"\nmodel {args.model}, load {load_s:.1f} s, batch size {args.batch_size}\n")
    print("| task | n | acc ± stderr | acc_norm | wall (s) |\n|---|---:|---|---:|---:|")
    for r in rows:
        norm = "" if r["acc_norm"] is None else f"{r['acc_norm']:.3f}"
        print(f"| {r['task']} | {r['n']} | {r['acc']:.3f} ± {r['acc_stderr']:.3f} | {norm} | {r['wall_s']} |")


if __name__ == "__main__":
    main()
