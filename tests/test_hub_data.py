"""Datasets in Hub form (``kinject export``), read back wherever a data folder is taken, and the upstream-form tasks of
``kinject contrib``: loads offline, same rows, same per-question log-likelihoods, passes lm-eval's own checks."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from kinject_testing import CURRENT_EVENTS_DIR, SHARED_DATA, invoke_kinject, read_samples, run_cli

NO_HOOK = {"LM_EVAL_KINJECT_NO_HOOK": "1"}  # upstream lm-eval alone, as a pull request's CI would run it


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from lm_eval_kinject.fictional import FictionalConfig, write_world

    return write_world(FictionalConfig(events=8, paraphrases=3, practice_events=4),
                       tmp_path_factory.mktemp("world") / "world")


@pytest.fixture(scope="module")
def world_dataset(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "world"
    result = invoke_kinject(["export", str(world), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _jsonl(path):
    from pathlib import Path

    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def test_an_exported_world_loads_offline_with_datasets(world, world_dataset):
    import datasets

    expected = {"questions": ("questions.jsonl", "test"), "corpus": ("chunks.jsonl", "train"),
                "paraphrases": ("paraphrases.jsonl", "train"), "practice_questions": ("practice_questions.jsonl",
                                                                                     "train"),
                "practice_corpus": ("practice_chunks.jsonl", "train"), "facts": ("facts.jsonl", "train")}
    assert set(datasets.get_dataset_config_names(str(world_dataset))) == set(expected)
    for config, (file, split) in expected.items():
        loaded = datasets.load_dataset(str(world_dataset), config)
        assert list(loaded) == [split]
        assert loaded[split].to_list() == _jsonl(world / file), config  # every row, every field, in order
    card = (world_dataset / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "apache-2.0" and header["size_categories"] == ["n<1K"]
    assert "multiple-choice" in header["task_categories"] and header["task_ids"] == ["multiple-choice-qa"]
    assert {c["config_name"] for c in header["configs"]} == set(expected)
    assert "| `questions` | `test` | 24 |" in card and "generator version" in card  # sizes; how it was made
    assert not any(p.suffix == ".py" for p in world_dataset.rglob("*"))  # Parquet only, no loading script


def test_the_current_events_sample_exports_with_its_licence(tmp_path):
    import datasets

    result = invoke_kinject(["export", str(CURRENT_EVENTS_DIR), "--out", str(tmp_path / "ce")])
    assert result.exit_code == 0 and "questions 84, corpus 388, paraphrases 42 rows" in result.output, result.output
    card = (tmp_path / "ce" / "README.md").read_text(encoding="utf-8")
    assert yaml.safe_load(card.split("---")[1])["license"] == "cc-by-sa-4.0"  # Wikipedia text, as its README says
    assert "From the source folder's README" in card
    questions = datasets.load_dataset(str(tmp_path / "ce"), "questions", split="test")
    assert questions.to_list() == _jsonl(CURRENT_EVENTS_DIR / "questions.jsonl")


def test_export_refuses_bad_input_in_one_line(world, tmp_path):
    (tmp_path / "nolicence").mkdir()
    for name in ("questions.jsonl", "chunks.jsonl"):
        (tmp_path / "nolicence" / name).write_text((world / name).read_text())
    cases = [
        (["export", str(SHARED_DATA / "kb"), "--out", str(tmp_path / "a")], "no questions.jsonl; expected a data folder"),
        (["export", str(tmp_path / "nolicence"), "--out", str(tmp_path / "b")], "name it with --license"),
        (["export", str(world), "--out", str(SHARED_DATA)], "exists and is not empty; pass --overwrite"),
    ]
    for args, expected in cases:
        result = invoke_kinject(args)
        assert result.exit_code == 1 and expected in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "chunks.jsonl").write_text((world / "chunks.jsonl").read_text())
    (bad / "questions.jsonl").write_text('{"id": "q", "question": "?", "choices": ["a", "b"], "answer": 0}\n')
    result = invoke_kinject(["export", str(bad), "--out", str(tmp_path / "c"), "--license", "cc-by-4.0"])
    assert result.exit_code == 1 and "questions.jsonl:1: 'choices' must be a list of 4 strings" in result.output
    assert not (tmp_path / "c").exists()  # nothing half-written


def test_push_to_hub_offline_is_one_line_and_the_folder_is_kept(world, tmp_path):
    result = run_cli(["kinject", "export", str(world), "--out", str(tmp_path / "ds"), "--push-to-hub", "someone/world"],
                     env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: --push-to-hub someone/world: the Hub cannot be reached") and "upload it later" in line
    assert (tmp_path / "ds" / "questions" / "test.parquet").is_file()


def test_a_dataset_is_taken_wherever_a_data_folder_is(world, world_dataset, tmp_path):
    from lm_eval_kinject.corpus import read_source
    from lm_eval_kinject.finetune.data import read_paraphrases
    from lm_eval_kinject.grid import load_grid_config
    from lm_eval_kinject.questions import load_fictional

    from_folder = load_fictional(fictional_dir=str(world))["test"].to_list()
    assert load_fictional(dataset_path=str(world_dataset))["test"].to_list() == from_folder
    assert load_fictional(fictional_dir=str(world_dataset))["test"].to_list() == from_folder
    assert [(d.doc_id, d.text) for d in read_source(world_dataset)] == \
        [(d.doc_id, d.text) for d in read_source(world / "chunks.jsonl")]
    assert read_paraphrases(world_dataset) == read_paraphrases(world / "paraphrases.jsonl")
    config = tmp_path / "grid.yaml"
    config.write_text(f"""\
models:
  smollm2-135m: {{pretrained: smollm2-135m}}
task_metadata: {{fictional_dir: {world_dataset}}}
knowledge_bases:
  world: {{sources: [{world_dataset}]}}
experiments:
  x:
    tasks: [kinject_fictional_cloze]
    kb: world
    arms: [base, base+rag, ft-par, ft-raft]
    paraphrases: {world_dataset}
    n_paraphrases: [1]
    qa_practice: {world_dataset}
    qa_practice_chunks: {world_dataset}
""")
    experiment = load_grid_config(config).experiments["x"]
    assert _jsonl(experiment.paraphrases) == _jsonl(world / "paraphrases.jsonl")
    assert _jsonl(experiment.qa_practice) == _jsonl(world / "practice_questions.jsonl")
    result = invoke_kinject(["kb", "build", str(world_dataset), "--out", str(tmp_path / "kb")])
    assert result.exit_code == 0 and "8 chunks" in result.output.replace("\n", " "), result.output


def test_the_demo_runs_on_a_world_shared_as_a_dataset(world, world_dataset, tmp_path):
    """`kinject demo --world DATASET`: the demo's grid reads the dataset as given (no world generated), and scores
    the same questions as on the world's own folder; a world that lacks what the arms need is one line."""
    from lm_eval_kinject.demo import DemoConfig, demo_grid, with_options
    from lm_eval_kinject.fictional import FictionalConfig, write_world

    grid = demo_grid(with_options(DemoConfig(), world_source=str(world_dataset), n_paraphrases=(1,)), world)
    experiment = grid["experiments"]["fictional"]
    assert grid["knowledge_bases"]["world"]["sources"] == [str(world_dataset)]
    assert experiment["paraphrases"] == experiment["qa_practice"] == str(world_dataset)
    assert grid["task_metadata"]["fictional_dir"] == str(world_dataset)

    out = tmp_path / "demo"
    args = ["demo", "--world", str(world_dataset), "--arms", "base,base+rag", "--limit", "8", "--no-control",
            "--out", str(out)]
    result = invoke_kinject(args)
    assert result.exit_code == 0, result.output
    assert not (out / "world").exists() and str(world_dataset) in (out / "demo.yaml").read_text()
    cells = {c["arm"]: c for c in json.loads((out / "report.json").read_text())["cells"]}
    assert set(cells) == {"base", "base+rag"} and all(c["n"] == 8 for c in cells.values())
    assert cells["base+rag"]["per_question"]["doc_id"] == list(range(8))
    assert cells["base+rag"]["acc"] > cells["base"]["acc"]  # the KB read from the dataset answers the questions

    bare = write_world(FictionalConfig(events=4, paraphrases=1), tmp_path / "bare")
    refused = invoke_kinject(["demo", "--world", str(bare), "--out", str(tmp_path / "d2")])
    assert refused.exit_code != 0 and re.search(
        r"--world .*bare: --n-paraphrases 3 needs at least 4 paraphrases per chunk .*the world has as few as 1; "
        r"--arms ft-raft,ft-ctl,ft-raft\+rag train on practice events; the world has no practice_questions.jsonl",
        " ".join(refused.output.split())), refused.output
    refused = invoke_kinject(["demo", "--world", str(world_dataset), "--events", "5", "--out", str(tmp_path / "d3")])
    assert refused.exit_code != 0 and "is a world already made; --events describes one to generate" in \
        " ".join(refused.output.split()), refused.output
    assert not (tmp_path / "d2").exists() and not (tmp_path / "d3").exists()


def test_a_missing_dataset_is_one_line():
    from lm_eval_kinject.errors import DataError
    from lm_eval_kinject.questions import load_fictional

    with pytest.raises(DataError, match=r"dataset_path 'nobody/nothing': no such local folder, and cannot read the "
                                        r"dataset's configs"):
        load_fictional(dataset_path="nobody/nothing")
    with pytest.raises(DataError, match=r"dataset_path='/no/such/place': no such directory"):
        load_fictional(dataset_path="/no/such/place")


def _loglikelihoods(out, task):
    return [[float(r[0][0]) for r in s["resps"]] for s in sorted(read_samples(out, task), key=lambda s: s["doc_id"])]


def test_contrib_tasks_pass_upstream_checks_with_the_same_loglikelihoods(world, world_dataset, tmp_path,
                                                                           embedded_dir):
    contrib = tmp_path / "contrib"
    result = invoke_kinject(["contrib", "kinject_fictional", "--out", str(contrib), "--dataset", str(world_dataset),
                             "--no-results"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (contrib / "kinject_fictional").iterdir()} == {
        "README.md", "kinject_fictional.yaml", "kinject_fictional_cloze.yaml"}
    for task in ("kinject_fictional", "kinject_fictional_cloze"):
        spec = yaml.safe_load((contrib / "kinject_fictional" / f"{task}.yaml").read_text())
        assert spec["dataset_path"] == str(world_dataset) and spec["dataset_name"] == "questions"
        assert "custom_dataset" not in spec and spec["metadata"]["version"] == 1.0
    readme = (contrib / "kinject_fictional" / "README.md").read_text()
    assert "### Checklist" in readme and readme.count("* [x]") == 6 and "[ ]" not in readme
    assert "kinject_fictional" in (contrib / "tasks_README_entry.md").read_text()

    tasks = "kinject_fictional,kinject_fictional_cloze"
    validate = run_cli(["lm_eval", "validate", "--include_path", str(contrib), "--tasks", tasks], env=NO_HOOK)
    assert validate.returncode == 0 and "All tasks found and valid" in validate.stdout, validate.stdout + validate.stderr
    # upstream's tests/test_tasks.py (TestBaseTasks) checks, run by upstream lm-eval alone on the folder
    checks = subprocess.run([sys.executable, "-c", UPSTREAM_TASK_CHECKS, str(contrib), tasks], capture_output=True,
                            text=True, env={**os.environ, **NO_HOOK})
    assert checks.returncode == 0 and checks.stdout.split() == ["ok", "ok"], checks.stdout + checks.stderr

    model = ["--model", "hf", "--model_args", f"pretrained={embedded_dir}", "--device", "cpu", "--limit", "8",
             "--log_samples", "--tasks", "kinject_fictional_cloze"]
    upstream = run_cli(["lm_eval", "run", *model, "--include_path", str(contrib), "--output_path", str(tmp_path / "u")],
                       env=NO_HOOK)
    folder = run_cli(["lm_eval", "run", *model, "--output_path", str(tmp_path / "j"),
                      "--metadata", json.dumps({"fictional_dir": str(world)})])
    dataset = run_cli(["lm_eval", "run", *model, "--output_path", str(tmp_path / "d"),
                       "--metadata", json.dumps({"dataset_path": str(world_dataset)})])
    for done in (upstream, folder, dataset):
        assert done.returncode == 0, done.stderr[-2000:]
    expected = _loglikelihoods(tmp_path / "j", "kinject_fictional_cloze")
    assert len(expected) == 8 and all(len(r) == 4 for r in expected)
    assert _loglikelihoods(tmp_path / "d", "kinject_fictional_cloze") == expected
    assert _loglikelihoods(tmp_path / "u", "kinject_fictional_cloze") == expected


UPSTREAM_TASK_CHECKS = """
import sys
from itertools import islice

from lm_eval.tasks import TaskManager, get_task_dict

include, names = sys.argv[1], sys.argv[2].split(",")
limit = 10
loaded = get_task_dict(names, TaskManager(include_path=include))
assert sorted(loaded) == sorted(names), sorted(loaded)
for task in loaded.values():
    task.download()
    assert task.dataset is not None
    for has, key in ((task.has_training_docs, "training_split"), (task.has_validation_docs, "validation_split"),
                     (task.has_test_docs, "test_split")):
        assert has() in (True, False) and (not has() or task._config[key] is not None)
    assert task.should_decontaminate() in (True, False)
    docs = list(islice(task.test_docs() if task.has_test_docs() else task.validation_docs(), limit))
    for text in (task.doc_to_text(d) for d in docs):
        assert isinstance(text, str) and not (task.config.target_delimiter.isspace() and text[-1:].isspace())
    choices = [task.doc_to_choice(d) for d in docs]
    assert all(isinstance(c, list) and isinstance(c[0], str) for c in choices)
    assert all(isinstance(task.doc_to_target(d), (int, str)) for d in docs)
    task.build_all_requests(rank=1, limit=limit, world_size=1)
    assert task.instances is not None
    assert len([task.construct_requests(doc=d, ctx=task.doc_to_text(d)) for d in docs]) == limit
    print("ok")
"""
