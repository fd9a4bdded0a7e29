"""Every shipped task YAML loads, prompts match upstream lm-eval MMLU, generated files are fresh."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kinject_testing import CURRENT_EVENTS_DIR, MMLU_DIR, REPO

from lm_eval_kinject.questions import MMLU_SUBJECTS

METADATA = {"mmlu_dir": str(MMLU_DIR), "current_events_dir": str(CURRENT_EVENTS_DIR)}
ALL_TASKS = ([f"kinject_mmlu_{fmt}{s}_{n}shot" for fmt in ("", "cloze_") for s in MMLU_SUBJECTS for n in (0, 5)]
             + ["current_events", "current_events_cloze"])
GROUPS = ["kinject_mmlu", "kinject_mmlu_5shot", "kinject_mmlu_cloze", "kinject_mmlu_cloze_5shot"]


@pytest.fixture(scope="module")
def loaded():
    from lm_eval_kinject.registration import task_manager

    return task_manager(METADATA).load(GROUPS + ["current_events", "current_events_cloze"])


def test_generated_task_files_are_up_to_date():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "generate_task_configs.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_task_and_group_loads_with_local_data(loaded):
    assert set(ALL_TASKS) <= set(loaded["tasks"])
    assert set(GROUPS) <= set(loaded["groups"])
    sizes = {name: len(task.eval_docs) for name, task in loaded["tasks"].items()}
    assert sizes["kinject_mmlu_prehistory_5shot"] == 324 and sizes["current_events_cloze"] == 84


def _upstream_template() -> dict:
    import lm_eval

    path = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default" / "_default_template_yaml"
    return yaml.safe_load(path.read_text())


def test_lettered_prompt_is_upstream_mmlu(loaded):
    upstream = _upstream_template()
    task = loaded["tasks"]["kinject_mmlu_anatomy_5shot"]
    assert task.config.doc_to_text == upstream["doc_to_text"]
    assert task.config.doc_to_choice == upstream["doc_to_choice"]
    assert task.config.fewshot_config.sampler == "first_n" and task.config.num_fewshot == 5
    doc = task.eval_docs[2]
    context = task.fewshot_context(doc, num_fewshot=5)
    dev = task.dataset["dev"]
    assert context.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n"
                              + dev[0]["question"].strip() + "\nA. " + dev[0]["choices"][0])
    assert context.count("\nAnswer:") == 6
    assert context.endswith(doc["question"].strip() + "\nA. " + doc["choices"][0] + "\nB. " + doc["choices"][1]
                            + "\nC. " + doc["choices"][2] + "\nD. " + doc["choices"][3] + "\nAnswer:")


def test_cloze_scores_option_text(loaded):
    task = loaded["tasks"]["kinject_mmlu_cloze_astronomy_0shot"]
    doc = task.eval_docs[0]
    assert task.doc_to_choice(doc) == doc["choices"]
    assert task.fewshot_context(doc, num_fewshot=0) == (
        "The following are questions (with answers) about astronomy.\n\nQuestion: "
        + doc["question"].strip() + "\nAnswer:")
    assert {m["metric"] for m in task.config.metric_list} == {"acc", "acc_norm"}


def test_groups_weight_by_size():
    for group in GROUPS:
        config = yaml.safe_load((REPO / "tasks" / "kinject_mmlu" / f"_{group}.yaml").read_text())
        assert all(m["weight_by_size"] for m in config["aggregate_metric_list"])
        assert len(config["task"]) == 5


def test_every_task_folder_has_a_readme():
    for folder in (REPO / "tasks").iterdir():
        if folder.is_dir() and not folder.name.startswith("_"):
            assert (folder / "README.md").is_file(), folder
