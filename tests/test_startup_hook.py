"""The start-up hook: cheap, lazy, keeps lm-eval's built-ins, and can be turned off."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_hook_is_installed_and_imports_nothing_heavy_at_start():
    out = _python("import sys, lm_eval_kinject._startup as s; "
                  "print(s._installed, [m for m in ('lm_eval', 'torch', 'transformers') if m in sys.modules])")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "[]"]


def test_builtin_models_still_resolve_after_kinject_is_registered():
    code = ("from lm_eval.api.registry import get_model, model_registry\n"
            "print(get_model('kinject-rag').__name__)\n"  # first lookup: lm_eval's own lazy import
            "print(get_model('hf').__name__)\n"
            "print(all(n in model_registry for n in ('vllm', 'hf-auto', 'local-completions', 'dummy')))\n")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["KinjectRAGLM", "HFLM", "True"]


def test_task_manager_sees_kinject_and_builtin_tasks():
    code = ("from lm_eval.tasks import TaskManager\n"
            "tm = TaskManager()\n"
            "names = set(tm.all_tasks)\n"
            "print('kinject_mmlu' in names, 'current_events_cloze' in names, 'mmlu_anatomy' in names)\n")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True"]


def test_user_include_path_still_overrides_our_tasks(tmp_path):
    (tmp_path / "mine.yaml").write_text("task: current_events\ndataset_path: json\noutput_type: multiple_choice\n"
                                        "test_split: test\ndoc_to_text: q\ndoc_to_choice: ['a']\ndoc_to_target: 0\n")
    code = (f"from lm_eval.tasks import TaskManager\n"
            f"tm = TaskManager(include_path={str(tmp_path)!r})\n"
            f"print(tm.task_index['current_events'].yaml_path)\n")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "mine.yaml")


def test_opt_out_variable_turns_the_hook_off():
    code = ("from lm_eval.api.registry import get_model\n"
            "try:\n    get_model('kinject-rag')\nexcept ValueError:\n    print('absent')\n"
            "from lm_eval_kinject.registration import ensure_registered\n"
            "ensure_registered()\n"
            "print(get_model('kinject-rag').__name__, get_model('hf').__name__)\n")
    out = _python(code, LM_EVAL_KINJECT_NO_HOOK="1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["absent", "KinjectRAGLM", "HFLM"]


@pytest.mark.parametrize("group", ["lm_eval.models", "lm_eval.tasks"])
def test_discovery_check_recognises_upstream_entry_point_lookups(group):
    """A future lm-eval that reads the entry-point groups makes our registration step aside."""
    from lm_eval_kinject.registration import source_reads_entry_points

    assert source_reads_entry_points(f"for ep in md.entry_points(group='{group}'): ...", group)
    assert source_reads_entry_points(f'eps = entry_points(group="{group}")', group)
    assert not source_reads_entry_points("entry_points = None  # nothing else", group)


def test_registering_twice_is_a_no_op():
    out = _python("from lm_eval_kinject.registration import register_model\n"
                  "import lm_eval.models\n"  # the hook registered already
                  "print(register_model())\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"]


@pytest.mark.parametrize("model_args,metadata,expected", [
    ("k=abc", None, "kinject-rag: k='abc': expected a non-negative integer"),
    ("kb=/nope/kb", None, "no such knowledge-base folder"),
    ("", "empty", "ce: missing questions.jsonl"),
])
def test_kinject_errors_are_one_line_under_the_stock_cli(tmp_path, model_args, metadata, expected):
    """Row 1 of the reliability issue: the stock ``lm_eval`` console script, no traceback. One case per kind of
    error (model_args value, KB, data folder): each is a fresh lm_eval process; the other model_args refusals (the
    retriever name among them) are tested in-process, and benchmarks/bad_inputs.py runs 22 such cases through the
    stock CLI."""
    import json

    from kinject_testing import run_cli

    args = ["lm_eval", "--model", "kinject-rag", "--tasks", "current_events_cloze", "--limit", "1"]
    if model_args:
        args += ["--model_args", model_args]
    if metadata == "empty":  # a current-events folder without its files
        (tmp_path / "ce").mkdir()
        args += ["--metadata", json.dumps({"current_events_dir": str(tmp_path / "ce")})]
    out = run_cli(args)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("lm_eval: error: ") and expected in last, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    debug = run_cli(args, env={"KINJECT_DEBUG": "1"}) if model_args == "k=abc" else None
    if debug is not None:
        assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_grid_and_report_import_no_model_backend():
    """grid/ and report/ read arm names, configs and results: no torch, no lm-eval model class."""
    out = _python("import sys, lm_eval_kinject.report, lm_eval_kinject.grid, lm_eval_kinject.rag, "
                  "lm_eval_kinject.backends\n"
                  "print([m for m in ('torch', 'transformers', 'lm_eval.models.huggingface', 'vllm') if m in sys.modules])")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]"]


def test_lm_evals_task_index_comes_from_the_cache_unchanged(tmp_path, monkeypatch):
    """lm-eval's own task folder is parsed once and read back as the very same index; a damaged cache file is
    rebuilt; other folders are indexed as lm-eval does."""
    import lm_eval.tasks._index as index_module

    from lm_eval_kinject.presets import CACHE_ENV
    from lm_eval_kinject.registration import task_dirs

    index = index_module.TaskIndex
    assert index._kinject_cached  # installed by the start-up hook
    root = Path(index_module.__file__).parent
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    expected = index._kinject_uncached_build([root, *task_dirs()])
    first = index.build([root, *task_dirs()])  # parses, writes the cache
    (cached,) = (tmp_path / "lm-eval-task-index").iterdir()
    second = index.build([root, *task_dirs()])  # reads it
    assert len(expected) > 10000 and "current_events_cloze" in expected
    for got in (first, second):
        assert got.keys() == expected.keys()
        assert all((g.kind, g.yaml_path, g.cfg, g.tags) == (e.kind, e.yaml_path, e.cfg, e.tags)
                   for g, e in zip((got[k] for k in expected), expected.values()))
    # a damaged cache file is rebuilt (shown on our own small task folder)
    from lm_eval_kinject.task_index import _cached

    ours = task_dirs()[0]
    before = _cached(ours, index._kinject_uncached_build)
    written = [p for p in (tmp_path / "lm-eval-task-index").iterdir() if p != cached]
    assert len(written) == 1
    written[0].write_text("{not json")
    again = _cached(ours, index._kinject_uncached_build)
    assert again.keys() == before.keys() and "current_events_cloze" in again
    assert json.loads(written[0].read_text())["key"]["root"] == str(ours)
