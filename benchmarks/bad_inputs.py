#!/usr/bin/env python
"""The bad-input campaign (issue: reliability): every command, fed what a careless or unlucky user feeds it.

    .venv/bin/python benchmarks/bad_inputs.py --shared ../shared/data [--only kb,grid,...] [--out F]

Each case is one real process of the installed console scripts (``kinject``, stock ``lm_eval``), as a
user runs it, in a scratch folder holding a small real KB, questions, paraphrases, a finished tiny grid
run and damaged copies of each. A case is **handled well** when the process exits non-zero, prints no
traceback, and its last line is an error that names what the case is about (a file, a key, an argument:
the case's ``names``). Otherwise it is ``traceback``, ``accepted`` (exit 0: a silent wrong result) or
``unclear`` (one line, but it does not name the culprit). Printed: every case not handled well, the counts
per command and in total; ``--out`` writes every case as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


@dataclass
class Case:
    group: str
    what: str
    argv: list[str]
    names: str  # the message must contain this (case-insensitive)


def _run(argv: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("KINJECT_DEBUG", None)
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def _verdict(case: Case, done: subprocess.CompletedProcess) -> tuple[str, str]:
    output = (done.stdout + "\n" + done.stderr).strip()
    lines = [line for line in done.stderr.splitlines() if line.strip()] or \
            [line for line in done.stdout.splitlines() if line.strip()] or [""]
    last = lines[-1].strip()
    if "Traceback (most recent call last)" in output:
        return "traceback", last
    if done.returncode == 0:
        return "accepted", last
    if case.names.strip("-").replace("-", "_").lower() not in output.replace("-", "_").lower():
        return "unclear", last
    return "handled", last


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


def _damaged_kb(good: Path, work: Path, name: str, damage) -> Path:
    out = work / "kbs" / name
    shutil.copytree(good, out)
    damage(out)
    return out


def _edit_manifest(edit):
    def damage(kb: Path) -> None:
        manifest = json.loads((kb / "manifest.json").read_text())
        edit(manifest)
        (kb / "manifest.json").write_text(json.dumps(manifest))
    return damage


def _fixtures(shared: Path, work: Path) -> dict:
    """A small real KB (40 current-events chunks), questions of its chunks, paraphrases, a finished grid run."""
    ce = shared / "current_events_sample"
    chunks = [json.loads(line) for line in (ce / "chunks.jsonl").read_text().splitlines()[:40]]
    ids = {c.get("id") or c.get("chunk_id") for c in chunks}
    questions = [q for q in (json.loads(line) for line in (ce / "questions.jsonl").read_text().splitlines())
                 if q.get("chunk_id") in ids]
    f = {"chunks": _jsonl(work / "chunks.jsonl", chunks), "questions": _jsonl(work / "questions.jsonl", questions),
         "paraphrases": ce / "paraphrases.jsonl", "ce_dir": ce, "mmlu": shared / "mmlu"}
    _write(work / "foreign" / "notes.txt", "mine")  # a user's folder, given where a command writes
    kb = work / "kb"
    built = _run(["kinject", "kb", "build", str(f["chunks"]), "--out", str(kb)], work)
    if built.returncode:
        raise SystemExit(f"could not build the campaign's KB:\n{built.stderr[-2000:]}")
    f["kb"] = kb
    grid = _write(work / "grid.yaml", json.dumps({
        "seed": 0, "models": {"m": {"pretrained": "smollm2-135m"}},
        "task_metadata": {"current_events_dir": str(ce)}, "lm_eval": {"batch_size": 8, "limit": 2},
        "experiments": {"e": {"tasks": ["current_events_cloze"], "arms": ["base"]}}}))
    ran = _run(["kinject", "grid", str(grid), "--out", str(work / "run")], work, timeout=1200)
    if ran.returncode:
        raise SystemExit(f"could not run the campaign's grid:\n{ran.stderr[-2000:]}")
    f["grid"], f["run"] = grid, work / "run"
    return f


def _grid_variants(work: Path, f: dict) -> list[Case]:
    base = {"seed": 0, "models": {"m": {"pretrained": "smollm2-135m"}},
            "task_metadata": {"current_events_dir": str(f["ce_dir"])},
            "knowledge_bases": {"ce": {"sources": [str(f["chunks"])]}},
            "experiments": {"e": {"tasks": ["current_events_cloze"], "kb": "ce", "arms": ["base", "base+rag"]}}}

    def variant(name: str, edit, names: str) -> Case:
        config = json.loads(json.dumps(base))
        edit(config)
        path = _write(work / "grids" / f"{name}.yaml", json.dumps(config))
        return Case("grid", name, ["kinject", "grid", str(path), "--out", str(work / "gridruns" / name), "--check"],
                    names)

    def put(path: str, value):
        def edit(config):
            *parents, last = path.split(".")
            node = config
            for key in parents:
                node = node.setdefault(key, {})
            node[last] = value
        return edit

    def drop(path: str):
        def edit(config):
            *parents, last = path.split(".")
            node = config
            for key in parents:
                node = node[key]
            del node[last]
        return edit

    cases = [
        variant("limit-word", put("lm_eval.limit", "eight"), "lm_eval.limit"),
        variant("limit-negative", put("lm_eval.limit", -3), "lm_eval.limit"),
        variant("batch-size-word", put("lm_eval.batch_size", "eight"), "lm_eval.batch_size"),
        variant("backend-unknown", put("lm_eval.backend", "vlm"), "backend"),
        variant("lm-eval-unknown-key", put("lm_eval.num_fewshot", 5), "num_fewshot"),
        variant("arms-string", put("experiments.e.arms", "base"), "arms"),
        variant("arm-unknown", put("experiments.e.arms", ["base", "ft-rag"]), "ft-rag"),
        variant("arm-needs-kb", drop("experiments.e.kb"), "kb"),
        variant("kb-undefined", put("experiments.e.kb", "nope"), "nope"),
        variant("kb-source-missing", put("knowledge_bases.ce.sources", ["/nonexistent/chunks.jsonl"]),
                "/nonexistent/chunks.jsonl"),
        variant("kb-unknown-key", put("knowledge_bases.ce.chunk_size", 100), "chunk_size"),
        variant("kb-chunk-tokens-zero", put("knowledge_bases.ce.chunk_tokens", 0), "chunk_tokens"),
        variant("task-unknown", put("experiments.e.tasks", ["current_event_cloze"]), "current_event_cloze"),
        variant("tasks-empty", put("experiments.e.tasks", []), "tasks"),
        variant("experiments-empty", put("experiments", {}), "experiments"),
        variant("top-unknown-key", put("experimnts", {}), "experimnts"),
        variant("seed-word", put("seed", "zero"), "seed"),
        variant("model-unknown-arg", put("models.m.kbb", 1), "kbb"),
        variant("model-no-pretrained", put("models.m", {}), "pretrained"),
        variant("retrieval-k-zero", put("retrieval", {"k": 0}), "k"),
        variant("retriever-unknown", put("retrieval", {"retriever": "bm26"}), "bm26"),
        variant("finetune-unknown-key", put("finetune", {"epoch": 3}), "epoch"),
        variant("finetune-lr-word", put("finetune", {"learning_rate": "fast"}), "learning_rate"),
        variant("n-paraphrases-negative", put("experiments.e.n_paraphrases", [-1]), "n_paraphrases"),
        variant("ft-par-without-paraphrases", put("experiments.e.arms", ["base", "ft-par"]), "paraphrases"),
        variant("api-with-ft-arm", lambda c: (put("lm_eval.backend", "api")(c), put("experiments.e.arms",
                                                                                    ["base", "ft-reg"])(c)), "api"),
        variant("control-task-unknown", put("experiments.e.control_tasks", ["nope_task"]), "nope_task"),
        variant("var-undefined", put("task_metadata.current_events_dir", "${NO_SUCH_VARIABLE_X}"),
                "NO_SUCH_VARIABLE_X"),
    ]
    _write(work / "grids" / "bad-yaml.yaml", "seed: 0\nmodels: {m: [\n")
    _write(work / "grids" / "not-mapping.yaml", "- a\n- b\n")
    _write(work / "grids" / "empty.yaml", "")
    for name in ("bad-yaml", "not-mapping", "empty"):
        cases.append(Case("grid", name, ["kinject", "grid", str(work / "grids" / f"{name}.yaml"), "--out",
                                         str(work / "gridruns" / name), "--check"], f"{name}.yaml"))
    cases.append(Case("grid", "config-missing", ["kinject", "grid", str(work / "nope.yaml"), "--out",
                                                 str(work / "gridruns" / "x")], "nope.yaml"))
    return cases


def _run_damage(work: Path, f: dict) -> list[Case]:
    """report / grid --check on damaged copies of a finished run."""
    cases = []
    cell = next((f["run"] / "cells").iterdir())

    def damaged(name: str, damage) -> Path:
        out = work / "runs" / name
        shutil.copytree(f["run"], out)
        damage(out, out / "cells" / cell.name)
        return out

    variants = {
        "grid-json-truncated": (lambda run, c: _write(run / "grid.json", (run / "grid.json").read_text()[:50]),
                                "grid.json"),
        "grid-json-missing": (lambda run, c: (run / "grid.json").unlink(), "grid.json"),
        "result-json-truncated": (lambda run, c: _write(c / "result.json", (c / "result.json").read_text()[:40]),
                                  "result.json"),
        "cell-json-empty": (lambda run, c: _write(c / "cell.json", ""), "cell.json"),
        "result-json-missing": (lambda run, c: (c / "result.json").unlink(), "result.json"),
    }
    for name, (damage, names) in variants.items():
        run = damaged(name, damage)
        # report: a damaged cell is named and left out; a damaged grid.json makes the run unreadable
        cases.append(Case("report", name, ["kinject", "report", str(run), "--out", str(work / "reports" / name)],
                          names))
    cases += [
        Case("report", "run-missing", ["kinject", "report", str(work / "no-run")], "no-run"),
        Case("report", "not-a-run", ["kinject", "report", str(f["kb"])], str(f["kb"].name)),
        Case("report", "expect-missing", ["kinject", "report", str(f["run"]), "--out", str(work / "r1"), "--expect",
                                          str(work / "nope.json")], "nope.json"),
        Case("report", "expect-not-json", ["kinject", "report", str(f["run"]), "--out", str(work / "r2"), "--expect",
                                           str(f["chunks"])], "chunks.jsonl"),
        Case("report", "tolerance-negative", ["kinject", "report", str(f["run"]), "--out", str(work / "r3"),
                                              "--tolerance", "-1"], "tolerance"),
    ]
    return cases


def _kb_cases(work: Path, f: dict) -> list[Case]:
    good, chunks = f["kb"], f["chunks"]
    rows = chunks.read_text().splitlines()
    sources = {
        "empty-file": "",
        "not-json": rows[0] + "\n{not json\n",
        "json-array-line": rows[0] + "\n[1, 2]\n",
        "no-text-field": rows[0] + '\n{"id": "x", "title": "t"}\n',
        "text-not-string": rows[0] + '\n{"id": "x", "title": "t", "text": 5}\n',
        "duplicate-id-other-text": rows[0] + "\n" + json.dumps({**json.loads(rows[0]), "text": "Other text."}) + "\n",
        "control-char": rows[0] + '\n{"id": "y", "text": "a\u0001b' + '"}\n',
        "cr-only": rows[0] + "\r" + rows[1] + "\r",
        "binary": "\x00\x01\x02garbage",
    }
    cases = []
    for name, text in sources.items():
        path = _write(work / "sources" / f"{name}.jsonl", text)
        cases.append(Case("kb build", name, ["kinject", "kb", "build", str(path), "--out", str(work / "out" / name)],
                          f"{name}.jsonl"))
    (work / "emptydir").mkdir(exist_ok=True)
    build = ["kinject", "kb", "build", str(chunks), "--out"]
    cases += [
        Case("kb build", "source-missing", ["kinject", "kb", "build", str(work / "nope.jsonl"), "--out",
                                            str(work / "out" / "m")], "nope.jsonl"),
        Case("kb build", "source-empty-folder", ["kinject", "kb", "build", str(work / "emptydir"), "--out",
                                                 str(work / "out" / "e")], "emptydir"),
        Case("kb build", "out-foreign-folder", [*build, str(work / "foreign")], "foreign"),
        Case("kb build", "out-existing-kb", [*build, str(good)], "--overwrite"),
        Case("kb build", "chunk-tokens-zero", [*build, str(work / "out" / "c0"), "--chunk-tokens", "0"],
             "chunk-tokens"),
        Case("kb build", "chunk-tokens-word", [*build, str(work / "out" / "cw"), "--chunk-tokens", "many"],
             "chunk-tokens"),
        Case("kb build", "overlap-too-big", [*build, str(work / "out" / "ov"), "--chunk-tokens", "64", "--overlap",
                                             "64"], "overlap"),
        Case("kb build", "overlap-negative", [*build, str(work / "out" / "on"), "--overlap", "-1"], "overlap"),
        Case("kb build", "embedder-missing", [*build, str(work / "out" / "em"), "--embedder", str(work / "noemb")],
             "noemb"),
        Case("kb build", "hnsw-m-zero", [*build, str(work / "out" / "hm"), "--hnsw-m", "0"], "hnsw"),
        Case("kb build", "exact-below-negative", [*build, str(work / "out" / "eb"), "--exact-below", "-5"],
             "exact-below"),
        Case("kb build", "only-chunks-of-missing", [*build, str(work / "out" / "oc"), "--only-chunks-of",
                                                    str(work / "noq.jsonl")], "noq.jsonl"),
        Case("kb build", "only-chunks-of-no-match", [*build, str(work / "out" / "on2"), "--only-chunks-of",
                                                     str(_jsonl(work / "q-other.jsonl", [{"id": "q", "chunk_id":
                                                                                          "zzz", "question": "?",
                                                                                          "choices": list("abcd"),
                                                                                          "answer": 0}]))],
             "q-other.jsonl"),
        Case("kb build", "text-field-absent", [*build, str(work / "out" / "tf"), "--text-field", "body"], "body"),
        Case("kb build", "titles-without-dump", [*build, str(work / "out" / "ti"), "--titles", str(chunks)],
             "titles"),
    ]
    # damaged KBs, read by kb info / search / eval / verify
    lines = (good / "chunks.jsonl").read_text().splitlines(keepends=True)
    damaged = {
        "lost-chunk-line": lambda kb: _write(kb / "chunks.jsonl", "".join(lines[:3] + lines[4:])),
        "manifest-truncated": lambda kb: _write(kb / "manifest.json", (kb / "manifest.json").read_text()[:60]),
        "manifest-missing": lambda kb: (kb / "manifest.json").unlink(),
        "manifest-extra-bm25-key": _edit_manifest(lambda m: m["bm25"].update(k3=1.0)),
        "manifest-no-counts": _edit_manifest(lambda m: m.pop("counts")),
        "manifest-not-object": lambda kb: _write(kb / "manifest.json", "[1, 2]"),
        "embeddings-missing": lambda kb: (kb / "embeddings.npy").unlink(),
        "embeddings-truncated": lambda kb: (kb / "embeddings.npy").write_bytes(
            (kb / "embeddings.npy").read_bytes()[:500]),
        "bm25-folder-missing": lambda kb: shutil.rmtree(kb / "bm25"),
        "chunks-not-json": lambda kb: _write(kb / "chunks.jsonl", "".join(lines[:2]) + "{oops\n"
                                             + "".join(lines[3:])),
    }
    for name, damage in damaged.items():
        kb = _damaged_kb(good, work, name, damage)
        cases.append(Case("kb search", name, ["kinject", "kb", "search", str(kb), "election"], name))
    tampered = _damaged_kb(good, work, "tampered-text", lambda kb: _write(
        kb / "chunks.jsonl", "".join(lines[:1] + [_same_size_edit(lines[1])] + lines[2:])))
    cases += [
        Case("kb verify", "tampered-text", ["kinject", "kb", "verify", str(tampered)], "tampered-text"),
        Case("kb info", "missing", ["kinject", "kb", "info", str(work / "nokb")], "nokb"),
        Case("kb info", "not-a-kb", ["kinject", "kb", "info", str(work / "foreign")], "foreign"),
        Case("kb search", "k-zero", ["kinject", "kb", "search", str(good), "x", "-k", "0"], "-k"),
        Case("kb search", "k-word", ["kinject", "kb", "search", str(good), "x", "-k", "some"], "-k"),
        Case("kb search", "retriever-unknown", ["kinject", "kb", "search", str(good), "x", "--retriever", "bm26"],
             "bm26"),
        Case("kb search", "fusion-depth-zero", ["kinject", "kb", "search", str(good), "x", "--retriever", "hybrid",
                                                "--fusion-depth", "0"], "fusion-depth"),
        Case("kb search", "rrf-k-negative", ["kinject", "kb", "search", str(good), "x", "--rrf-k", "-1"], "rrf-k"),
        Case("kb search", "ef-search-zero", ["kinject", "kb", "search", str(good), "x", "--ef-search", "0"],
             "ef-search"),
        Case("kb search", "empty-query", ["kinject", "kb", "search", str(good), "   "], "query"),
        Case("kb eval", "questions-missing", ["kinject", "kb", "eval", str(good), str(work / "noq.jsonl")],
             "noq.jsonl"),
        Case("kb eval", "questions-not-json", ["kinject", "kb", "eval", str(good),
                                               str(_write(work / "q-bad.jsonl", "{bad\n"))], "q-bad.jsonl"),
        Case("kb eval", "questions-no-chunk-ids", ["kinject", "kb", "eval", str(good), str(_jsonl(
            work / "q-noids.jsonl", [{"id": "a", "question": "Who?", "choices": list("wxyz"), "answer": 0}]))],
             "chunk_id"),
        Case("kb eval", "k-word", ["kinject", "kb", "eval", str(good), str(f["questions"]), "-k", "1,x"], "-k"),
        Case("kb eval", "k-zero", ["kinject", "kb", "eval", str(good), str(f["questions"]), "-k", "0"], "-k"),
        Case("kb eval", "retriever-unknown", ["kinject", "kb", "eval", str(good), str(f["questions"]),
                                              "--retriever", "bm25,dns"], "dns"),
    ]
    return cases


def _same_size_edit(line: str) -> str:
    """The chunk's first text character swapped for another ASCII one: same size, other content."""
    start = line.index('"text": "') + len('"text": "')
    return line[:start] + ("X" if line[start] != "X" else "Y") + line[start + 1:]


def _finetune_cases(work: Path, f: dict) -> list[Case]:
    ft = ["kinject", "finetune", "--kb", str(f["kb"]), "--out"]
    bad_config = _write(work / "ft-bad.yaml", "epochs: [3\n")
    unknown_config = _write(work / "ft-unknown.yaml", "epoch: 3\n")
    paraphrases_bad = _write(work / "para-bad.jsonl", '{"chunk_id": "zzz", "paraphrases": ["a"]}\n')
    cases = [
        ("kb-missing", ["kinject", "finetune", "--kb", str(work / "nokb"), "--out", str(work / "ft" / "a")], "nokb"),
        ("kb-not-a-kb", ["kinject", "finetune", "--kb", str(work / "foreign"), "--out", str(work / "ft" / "b")],
         "foreign"),
        ("no-out", ["kinject", "finetune", "--kb", str(f["kb"])], "out"),
        ("epochs-zero", [*ft, str(work / "ft" / "c"), "--epochs", "0"], "epochs"),
        ("lr-too-big", [*ft, str(work / "ft" / "d"), "--learning-rate", "3"], "learning_rate"),
        ("method-unknown", [*ft, str(work / "ft" / "e"), "--method", "qlora"], "method"),
        ("block-size-zero", [*ft, str(work / "ft" / "f"), "--block-size", "0"], "block_size"),
        ("batch-size-word", [*ft, str(work / "ft" / "g"), "--batch-size", "four"], "batch-size"),
        ("max-steps-zero", [*ft, str(work / "ft" / "h"), "--max-steps", "0"], "max_steps"),
        ("warmup-above-one", [*ft, str(work / "ft" / "i"), "--warmup-ratio", "1.5"], "warmup_ratio"),
        ("paraphrases-missing", [*ft, str(work / "ft" / "j"), "--paraphrases", str(work / "nopara.jsonl"),
                                 "--n-paraphrases", "2"], "nopara.jsonl"),
        ("n-paraphrases-without-file", [*ft, str(work / "ft" / "k"), "--n-paraphrases", "2"], "paraphrases"),
        ("n-paraphrases-negative", [*ft, str(work / "ft" / "l"), "--n-paraphrases", "-1"], "n_paraphrases"),
        ("paraphrases-of-other-chunks", [*ft, str(work / "ft" / "m"), "--paraphrases", str(paraphrases_bad),
                                         "--n-paraphrases", "1"], "para-bad.jsonl"),
        ("qa-missing", [*ft, str(work / "ft" / "n"), "--qa", str(work / "noqa.jsonl")], "noqa.jsonl"),
        ("qa-fraction-above-one", [*ft, str(work / "ft" / "o"), "--qa", str(f["questions"]), "--qa-train-fraction",
                                   "1.5"], "qa_train_fraction"),
        ("model-missing-folder", [*ft, str(work / "ft" / "p"), "--model", str(work / "nomodel")], "nomodel"),
        ("gguf-file-missing", [*ft, str(work / "ft" / "q"), "--gguf-file", "nope.gguf"], "nope.gguf"),
        ("config-bad-yaml", ["kinject", "finetune", "--config", str(bad_config)], "ft-bad.yaml"),
        ("config-unknown-key", ["kinject", "finetune", "--config", str(unknown_config)], "epoch"),
        ("config-missing", ["kinject", "finetune", "--config", str(work / "noconf.yaml")], "noconf.yaml"),
        ("lora-r-zero", [*ft, str(work / "ft" / "r"), "--method", "lora", "--lora-r", "0"], "lora_r"),
        ("lora-target-unknown", [*ft, str(work / "ft" / "s"), "--method", "lora", "--lora-target", "q_projj",
                                 "--max-steps", "1"], "q_projj"),
        ("out-foreign-folder", [*ft, str(work / "foreign")], "foreign"),
        ("fact-passes-and-epochs-word", [*ft, str(work / "ft" / "t"), "--fact-passes", "many"], "fact-passes"),
    ]
    return [Case("finetune", name, argv, names) for name, argv, names in cases]


def _other_cases(work: Path, f: dict) -> list[Case]:
    llm = ["--llm", "openai-compatible:http://127.0.0.1:9/v1,model=m"]
    paraphrase = ["kinject", "paraphrase", str(f["kb"]), *llm, "--out"]
    generate = ["kinject", "questions", "generate", str(f["kb"]), *llm, "--out"]
    cases = [
        Case("paraphrase", "source-missing", ["kinject", "paraphrase", str(work / "nokb"), "--out",
                                              str(work / "p.jsonl"), "--llm", "openai:x"], "nokb"),
        Case("paraphrase", "n-zero", [*paraphrase, str(work / "p1.jsonl"), "--n", "0"], "--n"),
        Case("paraphrase", "llm-unknown-scheme", [*paraphrase, str(work / "p2.jsonl"), "--llm", "gpt4"], "gpt4"),
        Case("paraphrase", "llm-unreachable", [*paraphrase, str(work / "p3.jsonl"), "--max-retries", "0",
                                               "--limit", "1", "--no-cache"], "127.0.0.1:9"),
        Case("paraphrase", "temperature-negative", [*paraphrase, str(work / "p4.jsonl"), "--temperature", "-1"],
             "temperature"),
        Case("paraphrase", "max-overlap-above-one", [*paraphrase, str(work / "p5.jsonl"), "--max-overlap", "2"],
             "overlap"),
        Case("paraphrase", "openai-no-key", [*paraphrase, str(work / "p6.jsonl"), "--llm", "openai:gpt-4o-mini",
                                             "--limit", "1", "--no-cache"], "OPENAI_API_KEY"),
        Case("questions", "source-missing", ["kinject", "questions", "generate", str(work / "nokb"), "--out",
                                             str(work / "qg"), "--llm", "openai:x"], "nokb"),
        Case("questions", "per-chunk-zero", [*generate, str(work / "qg1"), "--per-chunk", "0"], "per-chunk"),
        Case("questions", "keep-above-per-chunk", [*generate, str(work / "qg2"), "--per-chunk", "2", "--keep", "3"],
             "keep"),
        Case("questions", "dedup-above-one", [*generate, str(work / "qg3"), "--dedup", "1.5"], "dedup"),
        Case("questions", "llm-unknown-scheme", [*generate, str(work / "qg4"), "--llm", "claude"], "claude"),
        Case("questions", "review-missing-folder", ["kinject", "questions", "review", str(work / "noqs"), "--export",
                                                    str(work / "r.csv")], "noqs"),
        Case("questions", "review-apply-missing", ["kinject", "questions", "review", str(work), "--apply",
                                                   str(work / "nope.csv")], "nope.csv"),
        Case("model", "preset-unknown", ["kinject", "model", "path", "smollm3-135m"], "smollm3-135m"),
        Case("demo", "n-paraphrases-word", ["kinject", "demo", "--out", str(work / "d1"), "--n-paraphrases", "two"],
             "n-paraphrases"),
        Case("demo", "arm-unknown", ["kinject", "demo", "--out", str(work / "d2"), "--arms", "base,ft-rag"],
             "ft-rag"),
        Case("demo", "events-zero", ["kinject", "demo", "--out", str(work / "d3"), "--events", "0"], "events"),
        Case("demo", "k-zero", ["kinject", "demo", "--out", str(work / "d4"), "-k", "0"], "-k"),
        Case("demo", "epochs-and-fact-passes", ["kinject", "demo", "--out", str(work / "d5"), "--epochs", "2",
                                                "--fact-passes", "4"], "fact-passes"),
        Case("demo", "out-foreign-folder", ["kinject", "demo", "--out", str(work / "foreign")], "foreign"),
        Case("demo", "control-task-unknown", ["kinject", "demo", "--out", str(work / "d6"), "--control-task",
                                              "nope_task"], "nope_task"),
        Case("eval", "kb-missing", ["kinject", "eval", "--model", "kinject-rag", "--model_args",
                                    f"kb={work / 'nokb'}", "--tasks", "current_events_cloze", "--limit", "1"], "nokb"),
        Case("eval", "task-unknown", ["kinject", "eval", "--model", "kinject-rag", "--tasks", "current_event_cloze",
                                      "--limit", "1"], "current_event_cloze"),
    ]
    return cases


def _lm_eval_cases(work: Path, f: dict) -> list[Case]:
    metadata = json.dumps({"current_events_dir": str(f["ce_dir"])})

    def lm_eval(what: str, model_args: str, names: str, meta: str = metadata, task: str = "current_events_cloze"):
        argv = ["lm_eval", "--model", "kinject-rag", "--tasks", task, "--limit", "2", "--metadata", meta]
        if model_args:
            argv += ["--model_args", model_args]
        return Case("lm_eval", what, argv, names)

    kb = f["kb"]
    cases = [
        lm_eval("k-word", f"kb={kb},k=abc", "k="),
        lm_eval("k-negative", f"kb={kb},k=-1", "k="),
        lm_eval("k-float", f"kb={kb},k=1.5", "k="),
        lm_eval("retriever-unknown", f"kb={kb},retriever=bm26", "bm26"),
        lm_eval("unknown-arg", "foo=1", "foo"),
        lm_eval("pretrained-missing", f"pretrained={work / 'nomodel'}", "nomodel"),
        lm_eval("kb-missing", f"kb={work / 'nokb'}", "nokb"),
        lm_eval("kb-not-a-kb", f"kb={work / 'foreign'}", "foreign"),
        lm_eval("template-unknown", f"kb={kb},template=fancy", "fancy"),
        lm_eval("query-field-unknown", f"kb={kb},query_field=nonexistent", "nonexistent"),
        lm_eval("oracle-without-gold", f"kb={kb},retriever=oracle", "oracle", task="kinject_mmlu_cloze_anatomy_0shot",
                meta=json.dumps({"mmlu_dir": str(f["mmlu"])})),
        lm_eval("prefix-cache-word", "prefix_cache=maybe", "prefix_cache"),
    ]
    rows = (f["ce_dir"] / "questions.jsonl").read_text().splitlines()
    folders = {
        "data-dir-missing": None,
        "questions-missing": {},
        "questions-not-json": {"questions.jsonl": "{bad\n"},
        "questions-empty": {"questions.jsonl": ""},
        "question-no-choices": {"questions.jsonl": json.dumps({"id": "a", "question": "Who?", "answer": 0}) + "\n"},
        "question-answer-out-of-range": {"questions.jsonl": json.dumps({"id": "a", "question": "Who?",
                                                                        "choices": ["x", "y"], "answer": 5}) + "\n"},
        "question-answer-word": {"questions.jsonl": json.dumps({"id": "a", "question": "Who?", "choices": ["x", "y"],
                                                                "answer": "x!"}) + "\n"},
        "question-duplicate-id": {"questions.jsonl": rows[0] + "\n" + rows[0] + "\n"},
        "question-not-object": {"questions.jsonl": "[1, 2]\n"},
        "question-choices-not-list": {"questions.jsonl": json.dumps({"id": "a", "question": "Who?",
                                                                     "choices": "x,y", "answer": 0}) + "\n"},
    }
    for name, files in folders.items():
        folder = work / "ce" / name
        if files is not None:
            folder.mkdir(parents=True, exist_ok=True)
            for file, text in files.items():
                _write(folder / file, text)
        cases.append(lm_eval(f"current-events-{name}", "", name,
                             meta=json.dumps({"current_events_dir": str(folder)})))
    return cases


GROUPS = {"kb": _kb_cases, "finetune": _finetune_cases, "grid": _grid_variants, "report": _run_damage,
          "other": _other_cases, "lm_eval": _lm_eval_cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--only", type=lambda v: v.split(","), default=list(GROUPS))
    parser.add_argument("--out", type=Path, help="Write every case and verdict here (JSON).")
    parser.add_argument("--timeout", type=int, default=180, help="Seconds after which a case counts as accepted.")
    args = parser.parse_args()
    unknown = set(args.only) - set(GROUPS)
    if unknown:
        parser.error(f"--only: unknown group(s) {sorted(unknown)}; valid: {', '.join(GROUPS)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("fixtures: a 40-chunk KB and a tiny finished grid run ...", flush=True)
        fixtures = _fixtures(args.shared, work)
        cases = [case for group in args.only for case in GROUPS[group](work, fixtures)]
        print(f"{len(cases)} cases", flush=True)
        for number, case in enumerate(cases, 1):
            start = time.perf_counter()
            try:
                done = _run(case.argv, work, timeout=args.timeout)
                verdict, last = _verdict(case, done)
            except subprocess.TimeoutExpired:
                verdict, last = "accepted", f"still running after {args.timeout} s: the bad input was taken"
            rows.append({"group": case.group, "case": case.what, "verdict": verdict, "last_line": last[:300],
                         "seconds": round(time.perf_counter() - start, 1),
                         "argv": [a.replace(tmp, "$WORK") for a in case.argv]})
            mark = "ok " if verdict == "handled" else verdict.upper()
            shown = last[:150].replace(tmp, "$WORK")
            print(f"[{number:3}/{len(cases)}] {mark:9} {case.group:10} {case.what:32} {shown}",
                  flush=True)
    print("\nper command: handled / tried")
    for group in dict.fromkeys(r["group"] for r in rows):
        mine = [r for r in rows if r["group"] == group]
        print(f"  {group:12} {sum(r['verdict'] == 'handled' for r in mine):3} / {len(mine)}")
    handled = sum(r["verdict"] == "handled" for r in rows)
    print(f"total: {handled} of {len(rows)} bad inputs handled well; "
          + ", ".join(f"{v} {sum(r['verdict'] == v for r in rows)}" for v in ("traceback", "accepted", "unclear")))
    if args.out:
        tmp_out = args.out.with_name(f".{args.out.name}.tmp")
        tmp_out.write_text(json.dumps(rows, indent=1, ensure_ascii=False))
        tmp_out.replace(args.out)


if __name__ == "__main__":
    main()
