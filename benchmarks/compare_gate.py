"""The CI gate on a real regression: ``kinject compare`` between a proper run and one whose FT checkpoint was trained on
shuffled text (the words of every chunk shuffled, seeded), and between two runs of the same cells.

    python benchmarks/compare_gate.py --proper runs/current_events --out runs/compare_gate

``--proper`` is a run folder of ``configs/current_events.yaml`` with the ``injection_cpu`` cells finished
(base, base+rag, ft-reg, ft-reg+rag and the astronomy control cells). The script writes two grid configs into OUT and
runs them with ``kinject grid``:

- ``again``: the ``rag`` experiment (base and base+rag on all 324 questions), the same cells computed afresh in a
  new folder: two runs of one grid;
- ``shuffled``: ``injection_cpu``'s base, FT-reg and FT-reg + RAG, except that FT-reg trains on the shuffled copy of
  the 388 chunks (``train_kb``; retrieval still reads the proper KB). With no arm that trains on QA pairs there is no
  held-out split, so these cells score all 324 questions and compare pairs them with the proper run's cells on the
  162 held-out ones (by question id).

then ``kinject compare PROPER again`` (expected: exit 0, "no significant change") and ``kinject compare PROPER
shuffled`` (expected: exit 1, the closed-book FT-reg cell flagged, base not). Prints each command's exit code and
summary. Time on 2 CPU cores: ~45 min (FT-reg on 2 x 89k tokens ~28 min; seven cells).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KINJECT_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
EXPERIMENT = "injection_cpu"


def shuffle_words(source: Path, target: Path, seed: int = 0) -> int:
    """Copy a chunks JSONL with the words of each title and text shuffled (ids kept); the count of chunks."""
    rng = random.Random(seed)
    lines = []
    for line in source.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        for field in ("title", "article", "text"):
            if isinstance(row.get(field), str):
                words = row[field].split()
                rng.shuffle(words)
                row[field] = " ".join(words)
        lines.append(json.dumps(row, ensure_ascii=False))
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def config(experiment: str, arms: list[str], train_kb: dict | None = None) -> dict:
    """``configs/current_events.yaml`` reduced to one experiment with these arms; with ``train_kb`` the fine-tuned
    arms train on that KB (and, with no arm that trains on questions, every question is scored)."""
    spec = yaml.safe_load((REPO / "configs" / "current_events.yaml").read_text(encoding="utf-8"))
    spec["vars"]["data"] = str(SHARED)
    chosen = {**spec["experiments"][experiment], "arms": arms}
    spec["experiments"] = {experiment: chosen}
    spec["knowledge_bases"] = {"current_events": spec["knowledge_bases"]["current_events"]}
    if train_kb:
        spec["knowledge_bases"]["shuffled"] = train_kb
        chosen["train_kb"] = "shuffled"
        chosen.pop("qa", None)
        chosen.pop("qa_split", None)
    return spec


def kinject(*args: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "kinject"), *args]
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, text=True, capture_output=args[0] == "compare")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proper", type=Path, required=True, help="finished run folder of configs/current_events.yaml")
    parser.add_argument("--out", type=Path, default=Path("runs/compare_gate"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the word shuffle")
    args = parser.parse_args()
    if not (args.proper / "grid.json").is_file():
        raise SystemExit(f"--proper {args.proper}: not a grid run folder (no grid.json)")
    args.out.mkdir(parents=True, exist_ok=True)
    shuffled = args.out / "shuffled_chunks.jsonl"
    n = shuffle_words(SHARED / "current_events_v2" / "chunks.jsonl", shuffled, args.seed)
    print(f"{shuffled}: {n} chunks, words shuffled (seed {args.seed})")
    runs = {"again": config("rag", ["base", "base+rag"]),
            "shuffled": config(EXPERIMENT, ["base", "ft-reg", "ft-reg+rag"], {"sources": [str(shuffled.resolve())]})}
    summary = {}
    for name, spec in runs.items():
        path = args.out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        start = time.perf_counter()
        if kinject("grid", str(path), "--out", str(args.out / name)).returncode != 0:
            raise SystemExit(f"kinject grid {path} failed")
        grid_s = time.perf_counter() - start
        result = kinject("compare", str(args.proper), str(args.out / name), "--json", str(args.out / f"{name}.json"))
        print(result.stdout, result.stderr, sep="")
        cells = json.loads((args.out / f"{name}.json").read_text())["cells"] if result.returncode != 2 else []
        summary[name] = {"grid_s": round(grid_s), "exit": result.returncode,
                         "flagged": [c["key"] for c in cells if c["verdict"] == "drop"],
                         "cells": {c["key"]: [round(c["acc_baseline"], 3), round(c["acc_new"], 3),
                                              float(f"{c['p_holm']:.3g}")] for c in cells}}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
