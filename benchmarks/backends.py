#!/usr/bin/env python
"""Wall time of the three kinject backends on the same tasks, in one run (issue: RAG on every backend).

    .venv-vllm/bin/python benchmarks/backends.py --shared ../shared/data [--limit 40] [--k 3] \
        [--backends hf-on,hf-off,vllm,api] [--tasks kinject_mmlu_cloze_anatomy_5shot,current_events_cloze] [--out F]

Runs in ``.venv-vllm`` (``bash scripts/setup_vllm_env.sh``), where all three models are installed, on the
embedded SmolLM2-135M folder (fp32, max length 2048):

- ``hf-on`` / ``hf-off``: ``kinject-rag`` with its prefix cache on / off (off = every request scored whole,
  as stock ``hf`` does);
- ``vllm``: ``kinject-rag-vllm`` (vLLM in the ``lm_eval`` process; vLLM skips its own prefix cache for
  requests that ask for prompt log-probabilities);
- ``api``: ``kinject-rag-api`` against ``vllm serve`` started here once (its start-up is reported apart:
  the cell's wall is the client's ``lm_eval`` process against a warm server).

Every cell is one stock ``lm_eval`` process. Current events runs with retrieval (a KB over the sample's
388 chunks, BM25, k = ``--k``). Printed per cell: wall, lm-eval's evaluation time, tokens/s (the tokens
of every request's context + continuation ÷ evaluation time), accuracy, and each backend's wall and
evaluation time as a ratio of ``hf-on``'s on the same task.

vLLM's CPU backend keeps one core for its scheduler unless ``VLLM_CPU_NUM_OF_RESERVED_CPU`` says otherwise; on a
2-core machine that halves its speed, so this benchmark sets it to 0 unless you set it (it is recorded in ``--out``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
MAX_LENGTH = 2048
ENGINE = f"dtype=float32,max_model_len={MAX_LENGTH},gpu_memory_utilization=0.2,enforce_eager=True"


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _model_args(backend: str, folder: str, server: str | None) -> tuple[str, str]:
    if backend in ("hf-on", "hf-off"):
        return "kinject-rag", f"pretrained={folder},dtype=float32,max_length={MAX_LENGTH}," \
                              f"prefix_cache={backend == 'hf-on'}"
    if backend == "vllm":
        return "kinject-rag-vllm", f"pretrained={folder},{ENGINE}"
    return "kinject-rag-api", f"model={folder},base_url={server}/v1/completions,tokenizer={folder}," \
                              f"tokenizer_backend=huggingface,max_length={MAX_LENGTH},num_concurrent=1"


def _tokens(samples_file: Path, tokenizer) -> int:
    total = 0
    for line in samples_file.read_text().splitlines():
        arguments = json.loads(line)["arguments"]
        pairs = ([a["arg_0"], a["arg_1"]] for a in arguments.values()) if isinstance(arguments, dict) else arguments
        for context, continuation in pairs:
            total += len(tokenizer(context + continuation, add_special_tokens=False)["input_ids"])
    return total


def _cell(backend: str, task: str, args, server: str | None, kb: str | None, tokenizer) -> dict:
    model, model_args = _model_args(backend, args.folder, server)
    if kb:
        model_args += f",kb={kb},retriever=bm25,k={args.k}"
    with tempfile.TemporaryDirectory() as out:
        command = [str(BIN / "lm_eval"), "--model", model, "--model_args", model_args, "--tasks", task,
                   "--batch_size", "16", "--output_path", out, "--log_samples", "--limit", str(args.limit),
                   "--metadata", json.dumps({"mmlu_dir": str(args.shared / "mmlu"),
                                             "current_events_dir": str(args.shared / "current_events_sample")})]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{backend} {task} failed:\n{done.stderr[-3000:]}")
        results = json.loads(next(Path(out).rglob("results_*.json")).read_text())
        samples = next(Path(out).rglob(f"samples_{task}_*.jsonl"))
        tokens = _tokens(samples, tokenizer)
    evaluation = float(results["total_evaluation_time_seconds"])
    return {"backend": backend, "task": task, "rag": bool(kb), "wall_s": round(wall, 1),
            "evaluation_s": round(evaluation, 1), "tokens": tokens, "tokens_per_s": round(tokens / evaluation, 1),
            "acc": results["results"][task]["acc,none"]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server:
    """``vllm serve`` on the model folder, stopped on exit."""

    def __init__(self, folder: str):
        self.folder = folder

    def __enter__(self) -> _Server:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log")  # noqa: SIM115 - closed in __exit__
        start = time.perf_counter()
        self.process = subprocess.Popen(
            [str(BIN / "vllm"), "serve", self.folder, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
             "--max-model-len", str(MAX_LENGTH), "--gpu-memory-utilization", "0.2", "--enforce-eager",
             "--max-logprobs", "5"], stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"})
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/v1/models", timeout=5):
                    break
            except OSError:
                if self.process.poll() is not None:
                    self.log.seek(0)
                    raise SystemExit(f"vllm serve did not start:\n{self.log.read()[-3000:]}") from None
                time.sleep(2)
        self.startup_s = round(time.perf_counter() - start, 1)
        return self

    def __exit__(self, *exc) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--backends", type=_csv, default=["hf-on", "hf-off", "vllm", "api"])
    parser.add_argument("--tasks", type=_csv, default=["kinject_mmlu_cloze_anatomy_5shot", "current_events_cloze"])
    parser.add_argument("--out", type=Path, help="Write the cells as JSON here.")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    from transformers import AutoTokenizer

    from lm_eval_kinject.corpus import read_source
    from lm_eval_kinject.kb import build_kb
    from lm_eval_kinject.presets import resolve_pretrained

    args.folder = resolve_pretrained("smollm2-135m")["pretrained"]
    tokenizer = AutoTokenizer.from_pretrained(args.folder)
    cells, server_startup = [], None
    with tempfile.TemporaryDirectory() as work:
        kb = None
        if "current_events_cloze" in args.tasks:
            source = args.shared / "current_events_sample" / "chunks.jsonl"
            kb = str(build_kb(read_source(source), Path(work) / "kb", sources=[str(source)], show_progress=False).path)
        for backend in args.backends:
            server = _Server(args.folder) if backend == "api" else None
            with server or contextlib.nullcontext():
                if server:
                    server_startup = server.startup_s
                for task in args.tasks:
                    cell = _cell(backend, task, args, server.url if server else None,
                                 kb if task.startswith("current_events") else None, tokenizer)
                    cells.append(cell)
                    print(json.dumps(cell), flush=True)
    base = {c["task"]: c for c in cells if c["backend"] == "hf-on"}
    print(f"\n{'backend':8} {'task':36} {'rag':>4} {'wall s':>7} {'eval s':>7} {'tok/s':>8} {'acc':>6} "
          f"{'wall ÷ hf-on':>13} {'eval ÷ hf-on':>13}")
    for c in cells:
        ref = base.get(c["task"])
        ratio = (f"{c['wall_s'] / ref['wall_s']:13.2f} {c['evaluation_s'] / ref['evaluation_s']:13.2f}" if ref
                 else f"{'-':>13} {'-':>13}")
        print(f"{c['backend']:8} {c['task']:36} {'yes' if c['rag'] else 'no':>4} {c['wall_s']:7.1f} "
              f"{c['evaluation_s']:7.1f} {c['tokens_per_s']:8.1f} {c['acc']:6.3f} {ratio}")
    if server_startup is not None:
        print(f"vllm serve start-up (not in the api cells' wall): {server_startup} s")
    if args.out:
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(json.dumps({"limit": args.limit, "k": args.k, "server_startup_s": server_startup,
                                   "vllm_cpu_num_of_reserved_cpu": os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"],
                                   "cells": cells}, indent=1))
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
