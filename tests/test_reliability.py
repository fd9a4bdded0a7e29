"""Damage and bad input, one test per row of the reliability issue: KBs that refuse to lie, run folders that
survive damage, stale staging folders, byte-identical KB builds, and the smaller messages."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from kinject_testing import CURRENT_EVENTS_DIR, invoke_kinject, run_cli

from lm_eval_kinject.errors import ConfigError, KinjectError


@pytest.fixture
def kb_copy(ce_kb, tmp_path):
    copy = tmp_path / "kb"
    shutil.copytree(ce_kb.path, copy)
    return copy


def _manifest(kb) -> dict:
    return json.loads((kb / "manifest.json").read_text())


def _write_manifest(kb, manifest: dict) -> None:
    (kb / "manifest.json").write_text(json.dumps(manifest))


def test_kb_that_lost_a_chunk_line_is_refused(kb_copy):
    """Row 2: a line gone from chunks.jsonl and the manifest edited to match (sizes and counts)."""
    from lm_eval_kinject.kb import KnowledgeBase

    lines = (kb_copy / "chunks.jsonl").read_text().splitlines(keepends=True)
    (kb_copy / "chunks.jsonl").write_text("".join(lines[:10] + lines[11:]))
    manifest = _manifest(kb_copy)
    manifest["counts"]["chunks"] -= 1
    manifest["files"]["chunks.jsonl"] = (kb_copy / "chunks.jsonl").stat().st_size
    _write_manifest(kb_copy, manifest)
    with pytest.raises(KinjectError, match=r"chunks.jsonl 387, manifest.json counts.chunks 387, embeddings.npy rows "
                                           r"388, bm25 documents 388 disagree; the KB is damaged"):
        KnowledgeBase.load(kb_copy)


def test_unknown_key_in_a_manifest_block_is_one_line(kb_copy):
    """Row 3."""
    from lm_eval_kinject.kb import KnowledgeBase

    manifest = _manifest(kb_copy)
    manifest["bm25"]["k3"] = 1.0
    _write_manifest(kb_copy, manifest)
    with pytest.raises(KinjectError, match=r"manifest.json: unknown key\(s\) \['k3'\] in its 'bm25' block"):
        KnowledgeBase.load(kb_copy)


def test_same_size_tampering_is_caught(kb_copy):
    """Row 4: a chunk's text edited (same size) fails on load; reordered embedding rows fail `kb verify`."""
    from lm_eval_kinject.kb import KnowledgeBase, verify_kb

    assert verify_kb(kb_copy) == []
    embeddings = np.load(kb_copy / "embeddings.npy")
    np.save(kb_copy / "embeddings.npy", embeddings[::-1].copy(), allow_pickle=False)
    KnowledgeBase.load(kb_copy)  # shapes agree: loading stays cheap ...
    assert verify_kb(kb_copy) == [f"{kb_copy / 'embeddings.npy'}: content differs from the manifest's SHA-256 "
                                  "(edited after the build)"]  # ... and `kinject kb verify` finds it
    lines = (kb_copy / "chunks.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    record = json.loads(lines[0])
    record["text"] = record["text"][::-1]  # the same characters: the same size
    lines[0] = json.dumps(record, ensure_ascii=False) + "\n"
    (kb_copy / "chunks.jsonl").write_text("".join(lines), encoding="utf-8")
    assert (kb_copy / "chunks.jsonl").stat().st_size == _manifest(kb_copy)["files"]["chunks.jsonl"]
    with pytest.raises(KinjectError, match=r"chunks.jsonl does not match the manifest's fingerprint"):
        KnowledgeBase.load(kb_copy)


def test_kb_verify_command(kb_copy):
    from click.testing import CliRunner

    from lm_eval_kinject.cli import main

    ok = CliRunner().invoke(main, ["kb", "verify", str(kb_copy)])
    assert ok.exit_code == 0 and "OK" in ok.output
    np.save(kb_copy / "embeddings.npy", np.load(kb_copy / "embeddings.npy")[::-1].copy(), allow_pickle=False)
    bad = CliRunner().invoke(main, ["kb", "verify", str(kb_copy)])
    assert bad.exit_code == 1 and "1 problem(s)" in bad.output and "embeddings.npy" in bad.output


def test_kb_eval_says_how_many_questions_were_skipped(ce_kb, tmp_path):
    """Row 5."""
    rows = [json.loads(line) for line in (CURRENT_EVENTS_DIR / "questions.jsonl").read_text().splitlines()]
    for row in rows[:72]:
        row["chunk_id"] = "elsewhere#" + row["chunk_id"]
    rows[72]["chunk_id"] = None
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = invoke_kinject(["kb", "eval", str(ce_kb.path), str(questions), "--retriever", "bm25"])
    assert out.exit_code == 0
    assert "| 11 |" in out.output  # questions scored
    assert "72 question(s) skipped: their gold chunk_id is not in the KB (e.g. 'elsewhere#" in out.output
    assert "1 question(s) skipped: no chunk_id" in out.output


def test_damaged_run_folder_cells_are_named_and_not_done(tmp_path):
    """Row 6: truncated grid.json / result.json, a missing result.json, an empty cell.json."""
    from lm_eval_kinject.errors import DataError
    from lm_eval_kinject.grid.runner import cell_status
    from lm_eval_kinject.report.results import load_entries

    run = tmp_path / "run"
    cells = {"a": "done", "b": "done", "c": "done", "d": "done", "e": "failed"}
    grid = {"cells": [{"hash": h, "experiment": "x", "model": "m", "arm": "base", "task": "t", "role": "main"}
                      for h in cells]}
    result = {"acc": 1.0, "n": 1, "alias": "t", "num_fewshot": 0, "per_question": {"doc_id": [0], "correct": [1.0]}}
    for key, status in cells.items():
        (run / "cells" / key).mkdir(parents=True)
        (run / "cells" / key / "cell.json").write_text(json.dumps({"status": status, "error": "boom"}))
        if status == "done":
            (run / "cells" / key / "result.json").write_text(json.dumps(result))
    (run / "grid.json").write_text(json.dumps(grid))
    (run / "cells" / "b" / "result.json").write_text(json.dumps(result)[:20])  # truncated
    (run / "cells" / "c" / "result.json").unlink()  # missing
    (run / "cells" / "d" / "cell.json").write_text("")  # empty
    assert [cell_status(run / "cells" / k) for k in cells] == ["done", "damaged", "damaged", "damaged", "failed"]
    assert cell_status(run / "cells" / "never") is None
    _, entries = load_entries(run)
    damaged = {e.hash: e.error for e in entries if e.status == "damaged"}
    assert damaged["b"].startswith(f"{run / 'cells' / 'b' / 'result.json'}: not valid JSON, truncated or edited")
    assert damaged["c"] == f"{run / 'cells' / 'c' / 'result.json'}: missing"
    assert damaged["d"] == f"{run / 'cells' / 'd' / 'cell.json'}: empty"
    (run / "grid.json").write_text(json.dumps(grid)[:30])
    with pytest.raises(DataError, match=r"grid.json: not valid JSON, truncated or edited"):
        load_entries(run)


def test_stale_staging_folders_of_dead_writers_are_removed(tmp_path):
    """Row 11: a SIGKILLed build leaves `.NAME.tmp-PID`; the next write of NAME removes it (not a live one's)."""
    from lm_eval_kinject.artifacts import atomic_dir

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".kb.tmp-{dead.pid}"
    (stale / "bm25").mkdir(parents=True)
    live = tmp_path / f".kb.tmp-{os.getppid()}"  # our parent is alive
    live.mkdir()
    with atomic_dir(tmp_path / "kb") as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert not stale.exists() and live.exists() and (tmp_path / "kb" / "manifest.json").is_file()


def test_two_builds_of_one_kb_are_byte_identical(tmp_path):
    """Row 12: two `kinject kb build` processes (different hash seeds) write the same files, timestamps aside."""
    source = tmp_path / "chunks.jsonl"
    source.write_text("".join((CURRENT_EVENTS_DIR / "chunks.jsonl").read_text().splitlines(keepends=True)[:40]))
    for name, seed in (("one", "1"), ("two", "2")):
        out = run_cli(["kinject", "kb", "build", str(source), "--out", str(tmp_path / name)],
                      env={"PYTHONHASHSEED": seed})
        assert out.returncode == 0, out.stderr[-2000:]
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    for name in files:
        one, two = (tmp_path / "one" / name).read_bytes(), (tmp_path / "two" / name).read_bytes()
        if name.name == "manifest.json":
            one, two = ({k: v for k, v in json.loads(m).items() if k not in ("created", "build_seconds")}
                        for m in (one, two))
        assert one == two, name


def test_kb_build_refuses_a_foreign_folder_without_suggesting_overwrite(tmp_path):
    """Smaller: `--out` an existing non-KB folder said "pass --overwrite", then refused --overwrite."""
    from lm_eval_kinject.corpus import Document
    from lm_eval_kinject.kb import build_kb

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match=r"exists and is not a knowledge base \(no manifest.json\); refusing "
                                              r"to replace it: choose another --out"):
            build_kb([Document("d", "t", "text", "s")], tmp_path / "mine", overwrite=overwrite)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_kb_build_checks_its_input_before_loading_the_embedder(tmp_path, monkeypatch):
    """Smaller: a malformed source fails before the ~20 s embedder load."""
    import lm_eval_kinject.kb as kb_module
    from lm_eval_kinject.corpus import read_source
    from lm_eval_kinject.errors import DataError

    def no_embedder(*args, **kwargs):
        raise AssertionError("the embedder was loaded before the input was read")

    monkeypatch.setattr(kb_module, "load_embedder", no_embedder)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": \n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: not valid JSON"):
        kb_module.build_kb(read_source(bad), tmp_path / "kb")


def _campaign_cases(tmp_path, ce_kb):
    """(argv, expected message) of inputs the second bad-input campaign (benchmarks/bad_inputs.py) found
    accepted, unnamed or ending in a traceback."""
    chunks = str(CURRENT_EVENTS_DIR / "chunks.jsonl")
    bad_manifest = tmp_path / "kb-list-manifest"
    shutil.copytree(ce_kb.path, bad_manifest)
    (bad_manifest / "manifest.json").write_text("[1, 2]")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.yaml").write_text("seed: 0\nmodels: {m: [\n")
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "kb-settings.yaml").write_text(json.dumps({
        "models": {"m": "smollm2-135m"}, "knowledge_bases": {"ce": {"sources": [chunks], "chunk_tokens": 0}},
        "experiments": {"e": {"tasks": ["current_events_cloze"], "kb": "ce", "arms": ["base", "base+rag"]}}}))
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    return [
        (["kb", "build", chunks, "--out", str(tmp_path / "a"), "--exact-below", "-5"],
         r"exact_below=-5: expected an integer >= 0"),
        (["kb", "build", chunks, "--out", str(tmp_path / "b"), "--titles", chunks],
         r"--titles selects Wikipedia pages: it needs --wikipedia-dump or --mediawiki"),
        (["kb", "build", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "c")],
         r"no documents in .*empty.jsonl: nothing to index"),
        (["kb", "search", str(bad_manifest), "x"], r"kb-list-manifest/manifest.json: expected a JSON object, got list"),
        (["grid", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "r1"), "--check"],
         r"bad.yaml:3:1: not valid YAML \(expected the node content, but found '<stream end>'\)"),
        (["grid", str(tmp_path / "empty.yaml"), "--out", str(tmp_path / "r2"), "--check"],
         r"empty.yaml: the grid config is empty"),
        (["grid", str(tmp_path / "kb-settings.yaml"), "--out", str(tmp_path / "r3"), "--check"],
         r"knowledge_bases.ce: chunk_tokens=0: expected an integer >= 8"),
        (["report", str(tmp_path), "--tolerance", "-1"], r"Invalid value for '--tolerance': -1.0 is not in the range"),
        (["demo", "--out", str(tmp_path / "d"), "--epochs", "2", "--fact-passes", "4"],
         r"give --epochs or --fact-passes, not both"),
        (["demo", "--out", str(tmp_path / "foreign"), "--quick"],
         r"foreign exists and is not a demo run folder \(no demo.yaml\)"),
        (["finetune", "--kb", str(ce_kb.path), "--out", str(tmp_path / "ft"), "--qa", str(tmp_path / "noqa.jsonl")],
         r"noqa.jsonl: no such questions file"),
        (["finetune", "--kb", str(ce_kb.path), "--out", str(tmp_path / "ft"), "--qa-practice",
          str(CURRENT_EVENTS_DIR / "questions.jsonl")], r"qa_practice: needs qa_practice_chunks too"),
        (["finetune", "--kb", str(ce_kb.path), "--out", str(tmp_path / "ft"), "--qa-practice",
          str(CURRENT_EVENTS_DIR / "questions.jsonl"), "--qa-practice-chunks", str(tmp_path / "nochunks.jsonl")],
         r"nochunks.jsonl: no such file or knowledge base \(qa_practice_chunks"),
        (["demo", "--out", str(tmp_path / "d"), "--practice-events", "0"],
         r"--arms ft-raft,ft-ctl,ft-raft\+rag: train on the QA pairs \(ft-ctl: the documents\) of practice events; "
         r"--practice-events 0 gives them none"),
        (["demo", "--out", str(tmp_path / "d"), "--practice-events", "2"], r"practice_events=2: expected 0, or 4\.\.260"),
        (["paraphrase", str(ce_kb.path), "--out", str(tmp_path / "p.jsonl"), "--temperature", "-1", "--llm",
          "openai-compatible:http://127.0.0.1:9/v1,model=m"], r"--temperature must be in \[0, 2\], got -1"),
        (["eval", "--model", "kinject-rag", "--tasks", "current_event_cloze", "--limit", "1"],
         r"Error: lm_eval: Tasks not found: current_event_cloze"),
    ]


def test_second_campaign_inputs_get_one_clear_line(tmp_path, ce_kb):
    import re

    for argv, expected in _campaign_cases(tmp_path, ce_kb):
        result = invoke_kinject(argv)
        assert result.exit_code != 0, (argv, result.output)
        assert re.search(expected, result.output), (argv, result.output)
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine" and not (tmp_path / "a").exists()
