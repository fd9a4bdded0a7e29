#!/usr/bin/env python
"""The RAG arm on the embedded model: base vs base+RAG per retriever and k, with retrieval recall
and overhead, all from one model load (issue: kinject-rag).

    .venv/bin/python benchmarks/rag.py --shared ../shared/data [--tasks current_events_cloze,current_events] \
        [--retrievers bm25,dense,hybrid,oracle] [--ks 1,2,4] [--mmlu-subjects anatomy --mmlu-limit 40] [--out rag.json]

Prints one markdown table: task, arm, acc ± stderr, recall of the gold chunk, wall, retrieval share of wall.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _run(lm, task, manager, limit):
    from lm_eval import simple_evaluate

    start = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=[task], task_manager=manager, limit=limit)
    wall = time.perf_counter() - start
    metrics = out["results"][task]
    records = lm.retrieval_records
    gold = [r["gold_retrieved"] for r in records if r["gold_retrieved"] is not None]
    return {"task": task, "n": out["n-samples"][task]["effective"], "acc": metrics["acc,none"],
            "acc_stderr": metrics["acc_stderr,none"], "acc_norm": metrics.get("acc_norm,none"),
            "gold_recall": sum(gold) / len(gold) if gold else None, "wall_s": wall,
            "retrieval_s": lm.rag_stats["seconds"], "passages_cut": lm.rag_stats["passages_cut"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--tasks", type=_csv, default=["current_events_cloze", "current_events"])
    parser.add_argument("--retrievers", type=_csv, default=["bm25", "dense", "hybrid", "oracle"])
    parser.add_argument("--ks", type=lambda v: [int(x) for x in _csv(v)], default=[1, 2, 4])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--mmlu-subjects", type=_csv, default=[], help="also base vs RAG on kinject_mmlu_cloze")
    parser.add_argument("--mmlu-limit", type=int, default=None)
    parser.add_argument("--mmlu-retriever", default="bm25")
    parser.add_argument("--mmlu-k", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("rag_benchmark.json"))
    args = parser.parse_args()

    from lm_eval.tasks import TaskManager

    from lm_eval_kinject.corpus import read_source
    from lm_eval_kinject.kb import build_kb
    from lm_eval_kinject.rag_lm import KinjectRAGLM

    manager = TaskManager(metadata={"mmlu_dir": str(args.shared / "mmlu"),
                                    "current_events_dir": str(args.shared / "current_events_sample")})
    lm = KinjectRAGLM(device="cpu", batch_size=args.batch_size)
    rows = []

    def record(arm: str, row: dict) -> None:
        row["arm"] = arm
        rows.append(row)
        print(json.dumps(row), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        kb = build_kb(read_source(args.shared / "current_events_sample" / "chunks.jsonl"), Path(tmp) / "ce",
                      show_progress=False)
        for task in args.tasks:
            lm.set_retrieval(None)
            record("base", _run(lm, task, manager, args.limit))
            for retriever in args.retrievers:
                for k in ([1] if retriever == "oracle" else args.ks):
                    lm.set_retrieval(kb, k=k, retriever=retriever)
                    record(f"rag {retriever} k={k}", _run(lm, task, manager, args.limit))
        for subject in args.mmlu_subjects:
            task = f"kinject_mmlu_cloze_{subject}_0shot"
            subject_kb = build_kb(read_source(args.shared / "kb" / f"{subject}.jsonl"), Path(tmp) / subject,
                                  show_progress=False)
            lm.set_retrieval(None)
            record("base", _run(lm, task, manager, args.mmlu_limit))
            lm.set_retrieval(subject_kb, k=args.mmlu_k, retriever=args.mmlu_retriever)
            record(f"rag {args.mmlu_retriever} k={args.mmlu_k}", _run(lm, task, manager, args.mmlu_limit))
    args.out.write_text(json.dumps(rows, indent=2))
    print("\n| task | arm | n | acc ± stderr | acc_norm | gold recall | wall (s) | retrieval share |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        norm = "" if r["acc_norm"] is None else f"{r['acc_norm']:.3f}"
        recall = "" if r["gold_recall"] is None else f"{r['gold_recall']:.3f}"
        share = f"{100 * r['retrieval_s'] / r['wall_s']:.2f} %" if r["arm"] != "base" else ""
        print(f"| {r['task']} | {r['arm']} | {r['n']} | {r['acc']:.3f} ± {r['acc_stderr']:.3f} | {norm} | {recall} | "
              f"{r['wall_s']:.0f} | {share} |")


if __name__ == "__main__":
    main()
