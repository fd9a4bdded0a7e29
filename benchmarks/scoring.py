#!/usr/bin/env python
"""Scoring speed: stock ``lm_eval --model hf`` against ``kinject-rag`` with the prefix cache off and on
(issue: faster scoring), on kinject MMLU 0-/5-shot and current events with RAG.

    .venv/bin/python benchmarks/scoring.py --shared ../shared/data [--subjects anatomy] [--formats lettered,cloze] \
        [--shots 0,5] [--batch-sizes 8] [--arms hf,off,on] [--rag-task current_events_cloze] [--limit N] [--out F]

Every cell is one ``lm_eval`` process (the stock console script, as a user runs it), so wall time
includes start-up and peak RSS is that process's own. Printed per cell: wall, evaluation time (lm-eval's
``total_evaluation_time_seconds``), tokens/s (the tokens the plain path scores ÷ evaluation time),
peak RSS, and the ratios the issue names: hf ÷ cache-on wall (speed-up), 5-shot ÷ 0-shot wall per arm.
The RAG cells (``kinject-rag`` with ``kb=``; stock ``hf`` has no retrieval) compare cache off and on.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TOKENS = re.compile(r"prefix cache: (\d+) requests .*; (\d+) of (\d+) tokens computed")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _task(subject: str, fmt: str, shots: int) -> str:
    return f"kinject_mmlu_{'cloze_' if fmt == 'cloze' else ''}{subject}_{shots}shot"


def _cell(arm: str, task: str, batch_size: str, args, kb: str | None) -> dict:
    """Run one ``lm_eval`` process; wall, evaluation time, peak RSS, accuracy, tokens."""
    from lm_eval_kinject.presets import resolve_pretrained

    if arm == "hf":
        model_args = f"pretrained={resolve_pretrained(None)['pretrained']},dtype=float32,max_length=8192"
        model = "hf"
    else:
        model, model_args = "kinject-rag", f"prefix_cache={arm == 'on'}"
        if kb:
            model_args += f",kb={kb},retriever=bm25,k={args.k}"
    with tempfile.TemporaryDirectory() as out:
        command = [str(BIN / "lm_eval"), "--model", model, "--model_args", model_args, "--tasks", task,
                   "--batch_size", batch_size, "--device", "cpu", "--output_path", out,
                   "--metadata", json.dumps({"mmlu_dir": str(args.shared / "mmlu"),
                                             "current_events_dir": str(args.shared / "current_events_sample")})]
        if args.limit:
            command += ["--limit", str(args.limit)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        log = Path(out) / "lm_eval.log"
        start = time.perf_counter()
        with log.open("w") as sink:  # to a file, so that wait4 can reap the child and read its own peak RSS
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, text=True, env=env)
            _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        stderr = log.read_text()
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"{arm} {task} failed:\n{stderr[-3000:]}")
        results = json.loads(sorted(Path(out).rglob("results_*.json"))[-1].read_text())
    match = TOKENS.search(stderr)
    return {"arm": arm, "task": task, "batch_size": batch_size, "wall_s": wall,
            "eval_s": float(results["total_evaluation_time_seconds"]), "acc": results["results"][task]["acc,none"],
            "tokens": int(match.group(3)) if match else None,
            "tokens_computed": int(match.group(2)) if match else None,
            "peak_rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--subjects", type=_csv, default=["anatomy"])
    parser.add_argument("--formats", type=_csv, default=["lettered"])
    parser.add_argument("--shots", type=_csv, default=["0", "5"])
    parser.add_argument("--batch-sizes", type=_csv, default=["8"])
    parser.add_argument("--arms", type=_csv, default=["hf", "off", "on"])
    parser.add_argument("--rag-task", default="current_events_cloze", help="'' to skip the RAG cells")
    parser.add_argument("-k", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write every cell as JSON here")
    args = parser.parse_args()

    cells = [(arm, _task(s, f, int(n)), bs, None) for bs in args.batch_sizes for s in args.subjects
             for f in args.formats for n in args.shots for arm in args.arms]
    kb_dir = None
    if args.rag_task:
        kb_dir = tempfile.TemporaryDirectory()
        from lm_eval_kinject.corpus import read_source
        from lm_eval_kinject.kb import build_kb

        source = args.shared / "current_events_sample" / "chunks.jsonl"
        kb = build_kb(read_source(source), Path(kb_dir.name) / "kb", sources=[str(source)], show_progress=False)
        cells += [(arm, args.rag_task, bs, str(kb.path)) for bs in args.batch_sizes for arm in args.arms if arm != "hf"]
    rows = []
    for i, (arm, task, bs, kb) in enumerate(cells, 1):
        row = _cell(arm, task, bs, args, kb)
        row["rag"] = kb is not None
        rows.append(row)
        print(f"[{i}/{len(cells)}] {arm:>3} {task}{' +RAG' if kb else ''} bs={bs}: wall {row['wall_s']:.1f} s, "
              f"eval {row['eval_s']:.1f} s, acc {row['acc']:.3f}", flush=True)
    tokens = {(r["task"], r["rag"]): r["tokens"] for r in rows if r["tokens"]}
    print("\n| task | RAG | batch | arm | acc | wall s | eval s | tokens/s | peak RSS MB | speed-up vs hf (wall) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    by = {(r["task"], r["rag"], r["batch_size"], r["arm"]): r for r in rows}
    for r in rows:
        n = tokens.get((r["task"], r["rag"]))
        ref = by.get((r["task"], r["rag"], r["batch_size"], "hf" if not r["rag"] else "off"))
        speed = f"{ref['wall_s'] / r['wall_s']:.2f}x" if ref else "-"
        print(f"| {r['task']} | {'yes' if r['rag'] else 'no'} | {r['batch_size']} | {r['arm']} | {r['acc']:.3f} | "
              f"{r['wall_s']:.1f} | {r['eval_s']:.1f} | {n / r['eval_s'] if n else float('nan'):.0f} | "
              f"{r['peak_rss_mb']:.0f} | {speed} |")
    print("\n5-shot ÷ 0-shot wall (goal with the cache on: <= 1.5; stock ~2.4):")
    for (task, rag, bs, arm), r in by.items():
        if task.endswith("_5shot") and (zero := by.get((task[:-5] + "0shot", rag, bs, arm))):
            print(f"  {task[:-6]} bs={bs} {arm}: {r['wall_s'] / zero['wall_s']:.2f} "
                  f"(evaluation only: {r['eval_s'] / zero['eval_s']:.2f})")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
