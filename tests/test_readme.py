"""Every command the README shows parses as written: each ``kinject`` line through its click command (options,
arguments, choices), each ``lm_eval`` line through lm-eval's own argument parser, with the models and tasks it names
known. Paths a reader creates first (``kb/ce``, ``runs/...``) are the only thing not checked there. The lines that need
no checkpoint, no API key and no hours are also run as written, in a folder beside ``../shared`` as a reader's clone
is."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess

import click
import pytest
from kinject_testing import BIN, REPO, SHARED_DATA


def _commands(prefix: str) -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(prefix + " "):
                out.append([t for t in shlex.split(line) if t != "..."])
    return out


KINJECT = _commands("kinject")
LM_EVAL = _commands("lm_eval")


def test_the_readme_shows_the_everyday_commands():
    shown = {c[1] for c in KINJECT}
    assert {"kb", "finetune", "demo", "grid", "report", "compare", "export", "contrib"} <= shown
    assert len(LM_EVAL) >= 3


@pytest.mark.parametrize("argv", KINJECT, ids=[" ".join(c[1:3]) for c in KINJECT])
def test_kinject_lines_parse(argv):
    from lm_eval_kinject.cli import main

    ctx = main.make_context("kinject", [], resilient_parsing=True)
    command, args = main, argv[1:]
    while isinstance(command, click.Group):
        name, command, args = command.resolve_command(ctx, args)
        assert command is not None, f"no command {name!r} in {argv}"
    try:
        command.make_context(name, list(args), parent=ctx)
    except click.BadParameter as error:  # a path the reader makes first (exists=True) is fine; nothing else
        assert "does not exist" in str(error), f"{argv}: {error}"


@pytest.mark.parametrize("argv", LM_EVAL, ids=[c[c.index("--model") + 1] for c in LM_EVAL])
def test_lm_eval_lines_parse_with_known_models_and_tasks(argv):
    from lm_eval._cli.harness import HarnessCLI

    from lm_eval_kinject.registration import ensure_registered, task_manager

    ensure_registered()
    parsed = HarnessCLI()._parser.parse_args(["run", *argv[1:]])  # argparse exits on an unknown option
    import lm_eval.models  # noqa: F401 - fills the registry (lazily: vLLM need not be installed to be named)
    from lm_eval.api.registry import model_registry

    assert parsed.model in model_registry, f"{argv}: unknown model {parsed.model!r}"
    asked = {name for item in parsed.tasks for name in item.split(",")}
    unknown = asked - set(task_manager({}).all_tasks)
    assert not unknown, f"{argv}: unknown task(s) {sorted(unknown)}"


# The README lines run as written: the KB, its evaluation and a reranked search, a world, its export, the contrib
# folder (with its results table), and the two lm_eval lines that need no checkpoint. The others need a checkpoint
# (finetune: ~30 min), an API key (paraphrase), hours (demo, grid) or a run folder they make; their commands are
# run by their own tests.
RUN_AS_WRITTEN = {("kb", "build"), ("kb", "eval"), ("kb", "search"), ("fictional", "generate"), ("export",),
                  ("contrib",)}
# Arguments added to a line that runs as written, for CI time: contrib's results table on 10 questions per task, not
# all 90 (the table is what is checked).
CI_ARGS = {("contrib",): ["--limit", "10"]}


def test_the_readme_lines_that_need_no_checkpoint_run_as_written(tmp_path):
    work, shared = tmp_path / "clone", tmp_path / "shared"
    work.mkdir()
    shared.symlink_to(SHARED_DATA.parent, target_is_directory=True)  # ../shared/data as beside a clone

    def run(argv: list[str]) -> str:
        done = subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=work, env=dict(os.environ), capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}"
        return done.stdout + done.stderr

    ran = {}
    for argv in KINJECT:
        key = next((k for k in RUN_AS_WRITTEN if tuple(argv[1:1 + len(k)]) == k), None)
        if key:
            ran[key] = run([*argv, *CI_ARGS.get(key, [])])
    assert set(ran) == RUN_AS_WRITTEN, sorted(set(RUN_AS_WRITTEN) - set(ran))
    assert (work / "kb" / "ce" / "manifest.json").is_file()
    bm25 = next(line for line in ran[("kb", "eval")].splitlines() if line.startswith("| bm25 | - | question"))
    assert float(bm25.split("|")[4]) > 0.9, bm25  # recall@1 of the default retriever (0.963 measured)
    assert "Acapulco" in ran[("kb", "search")]
    assert (work / "data" / "world" / "questions.jsonl").is_file()
    assert (work / "datasets" / "world" / "questions" / "test.parquet").is_file()
    readme = (work / "contrib" / "kinject_fictional" / "README.md").read_text()
    assert "### Results" in readme and "| kinject_fictional_cloze | SmolLM2-135M-Instruct" in readme

    lines = [argv for argv in LM_EVAL if argv[argv.index("--model") + 1] == "kinject-rag"
             and "pretrained=" not in " ".join(argv)]
    assert len(lines) == 2, lines
    for argv in lines:
        output = tmp_path / "lm_eval" / str(lines.index(argv))
        limit = [] if "--limit" in argv else ["--limit", "60"]  # the 324-question line on its first 60: CI time
        run([*argv, *limit, "--output_path", str(output)])
        (found,) = output.rglob("results_*.json")
        results = json.loads(found.read_text())["results"]
        assert all(0 <= r["acc,none"] <= 1 for r in results.values()), results
    ce = json.loads(next((tmp_path / "lm_eval" / "1").rglob("results_*.json")).read_text())["results"]
    assert ce["current_events_cloze"]["acc,none"] > 0.7  # RAG over kb/ce on real questions (0.873 on all 324)
