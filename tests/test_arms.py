"""Arms as one table; each FT arm's training data (what goes in, what never does); the held-out split;
known vs unknown on a hand-made case."""
from __future__ import annotations

import json
import re
import shutil
import textwrap

import pytest

from lm_eval_kinject.arms import ARMS, checkpoint_args, parse_arm, variant
from lm_eval_kinject.errors import ConfigError, DataError
from lm_eval_kinject.fictional import SLOTS, FictionalConfig, write_world
from lm_eval_kinject.splits import QuestionSplit, qa_text


def test_every_arm_round_trips_through_its_variant_name():
    orders = [arm.order for arm in ARMS.values()]
    assert len(set(orders)) == len(orders)
    for arm in ARMS.values():
        for n in ([None] if arm.paraphrase_counts == "none" else [None, 3, 10]):
            assert parse_arm(variant(arm, n)) == (arm, n)
    assert variant(ARMS["ft-par+rag"], 4) == "ft-par4+rag" and variant(ARMS["base"], 4) == "base"
    for bad in ("ft-reg3", "base2", "ft-bogus", "", "ft-par+rag+rag"):
        with pytest.raises(ConfigError):
            parse_arm(bad)


def test_checkpoint_loading_rule_full_lora_and_merged():
    base = {"pretrained": "/m", "gguf_file": "m.gguf", "dtype": "float32"}
    assert checkpoint_args(base, "/ck") == {"pretrained": "/ck", "dtype": "float32"}
    assert checkpoint_args(base, "/ck", "lora") == {**base, "peft": "/ck"}
    assert checkpoint_args(base, "/ck", "lora", merge=True) == {"pretrained": "/ck", "dtype": "float32"}
    # vLLM: the adapter as lora_local_path, its rank allowed; the api backend cannot load a checkpoint
    assert checkpoint_args(base, "/ck", "lora", backend="vllm", lora_r=64) == \
        {**base, "lora_local_path": "/ck", "max_lora_rank": 64}
    assert checkpoint_args(base, "/ck", backend="vllm") == {"pretrained": "/ck", "dtype": "float32"}
    with pytest.raises(ConfigError, match="the api backend evaluates the model its server serves"):
        checkpoint_args(base, "/ck", backend="api")


def test_question_split_is_by_chunk_seeded_and_complete():
    questions = [{"id": f"q{i}", "chunk_id": f"c{i // 3}", "question": "?", "choices": list("abcd"), "answer": 0}
                 for i in range(60)]
    split = QuestionSplit(0.5, seed=7)
    train, held = split.select(questions, "train"), split.select(questions, "heldout")
    assert len(train) + len(held) == 60 and len(train) == 30
    assert not {q["chunk_id"] for q in train} & {q["chunk_id"] for q in held}  # no chunk on both sides
    assert split.select(questions, "train") == train  # deterministic
    assert QuestionSplit(0.5, seed=8).select(questions, "train") != train  # the seed matters
    with pytest.raises(DataError, match="no chunk_id"):
        split.select([{**questions[0], "chunk_id": ""}, *questions[1:]], "train")
    with pytest.raises(ConfigError, match="train_fraction"):
        QuestionSplit(1.0)
    # cross-fitting: the swapped split trains on what the split holds out, and holds out what it trains on
    swapped = QuestionSplit(0.5, seed=7, swap=True)
    assert swapped.select(questions, "train") == held and swapped.select(questions, "heldout") == train
    assert swapped.metadata("heldout")["question_split_swap"] is True
    assert QuestionSplit.from_metadata(swapped.metadata("heldout")) == (swapped, "heldout")
    # unswapped, nothing new is written: the names of cells and checkpoints made before swap existed are kept
    assert "question_split_swap" not in split.metadata() and split.identity() == {"train_fraction": 0.5, "seed": 7}
    with pytest.raises(ConfigError, match="swap='yes': expected true or false"):
        QuestionSplit(0.5, swap="yes")


@pytest.fixture(scope="module")
def world_kb(tmp_path_factory):
    """A small fictional world (every fact asked) and its real KB."""
    from lm_eval_kinject.corpus import read_source
    from lm_eval_kinject.kb import build_kb

    root = tmp_path_factory.mktemp("arms")
    world = write_world(FictionalConfig(seed=3, events=10, paraphrases=4, asked=tuple(SLOTS)), root / "world")
    kb = build_kb(read_source(world / "chunks.jsonl"), root / "kb", show_progress=False)
    return world, kb


def _texts(world, kb, n: int, qa: bool):
    from lm_eval_kinject.finetune.data import qa_pairs, read_paraphrases, training_texts

    pairs, _ = qa_pairs(world / "questions.jsonl", QuestionSplit(0.5, seed=0)) if qa else (None, {})
    return training_texts(kb, read_paraphrases(world / "paraphrases.jsonl") if n else None, n, 1, True, False,
                          qa=pairs)


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_training_data_of_each_arm(world_kb):
    world, kb = world_kb
    chunks = {c["chunk_id"]: c for c in _records(world / "chunks.jsonl")}
    paraphrases = {p["chunk_id"]: p["paraphrases"] for p in _records(world / "paraphrases.jsonl")}
    questions = _records(world / "questions.jsonl")
    held_out = QuestionSplit(0.5, seed=0).select(questions, "heldout")
    trained = QuestionSplit(0.5, seed=0).select(questions, "train")

    reg = _texts(world, kb, 0, qa=False)
    assert sorted(reg.train) == sorted(f"{c['article']}\n{c['text']}" for c in chunks.values())
    assert not any("Question:" in t for t in reg.train)

    par = _texts(world, kb, 2, qa=False)
    assert len(par.train) == 10 + 2 * 10
    for chunk_id, texts in paraphrases.items():
        title = chunks[chunk_id]["article"]
        assert all(f"{title}\n{t}" in par.train for t in texts[:2])
        assert f"{title}\n{texts[-1]}" not in par.train and f"{title}\n{texts[-1]}" in par.validation

    mix = _texts(world, kb, 2, qa=True)
    qa = [t for t in mix.train if t.startswith("Question: ")]
    assert sorted(t for t in mix.train if not t.startswith("Question: ")) == sorted(par.train)  # FT-par's data
    assert qa == [qa_text(q) for q in trained] and len(qa) == 25
    assert qa[0] == f"Question: {trained[0]['question']}\nAnswer: {trained[0]['choices'][trained[0]['answer']]}"
    every_text = "\n".join(mix.train + mix.validation)
    for q in held_out:  # no evaluated question is ever trained on
        assert q["question"] not in every_text, q
    assert all(q["question"] in every_text for q in trained)

    # ft-raft: ft-mix's pairs, half of them (seeded) after their own chunk's text, as kinject-rag's plain template
    from lm_eval_kinject.finetune.data import qa_pairs

    by_id = {c.chunk_id: {"text": c.text, "article": c.article, "chunk_id": c.chunk_id} for c in kb.chunks}
    raft, stats = qa_pairs(world / "questions.jsonl", QuestionSplit(0.5, seed=0), by_id, 0.5, seed=0)
    with_passage = [(t, q) for t, q in zip(raft, trained) if t != qa_text(q)]
    assert stats["qa_with_passage"] == len(with_passage) == 12  # round(0.5 * 25), banker's rounding
    assert all(t == f"{chunks[q['chunk_id']]['text']}\n\n{qa_text(q)}" for t, q in with_passage)
    assert raft == qa_pairs(world / "questions.jsonl", QuestionSplit(0.5, seed=0), by_id, 0.5, seed=0)[0]
    assert not any(q["question"] in "\n".join(raft) for q in held_out)
    with pytest.raises(DataError, match=r"questions.jsonl: 5 chunk id\(s\) of its questions are not among the "
                                        r"passages trained on"):
        qa_pairs(world / "questions.jsonl", QuestionSplit(0.5, seed=0), {}, 1.0)
    # one passage per chunk, followed by all its pairs: every pair once, every chunk's text once
    grouped, stats = qa_pairs(world / "questions.jsonl", QuestionSplit(0.5, seed=0), by_id, 1.0, layout="chunk")
    assert stats["qa_with_passage"] == 25 and len(grouped) == 5
    for text in grouped:
        chunk_id = next(c for c in chunks if text.startswith(chunks[c]["text"] + "\n\n"))
        assert text == chunks[chunk_id]["text"] + "\n\n" + "\n\n".join(qa_text(q) for q in trained
                                                                      if q["chunk_id"] == chunk_id)


def test_practice_questions_are_exercises_on_other_documents(world_kb, tmp_path):
    """Practice events: the world's files unchanged, no name shared with it; their QA pairs and documents are
    trained on (each document read once per epoch), none of the world's questions or chunks ever is."""
    from lm_eval_kinject.finetune.data import practice_texts

    world, kb = world_kb
    config = FictionalConfig(seed=3, events=10, paraphrases=4, asked=tuple(SLOTS), practice_events=6)
    practiced = write_world(config, tmp_path / "world")
    for name in ("chunks", "questions", "paraphrases", "facts"):  # adding practice events leaves the world as it was
        assert (practiced / f"{name}.jsonl").read_bytes() == (world / f"{name}.jsonl").read_bytes()
    chunks = {c["chunk_id"]: c for c in _records(practiced / "practice_chunks.jsonl")}
    questions = _records(practiced / "practice_questions.jsonl")
    assert len(chunks) == 6 and len(questions) == 30  # every fact of a practice event is asked
    facts = _records(world / "facts.jsonl")
    names = {n for f in facts for n in (f["title"].rsplit(" ", 1)[0], f["town"], *f["leader"].split(),
                                         f["organiser"].rsplit(" ", 1)[0])}
    assert len(names) == 50 and not any(re.search(rf"\b{n}\b", c["article"] + " " + c["text"])
                                        for c in chunks.values() for n in names)
    assert not {q["choices"][q["answer"]] for q in questions} & {f[s] for f in facts for s in SLOTS}

    kb_texts = {c.text for c in kb.chunks}
    args = (practiced / "practice_questions.jsonl", practiced / "practice_chunks.jsonl", kb_texts)
    texts, stats = practice_texts(*args, 1.0, 0, "chunk", True)
    assert stats == {"practice_questions": 30, "practice_chunks": 6, "practice_with_passage": 30}
    assert sorted(texts) == sorted(c["text"] + "\n\n" + "\n\n".join(qa_text(q) for q in questions
                                                                   if q["chunk_id"] == c["chunk_id"])
                                   for c in chunks.values())
    every = "\n".join(texts)
    assert not any(q["question"] in every for q in _records(world / "questions.jsonl"))
    assert not any(text in every for text in kb_texts)
    # RAFT as published: a copy of the passage per pair; without passages, each document once on its own (titled)
    pairs, _ = practice_texts(*args, 1.0, 0, "pair", True)
    assert sorted(pairs) == sorted(chunks[q["chunk_id"]]["text"] + "\n\n" + qa_text(q) for q in questions)
    plain, stats = practice_texts(*args, 0.0, 0, "chunk", True)
    assert stats["practice_with_passage"] == 0
    assert sorted(plain) == sorted([qa_text(q) for q in questions] +
                                   [f"{c['article']}\n{c['text']}" for c in chunks.values()])

    with pytest.raises(DataError, match=r"chunks.jsonl: 10 practice document\(s\) are also chunks of the KB"):
        practice_texts(world / "questions.jsonl", world / "chunks.jsonl", kb_texts, 1.0, 0, "chunk", True)
    with pytest.raises(DataError, match=r"practice_questions.jsonl: 6 chunk id\(s\) of its questions are not in "
                                        r".*chunks.jsonl \(e.g. 'practice-0000'\)"):
        practice_texts(practiced / "practice_questions.jsonl", world / "chunks.jsonl", set(), 1.0, 0, "chunk", True)
    with pytest.raises(ConfigError, match="practice_events=2: expected 0, or 4..270"):
        FictionalConfig(events=10, practice_events=2)


def test_control_arm_reads_the_mixed_arms_documents_without_its_pairs(world_kb, tmp_path):
    """ft-ctl trains on exactly what ft-raft (and, without passages, ft-mix) reads, minus the QA pairs: the same
    passages, as often, in the same rendering; the grid gives both arms the same data settings."""
    from lm_eval_kinject.finetune.data import practice_texts, qa_pairs

    world, kb = world_kb
    practiced = write_world(FictionalConfig(seed=3, events=10, paraphrases=4, asked=tuple(SLOTS), practice_events=6),
                            tmp_path / "world")
    args = (practiced / "practice_questions.jsonl", practiced / "practice_chunks.jsonl", {c.text for c in kb.chunks})
    for share, layout in ((1.0, "chunk"), (1.0, "pair"), (0.5, "pair"), (0.0, "chunk")):
        mixed, _ = practice_texts(*args, share, 0, layout, True)
        control, stats = practice_texts(*args, share, 0, layout, True, pairs=False)
        without_pairs = [t.split("Question: ")[0].rstrip() for t in mixed]
        assert sorted(control) == sorted(t for t in without_pairs if t), (share, layout)
        assert not any("Question:" in t or "Answer:" in t for t in control)
        assert stats["practice_with_passage"] == round(share * 30) if layout == "pair" else True
    by_id = {c.chunk_id: {"text": c.text, "article": c.article, "chunk_id": c.chunk_id} for c in kb.chunks}
    split = QuestionSplit(0.5, seed=0)
    mixed, _ = qa_pairs(world / "questions.jsonl", split, by_id, 1.0, layout="chunk")
    control, _ = qa_pairs(world / "questions.jsonl", split, by_id, 1.0, layout="chunk", pairs=False)
    assert len(control) == len(mixed) == 5 and control == [t.split("\n\nQuestion: ")[0] for t in mixed]

    from lm_eval_kinject.grid.cells import expand

    config = tmp_path / "grid.yaml"
    config.write_text(textwrap.dedent(f"""\
        models: {{m: {{pretrained: smollm2-135m}}}}
        knowledge_bases: {{world: {{sources: ["{world}/chunks.jsonl"]}}}}
        experiments:
          e:
            tasks: [kinject_fictional_cloze]
            kb: world
            arms: [ft-raft, ft-ctl, ft-ctl+rag]
            qa_practice: {practiced}/practice_questions.jsonl
            qa_practice_chunks: {practiced}/practice_chunks.jsonl
        """))
    from lm_eval_kinject.grid import load_grid_config

    grid = load_grid_config(config)
    checkpoints = {c.arm: c.checkpoint for c in expand(grid)}
    raft, ctl = checkpoints["ft-raft"], checkpoints["ft-ctl"]
    assert checkpoints["ft-ctl+rag"] == ctl and ctl.practice == raft.practice
    assert dict(ctl.settings) == {**dict(raft.settings), "qa_pairs": False}
    assert ctl.hash(grid) != raft.hash(grid)


def test_mixed_training_fine_tunes_and_records_the_split(world_kb, tmp_path):
    from lm_eval_kinject.finetune import FinetuneConfig, finetune

    world, kb = world_kb
    config = FinetuneConfig(kb=str(kb.path), out=str(tmp_path / "mix"), qa=str(world / "questions.jsonl"),
                            qa_split_seed=0, max_steps=1, block_size=64, batch_size=2, show_progress=False)
    data = finetune(config).metadata["data"]
    assert (data["qa_pairs"], data["qa_train_chunks"], data["qa_heldout_chunks"]) == (25, 5, 5)
    assert data["train_texts"] == 10 + 25 and data["qa_sha256"]
    other = FinetuneConfig(**{**config.to_dict(), "qa_split_seed": 1})
    assert other.run_hash("x") != config.run_hash("x")  # another split is another run
    swapped = FinetuneConfig(**{**config.to_dict(), "qa_split_swap": True, "out": str(tmp_path / "swapped")})
    assert swapped.run_hash("x") != config.run_hash("x")
    swapped_data = finetune(swapped).metadata["data"]  # the other half's pairs: as many here, other ones
    assert (swapped_data["qa_pairs"], swapped_data["qa_train_chunks"]) == (25, 5)
    assert swapped_data["texts_fingerprint"] != data["texts_fingerprint"]
    # runs made before qa_layout and practice questions existed keep their identity (hashes of the previous version)
    assert FinetuneConfig(kb="kb", out="out").run_hash("x") == "a4ae43be5a6e82b6"
    raft = FinetuneConfig(kb="kb", out="out", qa="q.jsonl", qa_passages=1.0)
    assert raft.run_hash("x") == "57962e1458a2e97b"
    assert FinetuneConfig(**{**raft.to_dict(), "qa_layout": "chunk"}).run_hash("x") != raft.run_hash("x")

    # the run is its settings and its data's content, not where the data lies: a copied KB and QA file reuse it
    shutil.copytree(kb.path, tmp_path / "kb-copy")
    shutil.copy(world / "questions.jsonl", tmp_path / "questions-copy.jsonl")
    moved = FinetuneConfig(**{**config.to_dict(), "kb": str(tmp_path / "kb-copy"),
                              "qa": str(tmp_path / "questions-copy.jsonl")})
    assert finetune(moved).skipped
    # a run whose record keyed the data's paths (older versions) is still recognised
    result = json.loads((tmp_path / "mix" / "kinject_finetune.json").read_text())
    result["run_hash"] = config.run_hash(data["texts_fingerprint"], with_paths=True)
    assert result["run_hash"] != config.run_hash(data["texts_fingerprint"])
    (tmp_path / "mix" / "kinject_finetune.json").write_text(json.dumps(result))
    assert finetune(config).skipped

    # practice questions about other documents: trained on with their documents, recorded
    practiced = write_world(FictionalConfig(seed=3, events=10, paraphrases=4, asked=tuple(SLOTS), practice_events=4),
                            tmp_path / "practiced")
    practice = FinetuneConfig(kb=str(kb.path), out=str(tmp_path / "practice"),
                              qa_practice=str(practiced / "practice_questions.jsonl"),
                              qa_practice_chunks=str(practiced / "practice_chunks.jsonl"), qa_passages=1.0,
                              qa_layout="chunk", max_steps=1, block_size=64, batch_size=2, show_progress=False)
    data = finetune(practice).metadata["data"]
    assert (data["practice_questions"], data["practice_chunks"], data["practice_with_passage"]) == (20, 4, 20)
    assert data["train_texts"] == 10 + 4 and data["qa_practice_sha256"] and "qa_pairs" not in data
    with pytest.raises(ConfigError, match="qa_practice: needs qa_practice_chunks too"):
        FinetuneConfig(kb="kb", out="out", qa_practice="q.jsonl")


def test_held_out_split_through_the_task(world_kb):
    from lm_eval_kinject.questions import load_fictional

    world, _ = world_kb
    every = load_fictional(fictional_dir=str(world))["test"]
    held = load_fictional(fictional_dir=str(world), **QuestionSplit(0.5, seed=0).metadata("heldout"))["test"]
    assert len(every) == 50 and len(held) == 25
    assert [r["id"] for r in held] == [q["id"] for q in QuestionSplit(0.5, 0).select(list(every), "heldout")]
    other = load_fictional(fictional_dir=str(world), **QuestionSplit(0.5, 0, swap=True).metadata("heldout"))["test"]
    assert len(other) == 25 and not {r["id"] for r in other} & {r["id"] for r in held}
    with pytest.raises(ConfigError, match="question_split"):
        load_fictional(fictional_dir=str(world), question_split="test")


def test_known_unknown_on_a_hand_made_case():
    from lm_eval_kinject.report.stats import known_unknown

    base = {"doc_id": [0, 1, 2, 3, 4, 5], "correct": [1, 1, 0, 0, 0, 0]}
    arm = {"doc_id": [5, 4, 3, 2, 1, 0, 9], "correct": [1, 1, 1, 0, 0, 1, 1]}  # doc 9: base never scored it
    assert known_unknown(arm, base) == {"known": {"n": 2, "acc": 0.5}, "unknown": {"n": 4, "acc": 0.75}}
    assert known_unknown(base, base) == {"known": {"n": 2, "acc": 1.0}, "unknown": {"n": 4, "acc": 0.0}}
    assert known_unknown({"doc_id": [], "correct": []}, base)["known"] == {"n": 0, "acc": None}


def _grid(tmp_path, experiment: str) -> str:
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent("""\
        models: {m: {pretrained: smollm2-135m}}
        knowledge_bases: {w: {sources: [world/chunks.jsonl]}}
        experiments:
          e:
        """) + textwrap.indent(textwrap.dedent(experiment), "    "))
    return path


def test_grid_config_arms_and_mixed_training_errors(world_kb, tmp_path):
    import shutil

    from lm_eval_kinject.grid import load_grid_config
    from lm_eval_kinject.grid.cells import expand

    shutil.copytree(world_kb[0], tmp_path / "world")
    with pytest.raises(ConfigError) as error:
        load_grid_config(_grid(tmp_path, "{tasks: [kinject_fictional_cloze], kb: w, arms: base}"))
    assert "arms: expected a list of arms, got str 'base'" in str(error.value)
    with pytest.raises(ConfigError) as error:
        load_grid_config(_grid(tmp_path, "{tasks: [t], kb: w, arms: [ft-mix, ft-mixx]}"))
    assert "experiments.e.qa: ft-mix / ft-raft arms need QA pairs to train on" in str(error.value)
    assert "arms[1]: unknown arm 'ft-mixx' (did you mean 'ft-mix'?" in str(error.value)
    with pytest.raises(ConfigError, match="qa_split: question split train_fraction=2"):
        load_grid_config(_grid(tmp_path, "{tasks: [t], kb: w, arms: [ft-mix], qa: world/questions.jsonl, "
                                         "qa_split: {train_fraction: 2}}"))
    experiment = """\
        tasks: [kinject_fictional_cloze]
        kb: w
        arms: [base, ft-reg, ft-par, ft-mix, ft-mix+rag, ft-raft, ft-raft+rag]
        paraphrases: world/paraphrases.jsonl
        n_paraphrases: [1, 2]
        qa: world/questions.jsonl
        control_tasks: [kinject_mmlu_cloze_anatomy_0shot]
        """
    config = load_grid_config(_grid(tmp_path, experiment))
    cells = expand(config)
    main = sorted(c.arm for c in cells if c.role == "main")
    assert main == ["base", "ft-mix2", "ft-mix2+rag", "ft-par1", "ft-par2", "ft-raft2", "ft-raft2+rag", "ft-reg"]
    assert all(dict(c.task_metadata) == {"question_split": "heldout", "question_split_fraction": 0.5,
                                         "question_split_seed": 0} for c in cells if c.role == "main")
    assert all(not c.task_metadata for c in cells if c.role == "control")  # control tasks: every question
    mix = next(c for c in cells if c.arm == "ft-mix2")
    assert mix.checkpoint.finetune_settings()["qa"].endswith("questions.jsonl")
    assert mix.checkpoint.n_paraphrases == 2
    assert mix.checkpoint == next(c for c in cells if c.arm == "ft-mix2+rag").checkpoint
    raft = next(c for c in cells if c.arm == "ft-raft2").checkpoint
    assert raft.finetune_settings() == {**mix.checkpoint.finetune_settings(), "qa_passages": 1.0,
                                        "qa_layout": "chunk"}  # its recipe
    assert raft == next(c for c in cells if c.arm == "ft-raft2+rag").checkpoint
    assert len({c.checkpoint for c in cells if c.checkpoint}) == 5  # reg, par1, par2, mix2, raft2
    # the swapped half (cross-fitting): its own checkpoint for the QA arms, the same one for the others
    swapped = expand(load_grid_config(_grid(tmp_path, experiment.replace(
        "control_tasks:", "qa_split: {swap: true}\n        control_tasks:"))))
    assert all(dict(c.task_metadata)["question_split_swap"] is True for c in swapped if c.role == "main")
    ours = {c.arm: c.checkpoint for c in cells if c.role == "main"}
    theirs = {c.arm: c.checkpoint for c in swapped if c.role == "main"}
    assert theirs["ft-raft2"].finetune_settings() == {**raft.finetune_settings(), "qa_split_swap": True}
    assert sorted(arm for arm in ours if ours[arm] != theirs[arm]) == ["ft-mix2", "ft-mix2+rag", "ft-raft2",
                                                                      "ft-raft2+rag"]
    with pytest.raises(ConfigError, match="qa_split: question split swap='no': expected true or false"):
        load_grid_config(_grid(tmp_path, "{tasks: [t], kb: w, arms: [ft-mix], qa: world/questions.jsonl, "
                                         "qa_split: {swap: 'no'}}"))

    # practice questions only: every arm scored on every question; only the arms that train on QA read them
    write_world(FictionalConfig(seed=3, events=10, paraphrases=4, asked=tuple(SLOTS), practice_events=4),
                tmp_path / "practiced")
    practice = "qa_practice: practiced/practice_questions.jsonl\nqa_practice_chunks: practiced/practice_chunks.jsonl\n"
    cells = expand(load_grid_config(_grid(tmp_path, "tasks: [kinject_fictional_cloze]\nkb: w\n"
                                                    "arms: [base, ft-reg, ft-raft, ft-raft+rag]\n" + practice)))
    assert not any(c.task_metadata for c in cells)
    raft = next(c for c in cells if c.arm == "ft-raft").checkpoint
    assert raft.finetune_settings()["qa_practice"].endswith("practiced/practice_questions.jsonl")
    assert "qa" not in raft.finetune_settings() and "practice" in raft.identity(config)
    assert "qa_practice" not in next(c for c in cells if c.arm == "ft-reg").checkpoint.finetune_settings()
    with pytest.raises(ConfigError) as error:
        load_grid_config(_grid(tmp_path, "{tasks: [t], kb: w, arms: [ft-raft], qa_practice: nowhere.jsonl}"))
    assert "experiments.e.qa_practice_chunks: practice questions (qa_practice) and their documents" in str(error.value)
    assert "experiments.e.qa_practice: " in str(error.value) and "nowhere.jsonl: no such file" in str(error.value)
    with pytest.raises(ConfigError, match="experiments.e.qa_practice: qa_practice / qa_practice_chunks: for arms "
                                          "that train on questions"):
        load_grid_config(_grid(tmp_path, "tasks: [t]\nkb: w\narms: [base, ft-reg]\n" + practice))


def test_fact_passes_give_every_arm_the_same_readings_of_each_fact():
    from lm_eval_kinject.finetune import FinetuneConfig

    def config(**kw):
        return FinetuneConfig(kb="kb", out="out", paraphrases="p.jsonl", **kw)

    assert config(fact_passes=10, n_paraphrases=4).train_epochs == 2.0
    assert config(fact_passes=10).train_epochs == 10.0
    assert config(epochs=3, n_paraphrases=4).train_epochs == 3.0  # without fact_passes: the epochs as given
    with pytest.raises(ConfigError, match="fact_passes=0: expected a number > 0"):
        config(fact_passes=0)
    with pytest.raises(ConfigError, match="qa_repeats=0: expected a positive integer"):
        config(qa_repeats=0)
