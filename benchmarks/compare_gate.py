"""The CI gate on a real regression: ``kinject compare`` between a proper run and one whose FT checkpoint was trained on
shuffled text (the words of every chunk shuffled, seeded), and between two runs of the same cells.

    python benchmarks/compare_gate.py --proper runs/current_events --out runs/compare_gate

``--proper`` is a run folder of ``configs/current_events.yaml`` with the ``injection_cpu`` cells finished
(base, base+rag, ft-reg, ft-reg+rag and the astronomy control cells). The script writes two grid configs into OUT and
runs them with ``kinject grid``:

- ``again``: the ``rag`` experiment (base and base+rag on all 324 questions), the same cells computed afresh in a
  new folder: two runs of one grid;
- ``proper``: ``injection_cpu``'s base, FT-reg and FT-reg + RAG on all 324 questions (FT-reg trains on no QA pair, so
  every question may be scored); the FT-reg checkpoint of ``--proper`` is copied in and reused, not trained again;
- ``shuffled``: the same cells, except that FT-reg trains on the shuffled copy of the 388 chunks (``train_kb``;
  retrieval still reads the proper KB).

then ``kinject compare PROPER again`` (expected: exit 0, "no significant change") and ``kinject compare OUT/proper
OUT/shuffled``, 324 questions a cell (expected: exit 1, the damaged FT-reg cells flagged, base not). ``kinject compare
PROPER shuffled`` is printed too: paired on the 162 held-out questions of ``--proper``'s cells, half the power.
Time on 2 CPU cores: ~52 min (FT-reg on 2 x 89k tokens ~31 min; twelve cells).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
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


def config(experiment: str, arms: list[str], train_kb: dict | None = None, all_questions: bool = False) -> dict:
    """``configs/current_events.yaml`` reduced to one experiment with these arms; with ``train_kb`` the fine-tuned
    arms train on that KB; with ``all_questions`` (or ``train_kb``: no arm here trains on questions) every question
    is scored."""
    spec = yaml.safe_load((REPO / "configs" / "current_events.yaml").read_text(encoding="utf-8"))
    spec["vars"]["data"] = str(SHARED)
    chosen = {**spec["experiments"][experiment], "arms": arms}
    spec["experiments"] = {experiment: chosen}
    spec["knowledge_bases"] = {"current_events": spec["knowledge_bases"]["current_events"]}
    if train_kb:
        spec["knowledge_bases"]["shuffled"] = train_kb
        chosen["train_kb"] = "shuffled"
    if train_kb or all_questions:
        chosen.pop("qa", None)
        chosen.pop("qa_split", None)
    return spec


def _link(source: str, target: str) -> None:
    """A hard link where the file system allows it (a checkpoint is read, never written, by the cells), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


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
    arms = ["base", "ft-reg", "ft-reg+rag"]
    runs = {"again": config("rag", ["base", "base+rag"]),
            "proper": config(EXPERIMENT, arms, all_questions=True),
            "shuffled": config(EXPERIMENT, arms, {"sources": [str(shuffled.resolve())]})}
    # the proper FT-reg checkpoint is the same training run (checkpoints are keyed by what they train on): reuse it
    for checkpoint in (args.proper / "checkpoints").glob("*"):
        if not (args.out / "proper" / "checkpoints" / checkpoint.name).exists():
            shutil.copytree(checkpoint, args.out / "proper" / "checkpoints" / checkpoint.name, copy_function=_link)
    summary, grid_s = {}, {}
    for name, spec in runs.items():
        path = args.out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        start = time.perf_counter()
        if kinject("grid", str(path), "--out", str(args.out / name)).returncode != 0:
            raise SystemExit(f"kinject grid {path} failed")
        grid_s[name] = round(time.perf_counter() - start)
    for name, baseline, new in (("again", args.proper, "again"), ("shuffled_heldout", args.proper, "shuffled"),
                                ("shuffled", args.out / "proper", "shuffled")):
        result = kinject("compare", str(baseline), str(args.out / new), "--json", str(args.out / f"{name}.json"))
        print(result.stdout, result.stderr, sep="")
        cells = json.loads((args.out / f"{name}.json").read_text())["cells"] if result.returncode != 2 else []
        summary[name] = {"grid_s": grid_s[new], "exit": result.returncode,
                         "flagged": [c["key"] for c in cells if c["verdict"] == "drop"],
                         "cells": {c["key"]: [round(c["acc_baseline"], 3), round(c["acc_new"], 3),
                                              float(f"{c['p_holm']:.3g}")] for c in cells}}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
