"""``kinject grid`` and ``kinject report`` on a tiny real grid: the embedded model, the current-events KB,
two real (very short) fine-tunings, a cell that really fails; resume, report, figures, expectations."""
from __future__ import annotations

import json
import re
import shutil
import textwrap

import pytest
from kinject_testing import REPO, SHARED_DATA, run_cli

from lm_eval_kinject.errors import ConfigError, DataError

TINY = textwrap.dedent(f"""\
    seed: 0
    vars: {{data: "{SHARED_DATA}"}}
    models:
      smollm2-135m: {{pretrained: smollm2-135m}}
    task_metadata: {{current_events_dir: "${{data}}/current_events_sample", mmlu_dir: "${{data}}/mmlu"}}
    knowledge_bases:
      current_events: {{sources: ["${{data}}/current_events_sample/chunks.jsonl"]}}
      asked:
        sources: ["${{data}}/current_events_sample/chunks.jsonl"]
        only_chunks_of: ${{data}}/current_events_sample/questions.jsonl
    retrieval: {{retriever: bm25, k: 2}}
    finetune: {{max_steps: 2, block_size: 64, batch_size: 2}}
    lm_eval: {{batch_size: 8, limit: 6}}
    experiments:
      ce:
        title: Current events (tiny)
        tasks: [current_events_cloze]
        kb: current_events
        train_kb: asked
        paraphrases: ${{data}}/current_events_sample/paraphrases.jsonl
        n_paraphrases: [1]
        arms: [base, base+rag, ft-reg, ft-par]
        control_tasks: [kinject_mmlu_cloze_anatomy_0shot]
      broken:
        title: Oracle retrieval on questions without gold chunks
        tasks: [kinject_mmlu_cloze_anatomy_0shot]
        kb: current_events
        arms: [base+rag]
        retrieval: {{retriever: oracle}}
    """)


def _config(tmp_path, text: str = TINY):
    from lm_eval_kinject.grid import load_grid_config

    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return load_grid_config(path)


def test_config_errors_name_every_problem_with_its_key(tmp_path):
    bad = TINY.replace("arms: [base, base+rag, ft-reg, ft-par]", "arms: [base, base+rag, ft-regg, ft-par]")
    bad = bad.replace("    kb: current_events\n    train_kb: asked\n", "")  # RAG without a KB
    bad = bad.replace("finetune: {max_steps: 2,", "finetune: {max_step: 2,").replace("lm_eval:", "lm_evall:")
    with pytest.raises(ConfigError) as error:
        _config(tmp_path, bad)
    message = str(error.value)
    assert "top level: unknown key 'lm_evall' (did you mean 'lm_eval'?)" in message
    with pytest.raises(ConfigError) as error:
        _config(tmp_path, bad.replace("lm_evall:", "lm_eval:"))
    message = str(error.value)
    assert "experiments.ce.arms[2]: unknown arm 'ft-regg' (did you mean 'ft-reg'?)" in message
    assert "experiments.ce.kb: arms ['base+rag', 'ft-par'] need a knowledge base" in message
    assert "\n  finetune: unknown key(s) ['max_step'] (did you mean 'max_steps'?)" in message
    assert "3 problem(s)" in message
    assert str(tmp_path / "grid.yaml") in message
    with pytest.raises(ConfigError, match=r"\$\{nowhere\} is neither a vars: entry nor an environment variable"):
        _config(tmp_path, TINY.replace("${data}/mmlu", "${nowhere}/mmlu"))


def test_training_kb_options_are_checked(tmp_path):
    bad = TINY.replace("train_kb: asked", "train_kb: askd").replace(
        "only_chunks_of: ${data}/current_events_sample/questions.jsonl", "only_chunks_of: ${data}/nowhere.jsonl")
    with pytest.raises(ConfigError) as error:
        _config(tmp_path, bad)
    message = str(error.value)
    assert "experiments.ce.train_kb: 'askd' is not in knowledge_bases (did you mean 'asked'?)" in message
    assert f"knowledge_bases.asked.only_chunks_of: {SHARED_DATA}/nowhere.jsonl: no such questions file" in message


def test_a_kb_setting_is_checked_by_the_kbs_own_config(tmp_path):
    bad = TINY.replace('current_events: {sources: ["${data}/current_events_sample/chunks.jsonl"]}',
                       'current_events: {sources: ["${data}/current_events_sample/chunks.jsonl"], chunk_tokns: 64, '
                       'hnsw_m: 0}')
    with pytest.raises(ConfigError) as error:
        _config(tmp_path, bad)
    assert ("knowledge_bases.current_events: unknown key 'chunk_tokns' (did you mean 'chunk_tokens'?)"
            in str(error.value)), str(error.value)
    fixed = bad.replace("chunk_tokns: 64, ", "")
    with pytest.raises(ConfigError, match=r"knowledge_bases.current_events: hnsw_m=0: expected a positive integer"):
        _config(tmp_path, fixed)


def test_cells_know_their_data_by_content_not_by_path_or_time(tmp_path):
    """A copy of the data elsewhere, with a new modification time, keeps the KB's (and so every cell's) key; an
    edited file changes it."""
    import os

    from lm_eval_kinject.grid.cells import kb_hash

    source = SHARED_DATA / "current_events_sample" / "chunks.jsonl"
    hashes = []
    for name, text in (("a", source.read_text()), ("b", source.read_text()), ("c", source.read_text() + "\n")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "chunks.jsonl").write_text(text)
        os.utime(folder / "chunks.jsonl", (1_000_000 * len(hashes), 1_000_000 * len(hashes)))
        config = TINY.replace('["${data}/current_events_sample/chunks.jsonl"]}', f'["{folder}/chunks.jsonl"]}}')
        hashes.append(kb_hash(_config(folder, config), "current_events"))
    assert hashes[0] == hashes[1] != hashes[2]


@pytest.mark.parametrize("block,expected", [
    ("{limit: eight}", "lm_eval.limit: 'eight': expected a positive number of questions"),
    ("{limit: -3}", "lm_eval.limit: -3: expected a positive number of questions"),
    ("{batch_size: eight}", "lm_eval.batch_size: 'eight': expected a positive integer, 'auto' or 'auto:N'"),
    ("{backend: vlm}", "lm_eval.backend: 'vlm': expected one of hf, vllm, api"),
])
def test_lm_eval_block_types_are_checked_before_any_cell(tmp_path, block, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        _config(tmp_path, TINY.replace("lm_eval: {batch_size: 8, limit: 6}", f"lm_eval: {block}"))


def test_backend_models_and_arms_are_checked(tmp_path):
    from lm_eval_kinject.grid.runner import check_models

    config = _config(tmp_path, TINY.replace("lm_eval: {batch_size: 8, limit: 6}", "lm_eval: {backend: api}"))
    with pytest.raises(ConfigError, match=r"lm_eval.backend: 'api' evaluates the served model only; arms "
                                          r"\['ft-par', 'ft-reg'\] need a fine-tuned checkpoint"):
        check_models(config)
    bad = TINY.replace("smollm2-135m: {pretrained: smollm2-135m}", "smollm2-135m: {pretrained: smollm2-135m, dtyp: x}")
    with pytest.raises(ConfigError, match=r"models.smollm2-135m.dtyp: not a kinject-rag argument \(did you mean "
                                          r"'dtype'\?\)"):
        check_models(_config(tmp_path, bad))
    with pytest.raises(ConfigError, match=r"models.smollm2-135m: \['k'\] are retrieval settings"):
        _config(tmp_path, TINY.replace("{pretrained: smollm2-135m}", "{pretrained: smollm2-135m, k: 3}"))


def test_only_chunks_of_keeps_the_documents_questions_ask_about(tmp_path, caplog):
    from lm_eval_kinject.corpus import Document, only_chunks_of

    questions = tmp_path / "q.jsonl"
    rows = [{"id": f"q{i}", "question": "?", "choices": ["a", "b", "c", "d"], "answer": 0, "chunk_id": c}
            for i, c in enumerate(["c1", "doc#2", "gone"])]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    documents = [Document(i, i, "text", "src", prechunked=True) for i in ("c0", "c1", "doc", "c3")]
    assert [d.doc_id for d in only_chunks_of(documents, questions)] == ["c1", "doc"]
    assert "1 of 3 question chunk ids are not in the sources" in caplog.text
    with pytest.raises(DataError, match="none of its 3 chunk ids is a document of the sources"):
        list(only_chunks_of(documents[:1], questions))


def test_unknown_task_is_refused_before_any_work(tmp_path):
    from lm_eval_kinject.grid import run_grid

    config = _config(tmp_path, TINY.replace("tasks: [current_events_cloze]", "tasks: [current_event_cloze]"))
    with pytest.raises(ConfigError, match=r"unknown task 'current_event_cloze' \(did you mean 'current_events_cloze'"):
        run_grid(config, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from lm_eval_kinject.grid import run_grid

    folder = tmp_path_factory.mktemp("grid")
    config = _config(folder)
    yield config, folder / "run", run_grid(config, folder / "run", show_progress=False)
    shutil.rmtree(folder, ignore_errors=True)  # two full-model checkpoints (1.1 GB): CI's disk is shared


def test_grid_runs_every_cell_and_records_the_failing_one(tiny_run):
    config, out, run = tiny_run
    assert len(run.done) == 7 and len(run.failed) == 1 and not run.skipped
    failed = json.loads((out / "cells" / run.failed[0] / "cell.json").read_text())
    assert failed["status"] == "failed" and failed["arm"] == "base+rag" and "chunk_id" in failed["error"]
    grid = json.loads((out / "grid.json").read_text())
    assert grid["seed"] == 0 and len(grid["cells"]) == 8 and grid["libraries"]["lm-eval"]
    for key in run.done:
        result = json.loads((out / "cells" / key / "result.json").read_text())
        assert result["n"] == 6 and len(result["per_question"]["correct"]) == 6
        assert len((out / "cells" / key / "samples.jsonl").read_text().splitlines()) == 6
    assert len(list((out / "checkpoints").iterdir())) == 2  # FT-reg and FT-par1, each trained once (no lock files)
    # fine-tuned on the 42 chunks the questions ask about (train_kb), retrieving from all 388 (kb)
    from lm_eval_kinject.grid.cells import kb_hash

    chunks = {p.name.rsplit("-", 1)[0]: json.loads((p / "manifest.json").read_text())["counts"]["chunks"]
              for p in (out / "kb").iterdir()}
    assert chunks == {"current_events": 388, "asked": 42}
    for checkpoint in (out / "checkpoints").iterdir():
        assert json.loads((checkpoint / "kinject_grid_checkpoint.json").read_text())["kb"] == kb_hash(config, "asked")


def test_rerun_skips_finished_cells_and_a_killed_cell_comes_back_identical(tiny_run):
    from lm_eval_kinject.grid import run_grid

    config, out, first = tiny_run
    again = run_grid(config, out, show_progress=False, retry_failed=False)
    assert not again.done and len(again.skipped) == 8
    rag = next(k for k in first.done
               if json.loads((out / "cells" / k / "cell.json").read_text())["arm"] == "base+rag")
    before = json.loads((out / "cells" / rag / "result.json").read_text())
    shutil.rmtree(out / "cells" / rag)  # as if killed while evaluating it: only a staging folder is left
    (out / "cells" / f".{rag}.tmp-99999").mkdir()
    resumed = run_grid(config, out, show_progress=False, retry_failed=False)
    assert resumed.done == [rag]
    after = json.loads((out / "cells" / rag / "result.json").read_text())
    assert after["per_question"] == before["per_question"] and after["retrieval"] == before["retrieval"]
    assert after["retrieval"]["recall"] is not None and after["retrieval"]["k"] == 2


def test_report_tables_figures_tests_and_expectations(tiny_run, tmp_path):
    from lm_eval_kinject.report import check_expectations, expectations_of, write_report

    _, out, _ = tiny_run
    report = write_report(out, tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "### Current events (tiny)" in text and "| Base | Base + RAG | FT-reg | FT-par |" in text
    assert "R@2" in text and "Δctl" in text and "**failed** smollm2-135m base+rag" in text
    assert report.failed == 1 and report.tests
    assert {(t["a"], t["b"]) for t in report.tests} >= {("base+rag", "base"), ("ft-par", "ft-reg")}
    for name in ("figure2.png", "figure2.svg", "figure4_ce.png", "figure4_ce.svg"):
        data = (tmp_path / "report" / name).read_bytes()
        assert len(data) > 5000, name
    assert (tmp_path / "report" / "figure2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tex = (tmp_path / "report" / "table_ce.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\toprule" in tex
    csv_lines = (tmp_path / "report" / "cells.csv").read_text().splitlines()
    assert len(csv_lines) == 9 and csv_lines[0].startswith("experiment,role,task")
    for cell in report.cells:
        if cell["status"] == "done":
            assert cell["ci"][0] <= cell["acc"] <= cell["ci"][1]
    expectations = expectations_of(report)
    path = tmp_path / "expect.json"
    path.write_text(json.dumps(expectations))
    assert check_expectations(report, path) == []
    key = next(iter(expectations["acc"]))
    expectations["acc"][key] += 0.5
    path.write_text(json.dumps(expectations))
    (problem,) = check_expectations(report, path)
    assert key in problem and "expected" in problem


def test_compare_a_run_with_its_own_report_passes_the_gate(tiny_run, tmp_path):
    from click.testing import CliRunner

    from lm_eval_kinject.cli import main
    from lm_eval_kinject.report import write_report

    _, out, run = tiny_run
    write_report(out, tmp_path / "report")
    summary = tmp_path / "summary.md"
    result = CliRunner().invoke(main, ["compare", str(out), str(tmp_path / "report" / "report.json"),
                                       "--summary", str(summary), "--json", str(tmp_path / "cmp.json")])
    assert result.exit_code == 0, result.output
    assert f"**No significant change** in {len(run.done)} cells" in summary.read_text()
    cells = json.loads((tmp_path / "cmp.json").read_text())["cells"]
    assert len(cells) == len(run.done) and all(c["only_new"] == c["only_baseline"] == 0 for c in cells)


def test_the_smallest_significant_gap_is_where_mcnemar_crosses_005():
    from scipy.stats import binomtest

    from lm_eval_kinject.report.stats import mcnemar, significant_gap

    for discordant in (6, 7, 24, 25, 100):
        gap = significant_gap(discordant)
        assert binomtest((discordant + gap) // 2, discordant, 0.5).pvalue < 0.05
        assert binomtest((discordant + gap) // 2 - 1, discordant, 0.5).pvalue >= 0.05  # one question less: not
    assert significant_gap(5) is None and significant_gap(0) is None  # too few to ever reach p < 0.05
    test = mcnemar([1] * 17 + [0] * 7 + [1] * 100, [0] * 17 + [1] * 7 + [1] * 100)
    assert (test["only_a"], test["only_b"], test["significant_gap"]) == (17, 7, 12) and test["p_value"] > 0.05


def test_report_refuses_folders_without_results(tmp_path):
    from lm_eval_kinject.report import write_report

    with pytest.raises(DataError, match="not a grid run folder"):
        write_report(tmp_path, tmp_path / "report")
    (tmp_path / "grid.json").write_text(json.dumps({"cells": [{"hash": "x", "experiment": "e", "model": "m",
                                                                "arm": "base", "task": "t", "role": "main"}]}))
    with pytest.raises(DataError, match="no finished cells yet"):
        write_report(tmp_path, tmp_path / "report")


def test_cli_check_and_report_with_expectations(tiny_run, tmp_path):
    config, out, _ = tiny_run
    checked = run_cli(["kinject", "grid", str(config.path), "--out", str(out), "--check"])
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "done     ce" in checked.stdout and "failed   broken" in checked.stdout and "8 cells; config OK" in checked.stdout
    expect = tmp_path / "expect.json"
    made = run_cli(["kinject", "report", str(out), "--out", str(tmp_path / "r"), "--write-expectations", str(expect)])
    assert made.returncode == 0, made.stderr[-2000:]
    checked = run_cli(["kinject", "report", str(out), "--out", str(tmp_path / "r"), "--expect", str(expect)])
    assert checked.returncode == 0 and "key numbers match" in checked.stdout


SWEEP = textwrap.dedent(f"""\
    seed: 0
    vars: {{data: "{SHARED_DATA}"}}
    models:
      smollm2-135m: {{pretrained: smollm2-135m}}
    task_metadata: {{current_events_dir: "${{data}}/current_events_sample"}}
    knowledge_bases:
      current_events: {{sources: ["${{data}}/current_events_sample/chunks.jsonl"]}}
      asked:
        sources: ["${{data}}/current_events_sample/chunks.jsonl"]
        only_chunks_of: ${{data}}/current_events_sample/questions.jsonl
    retrieval: {{retriever: bm25, k: 1}}
    finetune: {{method: lora, max_steps: 2, block_size: 64, batch_size: 2}}
    lm_eval: {{batch_size: 8, limit: 4}}
    experiments:
      ce:
        title: Current events budgets
        tasks: [current_events_cloze]
        kb: current_events
        train_kb: asked
        paraphrases: ${{data}}/current_events_sample/paraphrases.jsonl
        arms: [base, base+rag, ft-reg]
        sweep: {{learning_rate: [1.0e-5, 3.0e-3]}}
      oracle:
        title: Oracle
        tasks: [current_events_cloze]
        kb: current_events
        arms: [base+rag]
        retrieval: {{retriever: oracle}}
    """)


def test_sweep_makes_one_cell_per_budget_chooses_on_validation_and_draws_the_figure(tmp_path):
    from lm_eval_kinject.grid import run_grid
    from lm_eval_kinject.grid.cells import expand
    from lm_eval_kinject.report import write_report

    config = _config(tmp_path, SWEEP)
    cells = expand(config)
    budgets = sorted(dict(c.budget)["learning_rate"] for c in cells if c.arm == "ft-reg")
    assert budgets == [1e-5, 3e-3] and len(cells) == 5
    assert len({c.checkpoint.hash(config) for c in cells if c.checkpoint}) == 2
    run = run_grid(config, tmp_path / "run", show_progress=False)
    assert len(run.done) == 5 and not run.failed
    report = write_report(tmp_path / "run", tmp_path / "report")
    losses = {}
    for key in run.done:
        meta = json.loads((tmp_path / "run" / "cells" / key / "cell.json").read_text())
        result = json.loads((tmp_path / "run" / "cells" / key / "result.json").read_text())
        if meta["arm"] == "ft-reg":
            assert result["training"]["tokens"] > 0 and result["training"]["learning_rate"] == meta["budget"][
                "learning_rate"]
            losses[meta["budget"]["learning_rate"]] = result["training"]["validation_loss"]
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    (choice,) = data["budget_choices"]
    assert choice["arm"] == "ft-reg" and choice["candidates"] == 2
    assert choice["budget"] == {"learning_rate": min(losses, key=losses.get)}  # chosen on validation loss
    assert len([c for c in report.cells if c["arm"] == "ft-reg"]) == 1 and len(data["other_budgets"]) == 1
    text = (tmp_path / "report" / "report.md").read_text()
    assert "lowest held-out paraphrase loss" in text and "budget_ce.png" in text
    assert (tmp_path / "report" / "budget_ce.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((tmp_path / "report" / "budget_ce.png").read_bytes()) > 10000
    # the RAG cell of another experiment on the same task (the oracle) is a line in the figure, and a report can be
    # limited to some experiments
    only = write_report(tmp_path / "run", tmp_path / "oracle", experiments=["oracle"])
    assert {c["experiment"] for c in only.cells} == {"oracle"} and not (tmp_path / "oracle" / "budget_ce.png").exists()
    with pytest.raises(DataError, match=r"no experiment\(s\) \['orcale'\] in this run; it has ce, oracle"):
        write_report(tmp_path / "run", tmp_path / "x", experiments=["orcale"])
    shutil.rmtree(tmp_path / "run" / "checkpoints", ignore_errors=True)


def test_budget_figure_lines_are_the_experiments_own_cells_and_the_oracle_on_the_same_questions():
    """The budget figure's horizontal lines: this experiment's base and RAG cells, and the gold-chunk oracle of any
    experiment restricted to the questions the FT arms were scored on; never another experiment's RAG variant (other
    questions, and the legend could not tell them apart)."""
    from lm_eval_kinject.report.budget import reference_lines
    from lm_eval_kinject.report.results import Entry

    def cell(experiment, arm, ids, correct, retriever=None):
        return Entry(experiment, "m", arm, "ce", "main", "done", f"{experiment}-{arm}-{retriever}", acc=sum(correct)
                     / len(correct), n=len(ids), retriever=retriever,
                     per_question={"doc_id": list(range(len(ids))), "question_id": ids, "correct": correct})

    half = ["q1", "q3"]
    entries = [cell("half", "base", half, [0.0, 0.0]), cell("half", "base+rag", half, [1.0, 0.0], "bm25"),
               cell("half", "ft-reg", half, [1.0, 1.0]),
               cell("every", "base+rag", ["q1", "q2", "q3", "q4"], [0.0, 1.0, 1.0, 1.0], "bm25"),  # another variant
               cell("oracle", "base+rag", ["q1", "q2", "q3", "q4"], [1.0, 0.0, 1.0, 0.0], "oracle"),
               cell("oracle_part", "base+rag", ["q1", "q2"], [1.0, 1.0], "oracle")]  # lacks q3: no line
    questions = entries[2].per_question
    assert reference_lines(entries, "half", ("ce", "m"), questions) == [
        ("base", 0.0, "base"), ("RAG (bm25)", 0.5, "rag"), ("RAG (oracle, same 2 q)", 1.0, "oracle")]
    # the figure of the experiment on every question draws the oracle whole
    assert reference_lines(entries, "every", ("ce", "m"), entries[3].per_question)[-1] == ("RAG (oracle)", 0.5,
                                                                                          "oracle")


@pytest.mark.parametrize("sweep,message", [
    ("{learning_rate: []}", r"experiments.ce.sweep.learning_rate: \[\]: expected a non-empty list of values"),
    ("[1, 2]", "experiments.ce.sweep: expected a mapping of fine-tuning settings"),
    ("{learning_rte: [1.0e-4]}", r"unknown key\(s\) \['learning_rte'\].*did you mean 'learning_rate'"),
    ("{epochs: [2, 2]}", "a value is listed twice"),
    ("{learning_rate: [-1.0]}", "learning_rate"),
])
def test_bad_sweeps_are_refused_with_their_key(tmp_path, sweep, message):
    text = SWEEP.replace("sweep: {learning_rate: [1.0e-5, 3.0e-3]}", f"sweep: {sweep}")
    with pytest.raises(ConfigError, match=message) as error:
        _config(tmp_path, text)
    assert "1 problem(s)" in str(error.value)


def test_sweep_needs_held_out_paraphrases_to_choose_on(tmp_path):
    text = SWEEP.replace("    paraphrases: ${data}/current_events_sample/paraphrases.jsonl\n", "")
    with pytest.raises(ConfigError, match="a sweep needs paraphrases: FILE"):
        _config(tmp_path, text)
    text = SWEEP.replace("arms: [base, base+rag, ft-reg]", "arms: [base, base+rag]")
    with pytest.raises(ConfigError, match="this experiment has no fine-tuned arm"):
        _config(tmp_path, text)


def test_retrieval_block_takes_the_query_and_the_reranker_and_runs_name_experiments(tmp_path):
    from lm_eval_kinject.grid import run_grid
    from lm_eval_kinject.grid.cells import expand

    text = SWEEP.replace("retrieval: {retriever: oracle}", "retrieval: {query_with_options: true, rerank: lm, k: 2}")
    config = _config(tmp_path, text)
    (cell,) = [c for c in expand(config) if c.experiment == "oracle"]
    assert dict(cell.retrieval) == {"retriever": "bm25", "k": 2, "template": "plain", "query_with_options": True,
                                    "rerank": "lm"}
    bad = SWEEP.replace("retrieval: {retriever: oracle}", "retrieval: {query_with_options: 1, rerank: lm, k: 20}")
    with pytest.raises(ConfigError, match=r"2 problem\(s\)") as error:
        _config(tmp_path, bad)
    assert "experiments.oracle.retrieval: k=20: more than rerank_depth=10" in str(error.value)
    assert "experiments.oracle.retrieval.query_with_options: 1: expected true or false" in str(error.value)
    with pytest.raises(ConfigError, match=r"--experiments 'oracel': not in .*did you mean 'oracle'"):
        run_grid(_config(tmp_path, SWEEP), tmp_path / "run", experiments=["oracel"])
    assert not (tmp_path / "run").exists()


def test_shipped_grid_configs_are_valid():
    from lm_eval_kinject.grid import load_grid_config
    from lm_eval_kinject.grid.cells import expand

    sizes = {}
    for name in ("embedded", "ci", "paper", "current_events"):
        config = load_grid_config(REPO / "configs" / f"{name}.yaml")
        sizes[name] = len(expand(config))
    # paper: 3 models x (5 subjects x 2 shots x 4 arms + current events: 8 main + 5 control) = 159
    # current_events: 7 retrieval cells + base, base+rag, 8 FT arms x 6 budgets, 4 FT checkpoints x 6 budgets + base
    # on the control task = 82; injection_cpu lists 15 of them again (one budget of the four FT arms, and base), the
    # same cells: 97; injection_cpu_swap adds 8 cells on the other half and FT-RAFT's control cell, and lists the
    # control cells of base, FT-reg and FT-par again: 109; budget_cpu adds FT-reg and FT-reg + RAG at three budgets on
    # every question, and lists the RAG experiment's base and base + RAG cells again: 117
    assert sizes == {"embedded": 19, "ci": 8, "paper": 159, "current_events": 117}
    config = load_grid_config(REPO / "configs" / "current_events.yaml")
    assert len({cell.hash(config) for cell in expand(config)}) == 97


MIXED = textwrap.dedent("""\
    seed: 0
    models:
      smollm2-135m: {pretrained: smollm2-135m}
    task_metadata: {fictional_dir: "WORLD"}
    knowledge_bases:
      world: {sources: ["WORLD/chunks.jsonl"]}
    retrieval: {retriever: bm25, k: 1}
    finetune: {max_steps: 1, block_size: 64, batch_size: 2}
    lm_eval: {batch_size: 8}
    experiments:
      all: {title: Every question, tasks: [kinject_fictional_cloze], kb: world, arms: [base, base+rag]}
      mix:
        title: Held-out half
        tasks: [kinject_fictional_cloze]
        kb: world
        arms: [base, base+rag, ft-mix]
        qa: WORLD/questions.jsonl
        qa_split: {train_fraction: 0.5, seed: 3}
    """)


def test_held_out_cells_are_read_off_the_cells_on_every_question(tmp_path):
    """The held-out half's base and RAG cells cost no model: taken from the cells on every question, they hold
    the questions, doc ids, correctness, retrieval and log-likelihoods that evaluating them holds."""
    from lm_eval_kinject.fictional import SLOTS, FictionalConfig, write_world
    from lm_eval_kinject.grid import run_grid

    world = write_world(FictionalConfig(events=4, paraphrases=0, asked=tuple(SLOTS)), tmp_path / "world")
    text = MIXED.replace("WORLD", str(world))
    out = tmp_path / "run"
    # first the held-out experiment alone: nothing to read its cells off, so lm-eval evaluates them
    alone = run_grid(_config(tmp_path, text[:text.index("  all:")] + text[text.index("  mix:"):]), out,
                     show_progress=False)
    assert len(alone.done) == 3 and not alone.derived and not alone.failed
    held_out = {key: json.loads((out / "cells" / key / "cell.json").read_text())["arm"] for key in alone.done}
    held_out = {key: arm for key, arm in held_out.items() if arm in ("base", "base+rag")}
    evaluated = {key: shutil.copytree(out / "cells" / key, tmp_path / "evaluated" / key) for key in held_out}
    for key in held_out:  # as if never run
        shutil.rmtree(out / "cells" / key)

    both = run_grid(_config(tmp_path, text), out, show_progress=False)  # every question, then the held-out half
    assert len(both.done) == 4 and sorted(both.derived) == sorted(held_out) and not both.failed
    for key, arm in held_out.items():
        meta = json.loads((out / "cells" / key / "cell.json").read_text())
        parent = json.loads((out / "cells" / meta["derived_from"] / "cell.json").read_text())
        assert (parent["experiment"], parent["arm"], parent["question_split"]) == ("all", arm, None)
        assert meta["experiment"] == "mix" and meta["question_split"]["question_split"] == "heldout"
        ours = json.loads((out / "cells" / key / "result.json").read_text())
        theirs = json.loads((evaluated[key] / "result.json").read_text())
        assert ours["n"] == theirs["n"] == 10  # 2 of the 4 events, 5 questions each
        assert ours["per_question"] == theirs["per_question"] and ours["acc"] == theirs["acc"]
        assert ours["retrieval"] == theirs["retrieval"]
        # paired with the parent by the questions' own ids: doc_id restarts at 0 on the held-out half
        from lm_eval_kinject.report.stats import align

        whole = json.loads((out / "cells" / meta["derived_from"] / "result.json").read_text())["per_question"]
        assert len(set(ours["per_question"]["question_id"])) == 10
        assert set(ours["per_question"]["question_id"]) < set(whole["question_id"])
        mine, same = align(ours["per_question"], whole)
        assert len(mine) == 10 and mine == same
        read = [json.loads(line) for line in (out / "cells" / key / "samples.jsonl").open()]
        scored = [json.loads(line) for line in (evaluated[key] / "samples.jsonl").open()]
        assert [(s["doc_id"], s["doc"], s["arguments"]) for s in read] == \
            [(s["doc_id"], s["doc"], s["arguments"]) for s in scored]
        for a, b in zip(read, scored):
            assert [r[0] for r in a["filtered_resps"]] == pytest.approx([r[0] for r in b["filtered_resps"]], abs=1e-4)


def test_cross_fitted_halves_pool_into_one_table_over_every_question(tmp_path):
    """Two experiments that train ft-mix on the two halves of one split are pooled by the report: every question
    scored once, by the model that never trained on its QA pair, and paired tests over all of them."""
    from lm_eval_kinject.fictional import SLOTS, FictionalConfig, write_world
    from lm_eval_kinject.grid import run_grid
    from lm_eval_kinject.report import write_report

    world = write_world(FictionalConfig(events=4, paraphrases=0, asked=tuple(SLOTS)), tmp_path / "world")
    swapped = MIXED[MIXED.index("  mix:"):].replace("mix:", "mix_swap:").replace("Held-out half", "Other half")
    text = (MIXED + swapped.replace("seed: 3}", "seed: 3, swap: true}")).replace("WORLD", str(world))
    out = tmp_path / "run"
    run = run_grid(_config(tmp_path, text), out, show_progress=False)
    assert not run.failed and len(run.derived) == 4  # each half's base and RAG cells, read off "all"
    cells = {(c["experiment"], c["arm"]): c["hash"] for c in json.loads((out / "grid.json").read_text())["cells"]}
    assert len({json.loads((out / "cells" / cells[(e, "ft-mix")] / "cell.json").read_text())["identity"]["checkpoint"]
                for e in ("mix", "mix_swap")}) == 2  # one checkpoint per half

    report = write_report(out, tmp_path / "report")
    pooled = {c["arm"]: c for c in report.cells if c["experiment"] == "mix+mix_swap"}
    assert sorted(pooled) == ["base", "base+rag", "ft-mix"]
    every = {c["arm"]: c for c in report.cells if c["experiment"] == "all"}
    halves = {(c["experiment"], c["arm"]): c for c in report.cells if c["experiment"] in ("mix", "mix_swap")}
    for arm in ("base", "base+rag"):  # the halves of a cell on every question pool back into it
        assert pooled[arm]["n"] == 20 and pooled[arm]["acc"] == pytest.approx(every[arm]["acc"])
        assert sorted(pooled[arm]["per_question"]["question_id"]) == sorted(every[arm]["per_question"]["question_id"])
    assert pooled["base+rag"]["recall"] == pytest.approx(every["base+rag"]["recall"])
    first, second = halves[("mix", "ft-mix")], halves[("mix_swap", "ft-mix")]
    assert first["n"] == second["n"] == 10
    assert pooled["ft-mix"]["per_question"]["correct"] == first["per_question"]["correct"] + \
        second["per_question"]["correct"]
    assert not set(first["per_question"]["question_id"]) & set(second["per_question"]["question_id"])
    test = next(t for t in report.tests if t["experiment"] == "mix+mix_swap" and (t["a"], t["b"]) == ("ft-mix", "base"))
    assert test["n"] == 20
    text = (tmp_path / "report" / "report.md").read_text()
    assert "### Cross-fitted (mix + mix_swap): every question" in text
    assert "swapped: the part the unswapped split trains on" in text
