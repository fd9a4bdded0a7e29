"""The fictional world: deterministic, self-consistent, unknowable to the base model; and `kinject demo`."""
from __future__ import annotations

import json
import math
import shutil
from collections import Counter

import pytest
from kinject_testing import CURRENT_EVENTS_DIR, MMLU_DIR, read_results, run_cli

from lm_eval_kinject.errors import ConfigError
from lm_eval_kinject.fictional import FictionalConfig, generate, write_world


def _read(folder, name):
    return [json.loads(line) for line in (folder / f"{name}.jsonl").read_text().splitlines()]


def test_same_seed_same_bytes_other_seed_other_world(tmp_path):
    a, b, c = (write_world(FictionalConfig(seed=s), tmp_path / name) for s, name in ((0, "a"), (0, "b"), (1, "c")))
    for name in ("chunks.jsonl", "questions.jsonl", "paraphrases.jsonl", "facts.jsonl", "manifest.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "chunks.jsonl").read_bytes() != (c / "chunks.jsonl").read_bytes()
    more = generate(FictionalConfig(paraphrases=9))  # sizes are independent streams
    assert more["questions"] == generate(FictionalConfig())["questions"]
    assert all(m["paraphrases"][:6] == p["paraphrases"]
               for m, p in zip(more["paraphrases"], generate(FictionalConfig())["paraphrases"]))


def test_every_answer_is_stated_in_its_chunk_and_every_paraphrase():
    world = generate(FictionalConfig(seed=3, events=40, paraphrases=8, asked=("town", "year", "leader", "organiser",
                                                                             "participants")))
    chunks = {c["chunk_id"]: c for c in world["chunks"]}
    paraphrases = {p["chunk_id"]: p["paraphrases"] for p in world["paraphrases"]}
    titles = {c["chunk_id"]: c["article"] for c in world["chunks"]}
    assert len(world["questions"]) == 40 * 5
    for q in world["questions"]:
        answer = q["choices"][q["answer"]]
        assert len(set(q["choices"])) == 4
        assert answer in chunks[q["chunk_id"]]["text"]
        assert all(answer in p for p in paraphrases[q["chunk_id"]])
        assert answer not in q["question"]
        assert titles[q["chunk_id"]] in q["question"]  # names its subject: answerable without the chunk
        # a distractor is never stated in this chunk
        assert not any(c in chunks[q["chunk_id"]]["text"] for i, c in enumerate(q["choices"]) if i != q["answer"])
    for chunk_id, texts in paraphrases.items():
        assert len(set(texts)) == 8 and chunks[chunk_id]["text"] not in texts
    positions = Counter(q["answer"] for q in world["questions"])
    assert max(positions.values()) - min(positions.values()) <= 1


def test_names_do_not_occur_in_real_text():
    world = generate(FictionalConfig(events=60))
    real = " ".join(p.read_text() for p in MMLU_DIR.rglob("*.csv")) + (CURRENT_EVENTS_DIR / "chunks.jsonl").read_text()
    names = ({w for f in world["facts"] for w in (f["town"], *f["leader"].split(), f["organiser"].split()[0])}
             | {f["title"].split()[0] for f in world["facts"]})
    assert len(names) > 200
    assert not [n for n in names if n in real]


@pytest.mark.parametrize("kwargs, expected", [
    ({"events": 3}, "events=3"), ({"asked": ("colour",)}, "asked=['colour']"), ({"paraphrases": -1}, "paraphrases=-1"),
    ({"events": 200, "practice_events": 100}, "practice_events=100: expected 0, or 4..80"),
])
def test_bad_world_settings(kwargs, expected):
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        FictionalConfig(**kwargs)


def test_cli_generate_and_the_default_world_task(tmp_path, embedded_dir):
    out = run_cli(["kinject", "fictional", "generate", "--seed", "2", "--events", "8", "--practice-events", "4",
                   "--out", str(tmp_path / "w")])
    assert out.returncode == 0, out.stderr
    assert len(_read(tmp_path / "w", "questions")) == 24 and "20 practice questions" in out.stdout
    assert len(_read(tmp_path / "w", "practice_questions")) == 20 and len(_read(tmp_path / "w", "practice_chunks")) == 4
    # nothing configured: the default world is generated once into the kinject cache
    cache = tmp_path / "cache"
    run = run_cli(["lm_eval", "--model", "kinject-rag", "--model_args", f"pretrained={embedded_dir}", "--tasks",
                   "kinject_fictional,kinject_fictional_cloze", "--limit", "4", "--output_path", str(tmp_path / "r")],
                  env={"KINJECT_CACHE_DIR": str(cache)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert {"kinject_fictional", "kinject_fictional_cloze"} <= set(read_results(tmp_path / "r")["results"])
    worlds = list((cache / "fictional").iterdir())
    assert len(worlds) == 1 and (worlds[0] / "manifest.json").is_file()


def _fictional_acc(lm, world, limit=None):
    from lm_eval import simple_evaluate

    from lm_eval_kinject.registration import task_manager

    out = simple_evaluate(model=lm, tasks=["kinject_fictional_cloze"], limit=limit,
                          task_manager=task_manager({"fictional_dir": str(world)}))
    return out["results"]["kinject_fictional_cloze"]["acc,none"], out["n-samples"]["kinject_fictional_cloze"]["effective"]


def test_base_model_is_at_chance_and_the_oracle_is_far_above(kinject_lm, tmp_path):
    import copy

    from lm_eval_kinject.corpus import read_source
    from lm_eval_kinject.kb import build_kb

    world = write_world(FictionalConfig(), tmp_path / "world")  # the default world
    lm = copy.copy(kinject_lm)
    lm.set_retrieval(None)
    acc, n = _fictional_acc(lm, world)
    half_width = 1.96 * math.sqrt(0.25 * 0.75 / n)
    assert n == 90 and abs(acc - 0.25) <= half_width, (acc, half_width)
    kb = build_kb(read_source(world / "chunks.jsonl"), tmp_path / "kb", show_progress=False)
    lm.set_retrieval(kb, k=1, retriever="oracle")
    oracle, n = _fictional_acc(lm, world, limit=45)
    # measured 1.000 (the demo: BM25 k=1 retrieves every gold chunk and scores 1.000 on all 90); the bound
    # leaves room for other CPUs' rounding and is still 9 standard errors (0.065 at n=45) above chance
    assert oracle >= 0.85, oracle


def test_demo_is_a_grid_resumes_and_equals_kinject_grid(tmp_path):
    """The quick demo, tiny: runs through the grid, reports like one, resumes, and `kinject grid` on its
    config gives the same cells with the same per-question results."""
    from kinject_testing import MMLU_DIR

    out = tmp_path / "demo"
    args = ["kinject", "demo", "--quick", "--events", "6", "--limit", "6", "--fact-passes", "2", "--out", str(out),
            "--control-task", "kinject_mmlu_cloze_anatomy_0shot"]
    env = {"KINJECT_MMLU_DIR": str(MMLU_DIR)}
    first = run_cli(args, env=env, timeout=1500)
    assert first.returncode == 0, first.stderr[-3000:]
    headers = [[c.strip() for c in line.split("|")[3:-1]] for line in first.stdout.splitlines()
               if line.startswith("| task | model |")]
    # one experiment, every arm on every question: Table 2's order, then ours; [1]: known vs unknown
    assert headers[0] == headers[1][2:] == ["Base", "Base + RAG", "FT-reg", "FT-par", "FT-RAFT"]
    assert "known vs unknown" in first.stdout and "FT-RAFT | FT-par" in first.stdout  # the paired test
    report = json.loads((out / "report.json").read_text())
    main = [c for c in report["cells"] if c["role"] == "main"]
    assert {c["experiment"] for c in main} == {"fictional"}
    assert sorted(c["arm"] for c in main) == ["base", "base+rag", "ft-par2", "ft-raft2", "ft-reg"]
    assert all(c["status"] == "done" and c["n"] == 6 for c in report["cells"] if c["role"] == "main")
    assert all(c["known"]["n"] + c["unknown"]["n"] == 6 for c in report["cells"] if c["role"] == "main")
    assert {c["arm"] for c in report["cells"] if c["role"] == "control"} == {"base", "ft-reg", "ft-par2", "ft-raft2"}
    assert "Δctl" in (out / "report.md").read_text() and (out / "figure4_fictional.png").is_file()
    assert "*FT-RAFT also trained on practice questions about other documents" in (out / "report.md").read_text()
    # FT-RAFT trained on the QA pairs of the 12 practice events (5 each), none of them about the world
    records = [json.loads(p.read_text()) for p in (out / "checkpoints").glob("*/kinject_finetune.json")]
    raft = [r["data"] for r in records if r["data"].get("practice_questions")]
    assert len(raft) == 1 and raft[0]["practice_questions"] == 60 and "qa_pairs" not in raft[0]
    world = {json.loads(line)["chunk_id"] for line in (out / "world" / "chunks.jsonl").read_text().splitlines()}
    practice = (out / "world" / "practice_questions.jsonl").read_text().splitlines()
    assert len(practice) == 60 and not world & {json.loads(line)["chunk_id"] for line in practice}

    again = run_cli(args, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert ": 0 cells evaluated" in again.stdout
    check = run_cli(["kinject", "grid", str(out / "demo.yaml"), "--out", str(out), "--check"], env=env)
    assert check.returncode == 0 and "pending" not in check.stdout and "failed" not in check.stdout, check.stdout

    # `kinject grid` on the demo's config, in another folder, with the demo's checkpoints copied in (a run is its
    # settings and data, not its paths; training determinism is the finetune resume test's): the KBs, cells and
    # evaluations are its own
    shutil.copytree(out / "checkpoints", tmp_path / "grid" / "checkpoints")
    grid = run_cli(["kinject", "grid", str(out / "demo.yaml"), "--out", str(tmp_path / "grid")], env=env, timeout=1500)
    assert grid.returncode == 0, grid.stderr[-3000:]
    for trained in (out / "checkpoints").iterdir():  # reused, not trained again (a new run records a new time)
        record = trained / "kinject_finetune.json"
        assert (tmp_path / "grid" / "checkpoints" / trained.name / record.name).read_text() == record.read_text()
    for cell in report["cells"]:
        ours = json.loads((out / "cells" / cell["hash"] / "result.json").read_text())
        theirs = json.loads((tmp_path / "grid" / "cells" / cell["hash"] / "result.json").read_text())
        assert ours["per_question"] == theirs["per_question"], cell["arm"]



def test_demo_arms_that_train_on_questions_need_practice_events(tmp_path):
    from lm_eval_kinject.demo import DemoConfig, demo_grid, with_options

    with pytest.raises(ConfigError, match=r"--arms ft-raft,ft-ctl,ft-raft\+rag: train on the QA pairs \(ft-ctl: the "
                                          r"documents\) of practice events"):
        with_options(DemoConfig(), practice_events=0)
    assert with_options(DemoConfig(), practice_events=0, arms=("base", "ft-reg")).world.practice_events == 0
    # the default: one experiment, every arm on every question, FT-RAFT's QA pairs from the world's practice events
    grid = demo_grid(DemoConfig(), tmp_path / "world")
    (experiment,) = grid["experiments"].values()
    assert "qa" not in experiment and "qa_split" not in experiment and "ft-raft" in experiment["arms"]
    assert experiment["qa_practice"] == str((tmp_path / "world" / "practice_questions.jsonl").resolve())
