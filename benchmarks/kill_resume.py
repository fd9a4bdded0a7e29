#!/usr/bin/env python
"""kill -9 and resume (issue: reliability): a KB build, a fine-tuning and a grid, each killed with SIGKILL
mid-way, run again with the same command, and compared with an uninterrupted run of the same settings.

    .venv/bin/python benchmarks/kill_resume.py --shared ../shared/data [--only kb,finetune,grid] [--out F]

- KB build (the 388 current-events chunks): killed at several moments (embedding, index writing); the re-run
  must leave no staging folder and give files byte-identical to the uninterrupted build (manifest timestamps
  aside).
- Fine-tuning (40 chunks, 8 steps, a checkpoint every 2): killed after its second checkpoint; ``--resume``
  must finish with weights bit-identical to the uninterrupted run's.
- Grid (base and base+rag on two tasks, 6 questions each): killed while its third cell runs; the re-run
  evaluates only what was not finished, and every cell's per-question results equal the uninterrupted run's.

Each kill is a real ``SIGKILL`` of the process group of the installed ``kinject`` console script.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / argv[0]), *argv[1:]], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=ENV, start_new_session=True)


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, env=ENV)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return done


def _kill_when(process: subprocess.Popen, ready, timeout: float = 1200) -> float:
    """SIGKILL the process group as soon as ``ready()``; returns the seconds it ran."""
    start = time.monotonic()
    while not ready():
        if process.poll() is not None:
            raise SystemExit("the process finished before the moment it was to be killed at")
        if time.monotonic() - start > timeout:
            break
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return time.monotonic() - start


def _files(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name == "manifest.json":
                manifest = {k: v for k, v in json.loads(data).items() if k not in ("created", "build_seconds")}
                data = json.dumps(manifest, sort_keys=True).encode()
            out[str(path.relative_to(folder))] = hashlib.sha256(data).hexdigest()
    return out


def _staging(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def kb(shared: Path, work: Path) -> dict:
    source = str(shared / "current_events_sample" / "chunks.jsonl")
    reference = work / "kb-reference"
    started = time.monotonic()
    _run(["kinject", "kb", "build", source, "--out", str(reference)])
    build_s = time.monotonic() - started
    results = []
    for share in (0.3, 0.6, 0.9):  # start-up and embedding / embedding / indexing and writing
        out = work / f"kb-killed-{int(share * 100)}"
        process = _start(["kinject", "kb", "build", source, "--out", str(out)], work / "kb.log")
        started = time.monotonic()
        ran = _kill_when(process, lambda: time.monotonic() - started > share * build_s)
        left = _staging(work)
        finished = out.exists()  # the kill came after the final rename: nothing to redo
        if not finished:
            _run(["kinject", "kb", "build", source, "--out", str(out)])
        same = _files(out) == _files(reference)
        results.append({"killed_after_s": round(ran, 1), "uninterrupted_build_s": round(build_s, 1),
                        "finished_before_kill": finished, "staging_left_by_kill": left,
                        "staging_after_rerun": _staging(work), "identical_to_uninterrupted": same})
    return {"what": "kb build (388 chunks)", "runs": results,
            "ok": all(r["identical_to_uninterrupted"] and not r["staging_after_rerun"] for r in results)}


def finetune(shared: Path, work: Path) -> dict:
    rows = (shared / "current_events_sample" / "chunks.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    chunks = work / "ft-chunks.jsonl"
    chunks.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    kb_dir = work / "ft-kb"
    _run(["kinject", "kb", "build", str(chunks), "--out", str(kb_dir)])
    common = ["--kb", str(kb_dir), "--max-steps", "8", "--save-steps", "2", "--block-size", "128", "--batch-size", "2",
              "--learning-rate", "1e-4", "--no-show-progress"]
    _run(["kinject", "finetune", *common, "--out", str(work / "ft-reference")])
    out = work / "ft-killed"
    process = _start(["kinject", "finetune", *common, "--out", str(out)], work / "ft.log")
    ran = _kill_when(process, lambda: len(list((out / "checkpoints").glob("checkpoint-*"))) >= 2
                     if (out / "checkpoints").is_dir() else False)
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
    _run(["kinject", "finetune", *common, "--out", str(out), "--resume"])
    identical = _weights(out) == _weights(work / "ft-reference")
    meta = json.loads((out / "kinject_finetune.json").read_text()) if (out / "kinject_finetune.json").is_file() else {}
    return {"what": "finetune (40 chunks, 8 steps, checkpoint every 2)", "killed_after_s": round(ran, 1),
            "checkpoints_at_kill": checkpoints, "resumed_from": (meta.get("training") or {}).get("resumed_from"),
            "weights_identical_to_uninterrupted": identical, "ok": identical}


def _weights(folder: Path) -> str:
    from safetensors.numpy import load_file

    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        tensors = load_file(str(path))
        for name in sorted(tensors):
            digest.update(name.encode())
            digest.update(tensors[name].tobytes())
    return digest.hexdigest()


def grid(shared: Path, work: Path) -> dict:
    import yaml

    config = {
        "seed": 0, "models": {"m": {"pretrained": "smollm2-135m"}},
        "task_metadata": {"current_events_dir": str(shared / "current_events_sample")},
        "knowledge_bases": {"ce": {"sources": [str(shared / "current_events_sample" / "chunks.jsonl")]}},
        "lm_eval": {"batch_size": 8, "limit": 6},
        "experiments": {"e": {"tasks": ["current_events_cloze", "current_events"], "kb": "ce",
                              "arms": ["base", "base+rag"]}}}
    path = work / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    _run(["kinject", "grid", str(path), "--out", str(work / "grid-reference")])
    out = work / "grid-killed"
    process = _start(["kinject", "grid", str(path), "--out", str(out)], work / "grid.log")
    ran = _kill_when(process, lambda: (out / "cells").is_dir() and sum(
        (c / "result.json").is_file() for c in (out / "cells").iterdir()) >= 2)
    done_at_kill = sum((c / "result.json").is_file() for c in (out / "cells").iterdir())
    rerun = _run(["kinject", "grid", str(path), "--out", str(out)])
    same = _cells(out) == _cells(work / "grid-reference")
    return {"what": "grid (4 cells)", "killed_after_s": round(ran, 1), "cells_done_at_kill": done_at_kill,
            "rerun_says": rerun.stdout.strip().splitlines()[-1] if rerun.stdout.strip() else "",
            "per_question_identical": same, "staging_left": _staging(out / "cells"), "ok": same}


def _cells(run: Path) -> dict:
    out = {}
    for cell in (run / "cells").iterdir():
        result = json.loads((cell / "result.json").read_text())
        out[cell.name] = (result["acc"], result["per_question"])
    return out


PARTS = {"kb": kb, "finetune": finetune, "grid": grid}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--only", type=lambda v: v.split(","), default=list(PARTS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            work = Path(tmp) / name
            work.mkdir()
            results[name] = PARTS[name](args.shared, work)
            print(json.dumps(results[name]), flush=True)
    print("\n" + "\n".join(f"{name:9} {'OK' if r['ok'] else 'FAILED'}: {r['what']}" for name, r in results.items()))
    if args.out:
        tmp_out = args.out.with_name(f".{args.out.name}.tmp")
        tmp_out.write_text(json.dumps(results, indent=1))
        tmp_out.replace(args.out)
    sys.exit(0 if all(r["ok"] for r in results.values()) else 1)


if __name__ == "__main__":
    main()
