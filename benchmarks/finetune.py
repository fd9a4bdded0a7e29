#!/usr/bin/env python
"""Fine-tuning throughput: `kinject finetune` (full, LoRA) against a bare PyTorch training loop on the
same model, data, batch and optimiser; tokens/s and peak RSS, ratios printed from one run.

    .venv/bin/python benchmarks/finetune.py --shared ../shared/data [--steps 20] [--block-size 256] [--batch-size 4]

Each arm runs in its own process (so peak RSS is its own); arms alternate over --repeats rounds and
the best round is kept, so a noisy neighbour on the machine does not decide the ratio. Time counts
the training loop only (from the first step to the last optimiser step), not model loading or saving.
Goal (issue: finetune): kinject full / bare >= 1.0, i.e. no overhead of ours.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _blocks(kb_path: str, block_size: int, model: str):
    from transformers import AutoTokenizer

    from lm_eval_kinject.finetune.data import pack, training_texts
    from lm_eval_kinject.kb import KnowledgeBase
    from lm_eval_kinject.presets import resolve_pretrained

    folder = resolve_pretrained(model)["pretrained"]
    texts = training_texts(KnowledgeBase.load(Path(kb_path)), None, 0, 0, True, False)
    return folder, pack(texts.train, AutoTokenizer.from_pretrained(folder), block_size, seed=0)


def _bare(args) -> dict:
    """The reference: a plain loop, as a user would write it with torch + transformers only."""
    import torch
    from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup

    folder, blocks = _blocks(args.kb, args.block_size, args.model)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # what Trainer does on a bf16 GPU: fp32 master weights, bf16 autocast
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, args.steps // 10), args.steps)
    loader = torch.utils.data.DataLoader(blocks, batch_size=args.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    tokens, step, started = 0, 0, time.perf_counter()
    while step < args.steps:
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast:
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += int(batch["attention_mask"].sum())
            step += 1
            if step == args.steps:
                break
    if device == "cuda":
        torch.cuda.synchronize()
    return {"tokens": tokens, "seconds": time.perf_counter() - started, "final_loss": loss.item()}


def _kinject(args, method: str) -> dict:
    from lm_eval_kinject.finetune import FinetuneConfig, finetune

    with tempfile.TemporaryDirectory() as tmp:
        config = FinetuneConfig(kb=args.kb, out=str(Path(tmp) / "out"), method=method, max_steps=args.steps,
                                model=args.model,
                                block_size=args.block_size, batch_size=args.batch_size, save_steps=10_000,
                                logging_steps=max(1, args.steps // 4), show_progress=False)
        training = finetune(config).metadata["training"]
    return {"tokens": training["tokens_this_session"], "seconds": training["seconds_this_session"],
            "final_loss": training["final_loss"]}


def _child(args) -> None:
    result = _bare(args) if args.arm == "bare" else _kinject(args, args.arm)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import torch

    if torch.cuda.is_available():
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("runs/ft_benchmark"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--arms", default="bare,full,lora")
    parser.add_argument("--model", default="smollm2-135m", help="preset or model folder")
    parser.add_argument("--kb-path", type=Path, help="an existing KB to train on (default: built from --shared)")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--kb", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        return _child(args)

    args.work.mkdir(parents=True, exist_ok=True)
    from finetune_accuracy import question_chunk_kb  # the same KB as the accuracy benchmark

    kb = args.kb_path or question_chunk_kb(args.shared, args.work)
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for arm in args.arms.split(","):
            cmd = [sys.executable, __file__, "--arm", arm, "--kb", str(kb), "--steps", str(args.steps),
                   "--block-size", str(args.block_size), "--batch-size", str(args.batch_size), "--model", args.model]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if out.returncode or not line:
                sys.exit(f"arm {arm} failed:\n{out.stderr[-3000:]}")
            result = json.loads(line[-1][7:])
            result["tokens_per_s"] = result["tokens"] / result["seconds"]
            if arm not in best or result["tokens_per_s"] > best[arm]["tokens_per_s"]:
                best[arm] = {**result, "peak_rss_mib": max(result["peak_rss_mib"],
                                                           best.get(arm, {}).get("peak_rss_mib", 0))}
    reference = best.get("bare")
    import torch

    where = (f"{torch.cuda.get_device_name()} (bf16 autocast)" if torch.cuda.is_available()
             else f"CPU, fp32 ({os.cpu_count()} cores)")
    print(f"{args.steps} steps of {args.batch_size} x {args.block_size} tokens, {args.model}, {where}, "
          f"best of {args.repeats}\n")
    print("| arm | tokens/s | ratio vs bare | peak RSS MiB | RSS ratio | peak GPU MiB | final loss |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for arm, r in best.items():
        ratio = r["tokens_per_s"] / reference["tokens_per_s"] if reference else float("nan")
        rss = r["peak_rss_mib"] / reference["peak_rss_mib"] if reference else float("nan")
        gpu = f"{r['peak_gpu_mib']:.0f}" if "peak_gpu_mib" in r else "–"
        print(f"| {arm} | {r['tokens_per_s']:.1f} | {ratio:.2f}x | {r['peak_rss_mib']:.0f} | {rss:.2f}x | {gpu} | "
              f"{r['final_loss']:.4f} |")
    (args.work / "finetune_benchmark.json").write_text(json.dumps(best, indent=2) + "\n")


if __name__ == "__main__":
    main()
